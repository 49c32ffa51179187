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
