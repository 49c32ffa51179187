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

import os
import signal

__all__ = [
    "Interrupted",
    "clear",
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
