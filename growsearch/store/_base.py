"""The lineage store interface. Helpers built on the primitives are written here, once."""

from __future__ import annotations

import abc
import gc
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from growsearch.store._records import MODEL_FIELDS, EvaluationRecord, ModelRecord, StudyRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LineageStore", "gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while thousands of records are decoded: every
    few hundred new containers it would scan them all again (a third of the time of a 10k-model
    DataFrame export), and these records form no reference cycles to collect."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class LineageStore(abc.ABC):
    """Every model a study trained, its parent, the mutation that grew it, and its results.

    Contract:
    - Thread-safe: one instance may be shared by threads; several processes may use the same
      database at once (PostgreSQL for many workers; SQLite serialises writers).
    - Returned records are immutable snapshots: later writes never change them, and changing
      their dicts or lists never changes the store.
    - An unknown study name or model id is a StorageError that names it.
    - Floats written must be finite (NaN/inf raise ValueError), except the losses of an
      evaluation, which are stored as missing (a diverged epoch).
    """

    # ---- studies ------------------------------------------------------------------------
    @abc.abstractmethod
    def create_study(self, name: str, config: dict[str, Any]) -> int:
        """Create the study and return its id; if it exists, return the existing id (the first
        config is kept). Safe when several processes call it at the same moment."""

    @abc.abstractmethod
    def get_study(self, name: str) -> StudyRecord | None: ...

    @abc.abstractmethod
    def list_studies(self) -> list[str]:
        """Study names, sorted."""

    # ---- writing a model's life ----------------------------------------------------------
    @abc.abstractmethod
    def start_model(
        self,
        study: str,
        trial_number: int,
        parent_id: int | None,
        operation: str,
        args: Sequence[dict[str, Any]],
        spec_dict: dict[str, Any],
        spec_hash: str,
        num_params: int,
        flops: int,
        generation: int,
        info: dict[str, Any] | None = None,
        *,
        preservation_error: float | None = None,
    ) -> int:
        """Record a model about to train (status ``running``); return its id. A model without a
        parent is a seed and its operation must be ``"seed"``. One model per trial. A child's
        ``preservation_error`` is known before it trains, so it is kept even if it never
        finishes (pruned, failed, killed)."""

    @abc.abstractmethod
    def add_evaluation(
        self,
        model_id: int,
        epoch: int,
        val_accuracy: float | None,
        val_loss: float | None = None,
        train_loss: float | None = None,
        seconds: float | None = None,
    ) -> None:
        """Record (or replace) the metrics of ``model_id`` after ``epoch``."""

    @abc.abstractmethod
    def finish_model(
        self,
        model_id: int,
        *,
        val_accuracy: float,
        objectives: Sequence[float] | None = None,
        checkpoint: str | None = None,
        sha256: str | None = None,
        preservation_error: float | None = None,
        train_seconds: float | None = None,
        status: str = "finished",
        info: dict[str, Any] | None = None,
    ) -> None:
        """Record the result of a running model (status ``finished`` or ``pruned``); ``info``
        is merged into the model's info (e.g. the trial's phase timings)."""

    @abc.abstractmethod
    def fail_model(self, model_id: int, status: str = "failed", reason: str = "") -> bool:
        """Mark a running model ``failed``, ``pruned``, ``killed`` or ``interrupted`` with a
        reason. Returns False (and changes nothing) if the model is no longer running."""

    @abc.abstractmethod
    def mark_killed(
        self,
        study: str,
        trial_numbers: Iterable[int],
        reason: str = "its worker stopped",
        *,
        include_finished: bool = True,
    ) -> int:
        """Mark the models of these (dead) trials ``killed``: running ones, and finished ones
        too unless ``include_finished`` is False (the worker died after recording the result
        but before Optuna did, so the trial failed). Returns how many changed."""

    def mark_running_as_killed(
        self, study: str, trial_numbers: Iterable[int], reason: str = "its worker stopped"
    ) -> int:
        """Mark only the running models of these trials ``killed``."""
        return self.mark_killed(study, trial_numbers, reason, include_finished=False)

    @abc.abstractmethod
    def mark_checkpoint_lost(self, model_id: int, reason: str) -> bool:
        """Mark a finished model ``lost`` (its checkpoint is missing or corrupt), so it is never
        chosen as a parent or as the best again. Returns False if it was not finished."""

    # ---- reading --------------------------------------------------------------------------
    @abc.abstractmethod
    def get_model(self, model_id: int) -> ModelRecord | None: ...

    @abc.abstractmethod
    def find_by_trial(self, study: str, trial_number: int) -> ModelRecord | None: ...

    @abc.abstractmethod
    def models(self, study: str, status: str | None = None) -> list[ModelRecord]:
        """All models of the study (or those with ``status``), by trial number."""

    @abc.abstractmethod
    def best(self, study: str) -> ModelRecord | None:
        """The finished model with the highest accuracy; ties go to fewer parameters, then to
        the older model."""

    @abc.abstractmethod
    def ancestry(self, model_id: int) -> list[ModelRecord]:
        """The model and its ancestors, seed first, ``model_id`` last."""

    @abc.abstractmethod
    def children(self, model_id: int) -> list[ModelRecord]:
        """Models grown directly from ``model_id``, oldest first."""

    @abc.abstractmethod
    def find_duplicate(
        self, study: str, parent_id: int | None, spec_hash: str
    ) -> ModelRecord | None:
        """The oldest finished model of the study with this parent (None: a seed) and this spec
        hash, so a trial can skip training an architecture already trained from that parent."""

    @abc.abstractmethod
    def evaluations(self, model_id: int) -> list[EvaluationRecord]:
        """Per-epoch metrics, by epoch."""

    # ---- helpers on top of the primitives ------------------------------------------------
    def pareto(
        self, study: str, directions: Sequence[str] = ("maximize", "minimize")
    ) -> list[ModelRecord]:
        """Finished models whose ``objectives`` no other finished model dominates, best first on
        the first objective. Models without (finite) objectives of that length are ignored."""
        signs = []
        for d in directions:
            if d not in ("maximize", "minimize"):
                raise ValueError(f"direction must be 'maximize' or 'minimize', got {d!r}")
            signs.append(-1.0 if d == "maximize" else 1.0)
        points: list[tuple[tuple[float, ...], ModelRecord]] = []
        for rec in self.models(study, status="finished"):
            obj = rec.objectives
            if obj is None or len(obj) != len(signs):
                continue
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in obj):
                continue
            points.append((tuple(s * float(v) for s, v in zip(signs, obj, strict=True)), rec))
        # In minimisation form a dominating point sorts before the points it dominates, so one
        # pass against the front found so far is enough.
        points.sort(key=lambda p: (p[0], p[1].model_id))
        front: list[tuple[tuple[float, ...], ModelRecord]] = []
        for key, rec in points:
            if not any(_dominates(other, key) for other, _ in front):
                front.append((key, rec))
        return [rec for _, rec in front]

    def lineage_dataframe(self, study: str) -> pd.DataFrame:
        """One row per model (columns: the ModelRecord fields), by trial number."""
        import pandas as pd

        with gc_paused():
            rows = [[getattr(r, f) for f in MODEL_FIELDS] for r in self.models(study)]
            df = pd.DataFrame(rows, columns=list(MODEL_FIELDS))
        for col in ("model_id", "trial_number", "parent_id", "num_params", "flops", "generation"):
            df[col] = df[col].astype("Int64")
        for col in ("val_accuracy", "preservation_error", "train_seconds"):
            df[col] = df[col].astype("float64")  # missing values become NaN
        return df

    def missing_checkpoints(
        self, study: str, *, verify_sha256: bool = False, root: str | Path | None = None
    ) -> list[ModelRecord]:
        """Finished models whose checkpoint is not recorded, not a file, or (``verify_sha256``)
        does not hash to the recorded sha256. Relative paths are resolved against ``root``
        (default: the working folder); URIs other than file:// cannot be checked and are
        skipped."""
        return [
            rec
            for rec in self.models(study, status="finished")
            if _checkpoint_missing(rec, root, verify_sha256)
        ]

    def close(self) -> None:  # noqa: B027 - stores without connections need not override it
        """Release connections; the store must not be used afterwards."""

    def __enter__(self) -> LineageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` dominates ``b`` (both to minimise)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def _checkpoint_missing(rec: ModelRecord, root: str | Path | None, verify: bool) -> bool:
    location = rec.checkpoint
    if not location:
        return True
    if "://" in location:
        parsed = urlparse(location)
        if parsed.scheme != "file":
            return False  # remote: cannot be checked from here
        location = unquote(parsed.path)
    path = Path(location)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    if not path.is_file():
        return True
    if not verify or rec.sha256 is None:
        return False
    from growsearch.checkpoints import file_sha256  # keeps torch out of the store's imports

    return file_sha256(path) != rec.sha256
