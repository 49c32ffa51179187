"""Shared CLI plumbing: error handling (UserError -> one message, exit 2; a database that stayed
away -> exit 3), stop signals, and storage options.

Ctrl-C (SIGINT) and ``kill`` (SIGTERM, what schedulers send) stop a command the same way:
``Interrupted`` (a KeyboardInterrupt) is raised in the main thread, the running trial is failed
cleanly and ``growsearch run`` says how to resume; the exit code is 130 for SIGINT, 143 for
SIGTERM. A second signal while that happens ends the process at once: as safe as a crash, which
the next run cleans up (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from types import FrameType
from typing import Any

from growsearch import _stop
from growsearch._stop import Interrupted
from growsearch.exceptions import UserError

__all__ = [
    "Interrupted",
    "StopState",
    "add_storage_args",
    "fail",
    "guarded",
    "stop_signals",
    "version",
]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_FORCED = (
    b"\ngrowsearch: second signal: stopped at once. Finished trials are safe; the trial that was "
    b"running is cleaned up when the study resumes (run the same command again).\n"
)


def version() -> str:
    try:
        return metadata.version("growsearch")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def fail(message: str, code: int = 2) -> int:
    print(f"growsearch: error: {message}", file=sys.stderr, flush=True)
    return code


@dataclass
class StopState:
    signum: int | None = None  # the first stop signal received, if any

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 Ctrl-C, 143 SIGTERM)."""
        return 128 + (self.signum or signal.SIGINT)


@contextmanager
def stop_signals() -> Iterator[StopState]:
    """Handle SIGINT and SIGTERM as described in the module docstring while the block runs
    (main thread only; elsewhere the handlers stay as they are). After a stop, Optuna heartbeat
    threads the interrupt left running are ended on the way out."""
    state = StopState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if state.signum is not None:
            # os.write, not print: the first interrupt may have left a stream's lock held.
            os.write(2, _FORCED)
            os._exit(128 + signum)
        state.signum = signum
        # Recorded as well as raised: if the exception lands in a weakref callback or a
        # __del__, Python swallows it, and the training and worker loops raise it again.
        _stop.request(signum)
        raise Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, handler)
    try:
        with _stop.quiet_handled_interrupts():
            yield state
    finally:
        if state.signum is not None:
            stop_heartbeat_threads()  # before the handlers go: a second signal still forces
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        _stop.clear()


def stop_heartbeat_threads(timeout: float = 5.0) -> int:
    """End Optuna's heartbeat threads that an interrupt left running; returns how many there were.

    Optuna starts one (not a daemon) per trial and stops it when the trial's ``with`` block exits.
    A signal that lands after the thread started but before that block was entered skips the
    stop, and the interpreter would then wait for the thread for ever at exit. The thread keeps
    its stop event among its arguments (``HeartbeatThread._record_heartbeat``'s third one).
    """
    # Looked up, not imported: a signal may have landed while Optuna was being imported, and
    # importing the half-initialised package again fails. Not imported means no thread.
    heartbeat = sys.modules.get("optuna.storages._heartbeat")
    thread_cls = getattr(heartbeat, "HeartbeatThread", None)
    target = getattr(thread_cls, "_record_heartbeat", None)
    if target is None:
        return 0
    stopped = []
    for t in threading.enumerate():
        args: tuple[Any, ...] = getattr(t, "_args", ())
        if getattr(t, "_target", None) is target and len(args) == 3:
            args[2].set()
            stopped.append(t)
    for t in stopped:
        t.join(timeout)
    return len(stopped)


def guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    with stop_signals() as stop:
        return _guarded(func, args, stop)


def _guarded(
    func: Callable[[argparse.Namespace], int], args: argparse.Namespace, stop: StopState
) -> int:
    try:
        code = func(args)
    except UserError as e:
        return fail(str(e), getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print("\ngrowsearch: interrupted", file=sys.stderr, flush=True)
        return stop.exit_code
    except BrokenPipeError:
        # `growsearch lineage ... | head` closed the pipe: not an error. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if stop.signum is not None:
            # The signal landed inside a library that turned it into another error (Optuna
            # recording a trial's state): still a stop, not a crash.
            print(f"\ngrowsearch: interrupted ({type(e).__name__} while stopping); run the "
                  "same command again to resume", file=sys.stderr, flush=True)  # fmt: skip
            return stop.exit_code
        if isinstance(e, OSError) and e.filename is not None:
            # A path the user gave that cannot be used (a file where a folder should be, a
            # folder we may not write, a busy port): one line, no traceback.
            return fail(f"{e.strerror or e}: {e.filename}; check the path and try again")
        raise
    # `growsearch run` handles the interrupt itself (it prints how to resume) and returns
    # 130; a scheduler's SIGTERM gets its own code.
    if stop.signum is not None and code == 130:
        return stop.exit_code
    return code


def add_storage_args(p: argparse.ArgumentParser, study_required: bool = True) -> None:
    p.add_argument(
        "--storage",
        required=True,
        help="database URL of the study, e.g. sqlite:///growsearch.db or postgresql://user@host/db",
    )
    p.add_argument("--study", required=study_required, help="study name")
