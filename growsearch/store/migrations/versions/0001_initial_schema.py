"""Initial lineage schema: studies, models, edges, evaluations.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATUSES = "'running', 'finished', 'failed', 'pruned', 'killed', 'interrupted', 'lost'"


def upgrade() -> None:
    op.create_table(
        "gs_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gs_studies")),
        sa.UniqueConstraint("name", name=op.f("uq_gs_studies_name")),
    )
    op.create_table(
        "gs_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("num_params", sa.BigInteger(), nullable=False),
        sa.Column("flops", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("val_accuracy", sa.Double(), nullable=True),
        sa.Column("objectives", sa.JSON(), nullable=True),
        sa.Column("preservation_error", sa.Double(), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("train_seconds", sa.Double(), nullable=True),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name=op.f("ck_gs_models_status")),
        sa.CheckConstraint("generation >= 0", name=op.f("ck_gs_models_generation")),
        sa.CheckConstraint("num_params >= 0", name=op.f("ck_gs_models_num_params")),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["gs_studies.id"],
            name=op.f("fk_gs_models_study_id_gs_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gs_models")),
        sa.UniqueConstraint("study_id", "trial_number", name="uq_gs_models_study_trial"),
    )
    op.create_index(
        "ix_gs_models_study_status_acc", "gs_models", ["study_id", "status", "val_accuracy"]
    )
    op.create_index("ix_gs_models_study_spec_hash", "gs_models", ["study_id", "spec_hash"])
    op.create_table(
        "gs_edges",
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=200), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.CheckConstraint("parent_id < child_id", name=op.f("ck_gs_edges_parent_before_child")),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["gs_models.id"],
            name=op.f("fk_gs_edges_child_id_gs_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["gs_models.id"],
            name=op.f("fk_gs_edges_parent_id_gs_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("child_id", name=op.f("pk_gs_edges")),
    )
    op.create_index(op.f("ix_gs_edges_parent_id"), "gs_edges", ["parent_id"])
    op.create_table(
        "gs_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("val_accuracy", sa.Double(), nullable=True),
        sa.Column("val_loss", sa.Double(), nullable=True),
        sa.Column("train_loss", sa.Double(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        sa.CheckConstraint("epoch >= 0", name=op.f("ck_gs_evaluations_epoch")),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["gs_models.id"],
            name=op.f("fk_gs_evaluations_model_id_gs_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gs_evaluations")),
        sa.UniqueConstraint("model_id", "epoch", name="uq_gs_evaluations_model_epoch"),
    )


def downgrade() -> None:
    op.drop_table("gs_evaluations")
    op.drop_index(op.f("ix_gs_edges_parent_id"), table_name="gs_edges")
    op.drop_table("gs_edges")
    op.drop_index("ix_gs_models_study_spec_hash", table_name="gs_models")
    op.drop_index("ix_gs_models_study_status_acc", table_name="gs_models")
    op.drop_table("gs_models")
    op.drop_table("gs_studies")
