"""Stop signals and `growsearch run --workers N`: the workers run in their own process groups, the
parent passes its signal on once, a worker still importing torch ends quietly, and a worker whose
parent died stops by itself. In every case: no traceback, the parent's exit code says which
signal, and the study resumes to the right count (PostgreSQL: SQLite refuses several workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from growsearch.cli import main
from growsearch.store import SQLLineageStore
from tests._searchkit import check_finished_study, running_child, tiny_study

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)"),
]

N_TRIALS = 4


def _start(path: Path, log: Path) -> subprocess.Popen[bytes]:
    """`growsearch run STUDY --workers 2` as the leader of its own process group, as a shell
    starts a foreground job (so a terminal's Ctrl-C goes to that group)."""
    code = "import sys; from growsearch.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, "run", str(path), "--workers", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            # A non-interactive shell starts background jobs with SIGINT ignored; undo that.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of ``pid``, or None once it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[2]))


def _workers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        st = _stat(int(entry.name))
        if st is not None and st[0] == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _until(what: str, check: Callable[[], bool], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log.read_text()}"
        time.sleep(0.05)


def _study(folder: Path, url: str) -> Path:
    # Slow children (many small batches) so that a signal lands mid-training.
    path, _ = tiny_study(
        folder, url, n_trials=N_TRIALS, train={"epochs_per_trial": 40}, data={"batch_size": 16}
    )
    return path


def _gone(pids: list[int], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while any(_stat(p) is not None for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _resumes(url: str, path: Path) -> None:
    assert main(["run", str(path), "--quiet"]) == 0
    check_finished_study(url, "tiny", N_TRIALS)


def _interrupted_reasons(url: str) -> set[str]:
    with SQLLineageStore(url, create=False) as store:
        return {m.reason or "" for m in store.models("tiny", status="interrupted")}


def _interrupt(
    url: str, folder: Path, when: str, send: Callable[[int], None]
) -> tuple[int, str, Path]:
    """Start the run, wait until both workers lead their own process groups (and, for
    ``when="training"``, a child trains), ``send(parent pid)``; returns the parent's exit code,
    its output and the study file, after checking that no traceback was printed and that both
    workers are gone."""
    path, log = _study(folder, url), folder / "run.log"
    proc = _start(path, log)
    workers: list[int] = []

    def ready() -> bool:
        if when == "training" and running_child(url, "tiny") is None:
            return False
        workers[:] = _workers_of(proc.pid)
        # Own groups: a terminal's Ctrl-C (sent to the parent's group) reaches only the parent.
        return len(workers) == 2 and all(_stat(w) == (proc.pid, w) for w in workers)

    try:
        _until(f"two workers ({when})", ready, log)
        send(proc.pid)
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "second signal" not in text, text  # each worker got the signal once
    assert "leaked semaphore" not in text, text  # multiprocessing's resource tracker
    assert _gone(workers), text
    return code, text, path


def test_ctrl_c_mid_training_stops_every_worker_once_and_quietly(
    postgresql_url: str, tmp_path: Path
) -> None:
    ctrl_c = lambda pid: os.killpg(pid, signal.SIGINT)  # noqa: E731 - what a terminal does
    code, text, path = _interrupt(postgresql_url, tmp_path, "training", ctrl_c)
    assert code == 130 and "Resume with:" in text
    assert _interrupted_reasons(postgresql_url) == {"interrupted (Ctrl-C)"}
    _resumes(postgresql_url, path)


def test_ctrl_c_while_the_workers_import_torch_ends_them_quietly(
    postgresql_url: str, tmp_path: Path
) -> None:
    """The window where a terminal's Ctrl-C used to print one KeyboardInterrupt traceback per
    worker: the workers exist but are still importing."""
    ctrl_c = lambda pid: os.killpg(pid, signal.SIGINT)  # noqa: E731
    code, _, path = _interrupt(postgresql_url, tmp_path, "importing", ctrl_c)
    assert code == 130
    _resumes(postgresql_url, path)


def test_sigterm_to_the_parent_alone_stops_the_workers(postgresql_url: str, tmp_path: Path) -> None:
    term = lambda pid: os.kill(pid, signal.SIGTERM)  # noqa: E731 - `kill PID`, not its group
    code, _, path = _interrupt(postgresql_url, tmp_path, "training", term)
    assert code == 143
    assert _interrupted_reasons(postgresql_url) == {"interrupted (SIGTERM)"}
    _resumes(postgresql_url, path)


@pytest.mark.slow
def test_workers_whose_parent_was_killed_stop_by_themselves(
    postgresql_url: str, tmp_path: Path
) -> None:
    """Orphaned, each worker notices at its next batch and stops as on SIGTERM."""
    kill = lambda pid: os.kill(pid, signal.SIGKILL)  # noqa: E731
    code, _, path = _interrupt(postgresql_url, tmp_path, "training", kill)
    assert code == -signal.SIGKILL
    assert _interrupted_reasons(postgresql_url) == {"interrupted (SIGTERM)"}
    _resumes(postgresql_url, path)
