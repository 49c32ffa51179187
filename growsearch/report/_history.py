"""What a report shows, read once from the lineage store: the models, what each cost to train,
and the derived series (best so far against training time, accuracy per generation)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from growsearch.store import LineageStore, ModelRecord

__all__ = ["History", "ProgressPoint", "collect", "op_label"]


@dataclass(frozen=True)
class ProgressPoint:
    model: ModelRecord
    cumulative_seconds: float  # training time of every model that ended up to and with this one
    best_so_far: float | None  # best validation accuracy among finished models so far


@dataclass(frozen=True)
class History:
    study: str
    config: dict[str, Any]
    models: list[ModelRecord]  # every model, by trial number
    seconds: dict[int, float]  # training seconds per model id (0 when nothing was recorded)

    @property
    def finished(self) -> list[ModelRecord]:
        return [m for m in self.models if m.status == "finished" and m.val_accuracy is not None]

    @property
    def best(self) -> ModelRecord | None:
        # The store's rule: highest accuracy, then fewer parameters, then the older model.
        done = self.finished
        if not done:
            return None
        return min(done, key=lambda m: (-float(m.val_accuracy or 0.0), m.num_params, m.model_id))

    def ancestry(self, model_id: int) -> list[ModelRecord]:
        """The model and its ancestors, seed first (models missing from the study end it)."""
        by_id = {m.model_id: m for m in self.models}
        chain: list[ModelRecord] = []
        current = by_id.get(model_id)
        while current is not None:
            chain.append(current)
            current = by_id.get(current.parent_id) if current.parent_id is not None else None
        return chain[::-1]

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for m in self.models:
            counts[m.status] += 1
        return dict(counts)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def wall_clock(self) -> tuple[datetime, datetime] | None:
        """First model created, last model ended (None without models)."""
        if not self.models:
            return None
        start = min(m.created_at for m in self.models)
        ends = [m.finished_at for m in self.models if m.finished_at is not None]
        return start, max(ends, default=start)

    def progress(self) -> list[ProgressPoint]:
        """Models in the order they ended, with cumulative training time and the best accuracy
        so far. Running models have not ended and are left out; pruned and failed ones add
        their time (it was spent) but no accuracy."""
        ended = [m for m in self.models if m.finished_at is not None]
        ended.sort(key=lambda m: (m.finished_at, m.model_id))
        points, total, best = [], 0.0, None
        for m in ended:
            total += self.seconds.get(m.model_id, 0.0)
            if m.status == "finished" and m.val_accuracy is not None:
                best = m.val_accuracy if best is None else max(best, m.val_accuracy)
            points.append(ProgressPoint(m, total, best))
        return points

    def by_generation(self) -> dict[int, list[float]]:
        """Validation accuracies of the finished models, per generation (sorted keys)."""
        out: dict[int, list[float]] = defaultdict(list)
        for m in self.finished:
            out[m.generation].append(float(m.val_accuracy))  # type: ignore[arg-type]
        return dict(sorted(out.items()))


def _seconds(store: LineageStore, model: ModelRecord) -> float:
    if model.train_seconds is not None:
        return float(model.train_seconds)
    # Pruned or failed models record no total; their epochs still record what they took.
    return float(sum(e.seconds or 0.0 for e in store.evaluations(model.model_id)))


def collect(store: LineageStore, study: str) -> History:
    """Everything a report needs, read from ``store`` (raises StorageError for an unknown study)."""
    record = store.get_study(study)
    models = store.models(study)
    config = dict(record.config) if record is not None else {}
    seconds = {m.model_id: _seconds(store, m) for m in models}
    return History(study, config, models, seconds)


def op_label(model: ModelRecord, limit: int = 40) -> str:
    """The mutation that grew ``model`` in a few words, e.g. ``widen dense3 width=64``."""
    if model.parent_id is None:
        return "seed"
    parts = []
    for op in model.params or []:
        args = " ".join(f"{k}={v}" for k, v in (op.get("args") or {}).items())
        parts.append(" ".join(str(p) for p in (op.get("name"), op.get("target"), args) if p))
    text = " + ".join(parts) or model.operation
    return text if len(text) <= limit else text[: limit - 1] + "…"


def accuracy_range(values: Sequence[float]) -> tuple[float, float]:
    """A colour/axis range that shows differences even when every value is the same."""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-3:
        lo, hi = lo - 0.005, hi + 0.005
    return lo, hi
