"""Stop requests that survive a swallowed exception.

The CLI's signal handler raises ``Interrupted`` wherever the main thread happens to be. When that
is inside a weakref callback or a ``__del__`` method, Python prints "Exception ignored in ..." and
carries on as if nothing happened, so a Ctrl-C would be lost and the run would finish. The
handler therefore also records the request here, and the training loop and the worker loop poll
it at points where raising is safe.
"""

from __future__ import annotations

import signal

__all__ = ["Interrupted", "clear", "raise_if_requested", "request", "requested"]

_requested: int | None = None


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


def raise_if_requested() -> None:
    """Raise ``Interrupted`` if a stop was requested (a no-op outside the CLI)."""
    if _requested is not None:
        raise Interrupted(_requested)
