"""Stop requests that survive a swallowed exception.

The CLI's signal handler raises ``Interrupted`` wherever the main thread happens to be. When that
is inside a weakref callback or a ``__del__`` method, Python prints "Exception ignored in ..." and
carries on as if nothing happened, so a Ctrl-C would be lost and the run would finish. The
handler therefore also records the request here, and the training loop and the worker loop poll
it at points where raising is safe.

A worker process of ``growsearch run --workers N`` also stops when the process that started it
is gone (``watch_parent``): killed with SIGKILL, its workers would otherwise run on unattended.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "Interrupted",
    "clear",
    "quiet_handled_interrupts",
    "raise_if_requested",
    "request",
    "requested",
    "watch_parent",
]

_requested: int | None = None
_parent: int | None = None  # in a spawned worker: the pid of the process that started it


class Interrupted(KeyboardInterrupt):
    """KeyboardInterrupt that remembers which signal caused it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def request(signum: int) -> None:
    global _requested
    _requested = signum


def clear() -> None:
    global _requested
    _requested = None


def requested() -> int | None:
    """The signal of a pending stop request, or None."""
    return _requested


def watch_parent() -> None:
    """From now on, the parent's death is a stop request (as SIGTERM)."""
    global _parent
    _parent = os.getppid()


def raise_if_requested() -> None:
    """Raise ``Interrupted`` if a stop was requested (a no-op outside the CLI)."""
    if _requested is None and _parent is not None and os.getppid() != _parent:
        request(signal.SIGTERM)  # orphaned: the parent died without passing a signal on
    if _requested is not None:
        raise Interrupted(_requested)


class _NoInterrupts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, KeyboardInterrupt)


@contextmanager
def quiet_handled_interrupts() -> Iterator[None]:
    """No traceback for a stop that is being handled. Two places print one: Python's "Exception
    ignored in ..." report of an interrupt swallowed in a weakref callback or ``__del__`` (the
    request was recorded and the polls raise it again), and SQLAlchemy's pool, which logs
    "Exception during reset or similar" with the traceback before re-raising the interrupt.
    Anything else is reported as before."""
    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (_requested is not None and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            previous_hook(unraisable)

    sys.unraisablehook = hook
    pool_log = logging.getLogger("sqlalchemy.pool")
    handler = None
    if not logging.getLogger().handlers and not pool_log.handlers:
        # Unconfigured logging (the command line): what logging's last resort would print,
        # less the interrupts. A configured application keeps its own handlers.
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.addFilter(_NoInterrupts())
        pool_log.addHandler(handler)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        if handler is not None:
            pool_log.removeHandler(handler)
