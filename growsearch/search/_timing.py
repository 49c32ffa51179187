"""Per-phase wall-clock timings of one trial, so the overhead of everything that is not training
can be measured (the ``timings`` user attribute and the lineage row's ``info``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PHASES", "PhaseTimer"]

# The phases a trial goes through, in order (``propose`` is the sampler's work). ``db`` gathers
# every database write of the trial (lineage rows, Optuna attributes, the note), ``dashboard``
# the checkpoint artifact and the occasional lineage figure.
PHASES = (
    "select_parent",
    "propose",
    "load_parent",
    "transform",
    "preservation",
    "training",
    "checkpoint_save",
    "db",
    "dashboard",
)


class PhaseTimer:
    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent inside the block to ``name`` (phases may be entered many times)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def move(self, source: str, dest: str, seconds: float) -> None:
        """Count ``seconds`` of ``source`` as ``dest`` (database writes made while training)."""
        if seconds > 0:
            self.seconds[source] = self.seconds.get(source, 0.0) - seconds
            self.seconds[dest] = self.seconds.get(dest, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        """Plain JSON: each phase met, ``other`` (the rest), ``total`` and ``overhead`` (the share
        of the total that is not training), in seconds rounded to 0.1 ms."""
        total = time.perf_counter() - self._t0
        out = {name: round(self.seconds[name], 4) for name in PHASES if name in self.seconds}
        out["other"] = round(max(0.0, total - sum(self.seconds.values())), 4)
        out["total"] = round(total, 4)
        training = self.seconds.get("training", 0.0)
        out["overhead"] = round((total - training) / total, 4) if total > 0 else 0.0
        return out
