"""The lineage store: every model of a study, its parent, mutation, results and checkpoint.

The tables (``gs_*``) live in the same database as Optuna's, with their own Alembic version
table (``growsearch_alembic_version``).
"""

from growsearch.store._base import LineageStore
from growsearch.store._migrate import VERSION_TABLE, current_revision, head_revision, upgrade
from growsearch.store._models import STATUSES
from growsearch.store._records import EvaluationRecord, ModelRecord, StudyRecord
from growsearch.store._sql import SQLLineageStore

__all__ = [
    "STATUSES",
    "VERSION_TABLE",
    "EvaluationRecord",
    "LineageStore",
    "ModelRecord",
    "SQLLineageStore",
    "StudyRecord",
    "current_revision",
    "head_revision",
    "upgrade",
]
