"""Stop signals: ``kill`` (SIGTERM, what a scheduler sends) stops a run like Ctrl-C, with its own
exit code (143) and the command that resumes; a second Ctrl-C while the first one is cleaning up
stops the process at once, and the study still resumes to the right count with a consistent
lineage. (Ctrl-C itself: tests/test_interrupt_resume.py.)"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from growsearch.cli import _common, main
from growsearch.store import SQLLineageStore
from tests._searchkit import check_finished_study, tiny_study

# Training announces itself, and after the seed it is slowed down to a minute or so a trial, so
# a signal sent after the second announcement lands inside training; with GS_SLOW_CLEANUP,
# failing a lineage row announces itself and takes 30 s, so a second signal lands inside the
# first one's clean-up.
HOOK = r"""
import os, sys, time
import torch
torch.set_num_threads(1)
from growsearch.data import DeviceData
batches = DeviceData.train_batches
epochs = []
def slow_batches(self, *a, **k):
    epochs.append(1)
    print("TRAINING", flush=True, file=sys.stderr)
    for b in batches(self, *a, **k):
        if len(epochs) > 1:
            time.sleep(0.3)
        yield b
DeviceData.train_batches = slow_batches
if os.environ.get("GS_SLOW_CLEANUP"):
    from growsearch.store import SQLLineageStore
    fail = SQLLineageStore.fail_model
    def slow_fail(self, *a, **k):
        print("CLEANUP", flush=True, file=sys.stderr)
        time.sleep(30)
        return fail(self, *a, **k)
    SQLLineageStore.fail_model = slow_fail
if os.environ.get("GS_SIGNAL_AT_HEARTBEAT_START"):
    # Ctrl-C at the worst moment: Optuna's heartbeat thread has started but the block that
    # would stop it was not entered yet.
    import signal
    from optuna.storages._heartbeat import HeartbeatThread
    start = HeartbeatThread.start
    started = []
    def start_then_signal(self):
        start(self)
        started.append(1)
        print("HEARTBEAT", flush=True, file=sys.stderr)
        if len(started) == int(os.environ["GS_SIGNAL_AT_HEARTBEAT_START"]):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here, in the main thread
    HeartbeatThread.start = start_then_signal
from growsearch.cli import main
sys.exit(main(sys.argv[1:]))
"""


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test() -> Iterator[None]:
    yield
    while _STARTED:
        _STARTED.pop().kill()


class _Run:
    """A hooked ``growsearch run`` whose stderr lines arrive on a queue."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOOK, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        _STARTED.append(self.proc)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.seen) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in time: {''.join(self.seen)[-2000:]}"
            try:
                self.seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                continue

    def finish(self, timeout: float) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # the reader thread drains the pipe
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "".join(self.seen)


def _study(tmp_path: Path) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    path, _ = tiny_study(tmp_path, url, n_trials=3, train={"epochs_per_trial": 8, "seed_epochs": 1})
    return path, url


def _resume(path: Path) -> None:
    assert main(["run", str(path), "--quiet"]) == 0


def test_sigterm_stops_like_ctrl_c_with_exit_code_143(tmp_path: Path) -> None:
    path, url = _study(tmp_path)
    run = _Run(["run", str(path)])
    run.wait_for("TRAINING", count=2)  # the seed's (one epoch), then its first child's
    run.proc.send_signal(signal.SIGTERM)
    code, err = run.finish(timeout=60)
    assert code == 143, err
    assert "Resume with:" in err and f"growsearch run {path}" in err
    assert "Traceback" not in err
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in stopped] == ["interrupted (SIGTERM)"]
    with SQLLineageStore(url, create=False) as store:
        row = store.find_by_trial("tiny", stopped[0].number)
    assert row is not None and row.status == "interrupted" and row.reason == "interrupted (SIGTERM)"
    _resume(path)
    check_finished_study(url, "tiny", 3)


def test_a_second_ctrl_c_during_the_clean_up_stops_at_once(tmp_path: Path) -> None:
    path, url = _study(tmp_path)
    run = _Run(["run", str(path)], env={"GS_SLOW_CLEANUP": "1"})
    run.wait_for("TRAINING", count=2)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for("CLEANUP")  # the first Ctrl-C is being handled: the row is being failed
    started = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish(timeout=20)
    assert time.monotonic() - started < 10  # not the 30 s the clean-up would take
    assert code == 130, err
    assert "second signal: stopped at once" in err and "run the same command again" in err
    # Like a crash: the trial stays RUNNING until its heartbeat expires (grace period 3 s); the
    # next run cleans it up and the study finishes with a consistent lineage.
    time.sleep(3)
    _resume(path)
    found = check_finished_study(url, "tiny", 3)
    assert not [m for m in found["models"] if m.status == "running"]


def test_ctrl_c_just_after_a_heartbeat_thread_started_still_exits(tmp_path: Path) -> None:
    # The heartbeat thread (not a daemon) was started but never told to stop; the interpreter
    # would wait for it for ever at exit unless growsearch stops it.
    path, url = _study(tmp_path)
    run = _Run(["run", str(path)], env={"GS_SIGNAL_AT_HEARTBEAT_START": "2"})
    code, err = run.finish(timeout=90)
    assert code == 130, err
    assert err.count("HEARTBEAT") == 2 and "Resume with:" in err
    _resume(path)
    check_finished_study(url, "tiny", 3)


def test_stop_heartbeat_threads_ends_a_thread_nobody_joined() -> None:
    from optuna.storages._heartbeat import HeartbeatThread

    class Beat:
        beats = 0

        def get_heartbeat_interval(self) -> int:
            return 3600

        def record_heartbeat(self, trial_id: int) -> None:
            self.beats += 1

    beat = Beat()
    thread = HeartbeatThread(7, beat)  # type: ignore[arg-type]
    thread.start()
    assert thread._thread is not None and thread._thread.is_alive()
    assert _common.stop_heartbeat_threads(timeout=5) == 1
    assert not thread._thread.is_alive() and beat.beats == 1
    assert _common.stop_heartbeat_threads() == 0


def test_guarded_maps_sigterm_to_143_and_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)

    def command(args: argparse.Namespace) -> int:
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread
        return 0  # pragma: no cover

    assert _common.guarded(command, argparse.Namespace()) == 143
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_command_that_handles_the_interrupt_itself_gets_the_signal_code(
    signum: int, code: int
) -> None:
    def command(args: argparse.Namespace) -> int:
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)
        except KeyboardInterrupt as e:
            assert isinstance(e, _common.Interrupted) and e.signum == signum
            return 130  # what `growsearch run` returns after printing how to resume
        return 0  # pragma: no cover

    assert _common.guarded(command, argparse.Namespace()) == code


class _SignalInDel:
    """An object whose ``__del__`` receives the signal: Python runs the handler there and, as for
    any exception in ``__del__`` or a weakref callback, prints "Exception ignored" and goes on."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        for _ in range(100_000):  # the handler runs between these bytecodes
            pass


def _swallow(signum: int) -> None:
    obj = _SignalInDel(signum)
    del obj


SWALLOWED = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@SWALLOWED
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_python_swallowed_still_stops_training(signum: int, code: int) -> None:
    from growsearch import _stop
    from growsearch.builder import build_model
    from growsearch.data import DataConfig, DeviceData, load_dataset
    from growsearch.spec import Spec
    from growsearch.training import TrainConfig, train

    spec = Spec.from_dict(
        {"input_shape": [1, 8, 8], "layers": [{"type": "flatten"}, {"type": "dense", "out": 10}]}
    )
    model = build_model(spec, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = DeviceData(load_dataset(DataConfig(), seed=0), torch.device("cpu"), 64)
    seen: list[int | None] = []

    def command(args: argparse.Namespace) -> int:
        _swallow(signum)  # the Interrupted raised by the handler is lost here
        seen.append(_stop.requested())
        train(model, data, TrainConfig(), epochs=50)  # without the poll: trains to the end
        return 0  # pragma: no cover

    assert _common.guarded(command, argparse.Namespace()) == code
    assert seen == [signum]
    # Stopped before the first optimiser step, and the request does not outlive the command.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert _stop.requested() is None


@SWALLOWED
def test_a_swallowed_signal_stops_the_worker_between_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, end to end: a run whose Ctrl-C was swallowed between two trials stops with 130
    and then resumes to the right count."""
    import growsearch.search._worker as worker

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path, _ = tiny_study(tmp_path, url, n_trials=3)
    real = worker.count_states
    calls = [0]

    def count_then_swallow(*a: object, **k: object) -> object:
        calls[0] += 1
        if calls[0] == 2:  # the seed has finished
            _swallow(signal.SIGINT)
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(worker, "count_states", count_then_swallow)
    assert main(["run", str(path), "--quiet"]) == 130
    with SQLLineageStore(url) as store:
        assert len(store.models("tiny", status="finished")) == 1  # the seed only
    monkeypatch.setattr(worker, "count_states", real)
    assert main(["run", str(path), "--quiet"]) == 0
    check_finished_study(url, "tiny", 3)


def test_the_command_line_imports_nothing_heavy_before_its_signal_handling() -> None:
    """The console script imports ``growsearch.cli``; torch and optuna load inside ``main``,
    where a Ctrl-C during their seconds of import is a clean interrupt, not a traceback."""
    code = (
        "import sys; from growsearch.cli import main; import growsearch; "
        "print(sorted(m for m in ('torch', 'optuna', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ctrl_c_while_the_commands_import_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import growsearch.cli

    def interrupted_import() -> tuple:
        raise KeyboardInterrupt

    monkeypatch.setattr(growsearch.cli, "_commands", interrupted_import)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "studies/digits.yaml"]) == 130
    assert (
        capsys.readouterr().err == "\ngrowsearch: interrupted while starting; nothing was written\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_stopping_heartbeats_after_an_interrupted_optuna_import_imports_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal that lands while Optuna is being imported leaves its modules half-initialised;
    importing them again in the clean-up raised ImportError (exit 1 and a traceback instead of
    130). A half-initialised or absent heartbeat module means no heartbeat thread exists."""
    import types

    half = types.ModuleType("optuna.storages._heartbeat")  # what an interrupted import leaves
    monkeypatch.setitem(sys.modules, "optuna.storages._heartbeat", half)
    assert _common.stop_heartbeat_threads() == 0
    monkeypatch.delitem(sys.modules, "optuna.storages._heartbeat")
    assert _common.stop_heartbeat_threads() == 0
    assert "optuna.storages._heartbeat" not in sys.modules


QUIET = r"""
import logging, signal, sys
from growsearch import _stop

class Dies:
    def __init__(self, exc): self.exc = exc
    def __del__(self): raise self.exc

pool = logging.getLogger("sqlalchemy.pool.impl.QueuePool")  # where SQLAlchemy's pool logs
def pool_error(exc):
    try:
        raise exc
    except BaseException:
        pool.error("Exception during reset or similar", exc_info=True)

with _stop.quiet_handled_interrupts():
    _stop.request(signal.SIGINT)
    Dies(_stop.Interrupted(signal.SIGINT))
    pool_error(_stop.Interrupted(signal.SIGINT))
    print("MARK", file=sys.stderr, flush=True)
    Dies(ValueError("a real bug in a __del__"))
    pool_error(OSError("a real pool problem"))
"""


def test_an_interrupt_being_handled_prints_no_traceback_anything_else_still_does() -> None:
    """Seen in CI: a stop signal inside a weakref callback ("Exception ignored in ...") and
    inside SQLAlchemy's connection reset ("Exception during reset or similar") printed
    tracebacks although the stop itself was handled."""
    out = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    before, after = out.stderr.split("MARK\n")
    assert before == ""
    assert "Exception ignored in" in after and "ValueError: a real bug in a __del__" in after
    assert "Exception during reset or similar" in after and "OSError: a real pool problem" in after
