"""The lineage tables. They share a database with Optuna's, hence the ``gs_`` prefix.

Any change here needs a new migration in ``migrations/versions`` (the test suite compares the
two and fails when they drift apart).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["STATUSES", "Base", "EdgeModel", "EvaluationModel", "ModelModel", "StudyModel"]

# interrupted: stopped by the user (Ctrl-C); killed: its worker died (heartbeat);
# lost: trained, but its checkpoint later proved missing or corrupt (never a parent again).
STATUSES = ("running", "finished", "failed", "pruned", "killed", "interrupted", "lost")
_STATUS_LIST = ", ".join(f"'{s}'" for s in STATUSES)

# Deterministic constraint names, so later migrations (SQLite batch mode) can address them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        float: Double,
    }


class StudyModel(Base):
    __tablename__ = "gs_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    # The validated study.yaml as it was when the study was created.
    config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelModel(Base):
    """One network: the seed or a grown child, whatever became of its trial."""

    __tablename__ = "gs_models"
    __table_args__ = (
        UniqueConstraint("study_id", "trial_number", name="uq_gs_models_study_trial"),
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status"),
        CheckConstraint("generation >= 0", name="generation"),
        CheckConstraint("num_params >= 0", name="num_params"),
        # best(): finished models of a study by accuracy.
        Index("ix_gs_models_study_status_acc", "study_id", "status", "val_accuracy"),
        Index("ix_gs_models_study_spec_hash", "study_id", "spec_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("gs_studies.id", ondelete="CASCADE"))
    trial_number: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # one of STATUSES
    reason: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))
    # 64-bit: FLOPs of a real network pass 2**31.
    num_params: Mapped[int] = mapped_column(BigInteger)
    flops: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int]  # 0 for the seed, parent's + 1 otherwise
    checkpoint: Mapped[str | None] = mapped_column(Text)  # path or URI
    sha256: Mapped[str | None] = mapped_column(String(64))
    val_accuracy: Mapped[float | None]
    objectives: Mapped[list[Any] | None]  # multi-objective values, in the study's order
    preservation_error: Mapped[float | None]
    info: Mapped[dict[str, Any]]  # operation details (noise size, retries, ...)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    train_seconds: Mapped[float | None]


class EdgeModel(Base):
    """Parent -> child, with the operation(s) that grew the child. The seed has no edge."""

    __tablename__ = "gs_edges"
    __table_args__ = (
        # A parent always exists before its child, so ids increase along every path: no cycles.
        CheckConstraint("parent_id < child_id", name="parent_before_child"),
    )

    child_id: Mapped[int] = mapped_column(
        ForeignKey("gs_models.id", ondelete="CASCADE"), primary_key=True
    )
    parent_id: Mapped[int] = mapped_column(
        ForeignKey("gs_models.id", ondelete="CASCADE"), index=True
    )
    operation: Mapped[str] = mapped_column(String(200))  # e.g. "widen" or "widen+deepen"
    args: Mapped[list[Any]]  # one dict per operation


class EvaluationModel(Base):
    """Validation metrics of one model after one epoch."""

    __tablename__ = "gs_evaluations"
    __table_args__ = (
        UniqueConstraint("model_id", "epoch", name="uq_gs_evaluations_model_epoch"),
        CheckConstraint("epoch >= 0", name="epoch"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("gs_models.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    val_accuracy: Mapped[float | None]
    val_loss: Mapped[float | None]
    train_loss: Mapped[float | None]
    seconds: Mapped[float | None]
