"""Entry point of the worker processes that ``growsearch run --workers N`` spawns.

Each worker runs in its own process group, so a terminal's Ctrl-C reaches only the parent, which
passes the signal on to every worker exactly once (two signals would make a worker stop at once
instead of cleaning up). Spawn imports the entry point's module before calling it, so this module
stays light: the signal handling is installed first, then torch and the rest are imported inside
it, and an interrupt anywhere ends the worker quietly with 130 (or 143); the parent prints the
message and the command that resumes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["worker_main"]


def worker_main(
    cfg_dict: dict[str, Any], source: str | None, index: int, workers: int, ready: Any
) -> None:
    """``ready`` (the sending end of a pipe) gets a message once the signal handlers are in
    place: until then the parent stops this worker with SIGTERM, whose default action ends it
    silently."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    from growsearch import _stop
    from growsearch.cli._common import stop_signals

    code = 0
    with stop_signals() as stop:
        ready.send(True)
        ready.close()
        _stop.watch_parent()
        try:
            from growsearch.search._multi import child

            child(cfg_dict, source, index, workers)
        except KeyboardInterrupt:
            code = stop.exit_code if stop.signum is not None else 143  # 143: parent gone
        except Exception:
            if stop.signum is None:
                raise  # a real failure: multiprocessing prints it, the parent reports the code
            code = stop.exit_code  # a library turned the interrupt into another error
    sys.exit(code)
