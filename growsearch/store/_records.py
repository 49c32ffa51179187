"""What the store hands out: frozen snapshots, detached from any database session."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["EvaluationRecord", "ModelRecord", "StudyRecord", "json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` with datetimes as ISO strings, NaN/inf as None and tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class StudyRecord:
    study_id: int
    name: str
    config: dict[str, Any]  # the validated study.yaml at creation
    created_at: datetime

    def to_json_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))


@dataclass(frozen=True)
class ModelRecord:
    """One model of a lineage. Dicts and lists are fresh copies: mutating them changes nothing."""

    model_id: int
    study: str
    trial_number: int
    parent_id: int | None  # None for the seed
    operation: str  # "seed" for the seed
    params: list[dict[str, Any]]  # the operation arguments, one dict per operation
    val_accuracy: float | None
    preservation_error: float | None  # None for the seed
    checkpoint: str | None
    sha256: str | None
    spec: dict[str, Any]
    spec_hash: str
    num_params: int
    flops: int
    generation: int
    status: str  # running | finished | failed | pruned | killed
    reason: str | None
    objectives: list[float] | None
    info: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    train_seconds: float | None

    @property
    def is_seed(self) -> bool:
        return self.parent_id is None

    def to_json_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelRecord))


@dataclass(frozen=True)
class EvaluationRecord:
    model_id: int
    epoch: int
    val_accuracy: float | None
    val_loss: float | None
    train_loss: float | None
    seconds: float | None

    def to_json_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))
