"""The lineage store on SQLAlchemy (SQLite, PostgreSQL, MySQL)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from growsearch.exceptions import StorageError
from growsearch.storage_url import check_storage_url, make_engine, redact
from growsearch.store._base import LineageStore, gc_paused
from growsearch.store._migrate import ensure_schema
from growsearch.store._models import (
    STATUSES,
    EdgeModel,
    EvaluationModel,
    ModelModel,
    StudyModel,
)
from growsearch.store._records import EvaluationRecord, ModelRecord, StudyRecord
from growsearch.store._session import session_scope

__all__ = ["SQLLineageStore"]

M, E, S = ModelModel, EdgeModel, StudyModel

# Column for each ModelRecord field, in field order.
_RECORD_COLUMNS: tuple[Any, ...] = (
    M.id, S.name, M.trial_number, E.parent_id, E.operation, E.args, M.val_accuracy,
    M.preservation_error, M.checkpoint, M.sha256, M.spec, M.spec_hash, M.num_params, M.flops,
    M.generation, M.status, M.reason, M.objectives, M.info, M.created_at, M.finished_at,
    M.train_seconds,
)  # fmt: skip
_LISTED_STUDIES = 20
# Many-row reads (``models``) fetch the JSON columns as text and decode each column with one
# json.loads over all its rows: per-value decoding through the JSON type was two thirds of the
# time of a 10k-model DataFrame export.
_JSON_FIELDS = tuple(i for i, c in enumerate(_RECORD_COLUMNS) if isinstance(c.type, sa.JSON))
_BULK_COLUMNS = tuple(
    sa.cast(c, sa.Text) if i in _JSON_FIELDS else c for i, c in enumerate(_RECORD_COLUMNS)
)


def _records_query(columns: Sequence[Any] = _RECORD_COLUMNS) -> sa.Select[Any]:
    return sa.select(*columns).join(S, S.id == M.study_id).outerjoin(E, E.child_id == M.id)


def _decode_json_columns(rows: Sequence[Any]) -> list[list[Any]]:
    """Rows of ``_BULK_COLUMNS`` with their JSON text decoded (SQL NULL and JSON null: None)."""
    out = [list(r) for r in rows]
    for i in _JSON_FIELDS:
        texts = ["null" if r[i] is None else r[i] for r in out]
        for r, value in zip(out, json.loads("[" + ",".join(texts) + "]"), strict=True):
            r[i] = value
    return out


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _to_record(row: Any) -> ModelRecord:
    (mid, study, trial, parent, op, args, acc, perr, ckpt, sha, spec, shash, nparams, flops, gen,
     status, reason, objectives, info, created, finished, train_s) = row  # fmt: skip
    return ModelRecord(
        model_id=mid, study=study, trial_number=trial, parent_id=parent,
        operation="seed" if parent is None else op, params=[] if args is None else args,
        val_accuracy=acc, preservation_error=perr, checkpoint=ckpt, sha256=sha, spec=spec,
        spec_hash=shash, num_params=nparams, flops=flops, generation=gen, status=status,
        reason=reason, objectives=objectives, info=info, created_at=_utc(created),
        finished_at=None if finished is None else _utc(finished), train_seconds=train_s,
    )  # fmt: skip


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _finite(value: Any, field: str, *, optional: bool = True) -> float | None:
    if value is None:
        if optional:
            return None
        raise ValueError(f"{field} is required")
    number = float(value)  # numpy and 0-d torch scalars too
    if not math.isfinite(number):
        raise ValueError(f"{field} must be a finite number, got {number}")
    return number


def _or_none(value: Any) -> float | None:
    """Losses of a diverged epoch are NaN or inf: stored as missing."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _plain(value: Any, field: str) -> Any:
    """``value`` as plain JSON data (numpy scalars unwrapped); ValueError if it cannot be."""
    if isinstance(value, dict):
        return {str(k): _plain(v, field) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, field) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field} holds {value}; NaN and infinity cannot be stored")
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return _plain(value.item(), field)
    raise ValueError(f"{field} holds {value!r} ({type(value).__name__}), which is not JSON data")


def _check_status(status: str | None, allowed: Sequence[str]) -> None:
    if status is not None and status not in allowed:
        raise ValueError(f"status must be one of {', '.join(allowed)}; got {status!r}")


class SQLLineageStore(LineageStore):
    """The lineage store in the database at ``url`` (usually the Optuna storage URL).

    The tables are created on first use unless ``create`` is False; a database whose lineage
    schema differs from this code raises StorageError with the fix (see ``growsearch db
    upgrade``). Nothing is written before the URL has been checked.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        check_storage_url(url, must_exist=not create)
        self._shown = redact(url)  # the only form of the URL that is ever shown
        self._engine = make_engine(url)
        try:
            ensure_schema(self._engine, create=create)
        except BaseException:
            self._engine.dispose()
            raise
        self._reader = sessionmaker(self._engine)
        # SQLite: a writer takes the write lock when it begins, so it queues on the busy
        # timeout instead of failing when its read lock cannot be upgraded.
        self._writer = sessionmaker(self._engine.execution_options(sqlite_begin="IMMEDIATE"))

    def __repr__(self) -> str:
        return f"SQLLineageStore({self._shown!r})"

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        with session_scope(self._writer if write else self._reader, self._shown) as session:
            yield session

    # ---- lookups used by every method ----------------------------------------------------
    def _study_id(self, session: Session, name: str) -> int:
        sid = session.scalar(sa.select(S.id).where(S.name == name))
        if sid is not None:
            return sid
        names = session.scalars(sa.select(S.name).order_by(S.name).limit(_LISTED_STUDIES + 1))
        listed = list(names)
        shown = ", ".join(listed[:_LISTED_STUDIES])
        if len(listed) > _LISTED_STUDIES:
            shown += ", ..."
        raise StorageError(
            f"no study named '{name}' in '{self._shown}'; "
            + (f"studies there: {shown}" if listed else "it holds no study yet")
        )

    def _model_row(self, session: Session, model_id: int, *, lock: bool = False) -> ModelModel:
        stmt = sa.select(M).where(M.id == model_id)
        if lock:
            stmt = stmt.with_for_update()
        row = session.scalar(stmt)
        if row is None:
            raise StorageError(f"no model with id {model_id} in '{self._shown}'")
        return row

    def _one(self, stmt: sa.Select[Any]) -> ModelRecord | None:
        with self._session() as s:
            row = s.execute(stmt).first()
        return None if row is None else _to_record(row)

    # ---- studies --------------------------------------------------------------------------
    def create_study(self, name: str, config: dict[str, Any]) -> int:
        if not isinstance(name, str) or not name or len(name) > 512:
            raise ValueError(f"study name must be 1 to 512 characters, got {name!r}")
        config = _plain(config, "config")
        found = self._find_study_id(name)
        if found is not None:
            return found
        try:
            with self._session(write=True) as s:
                row = S(name=name, config=config, created_at=_now())
                s.add(row)
                s.flush()
                return row.id
        except StorageError as e:
            # Another process created it between our look-up and our insert.
            if not isinstance(e.__cause__, IntegrityError):
                raise
        found = self._find_study_id(name)
        if found is None:  # pragma: no cover - the unique constraint failed on something else
            raise StorageError(f"cannot create study '{name}' in '{self._shown}'")
        return found

    def _find_study_id(self, name: str) -> int | None:
        with self._session() as s:
            return s.scalar(sa.select(S.id).where(S.name == name))

    def get_study(self, name: str) -> StudyRecord | None:
        with self._session() as s:
            row = s.scalar(sa.select(S).where(S.name == name))
            if row is None:
                return None
            return StudyRecord(row.id, row.name, row.config, _utc(row.created_at))

    def list_studies(self) -> list[str]:
        with self._session() as s:
            return list(s.scalars(sa.select(S.name).order_by(S.name)))

    # ---- writing a model's life ----------------------------------------------------------
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
        if parent_id is None and operation != "seed":
            raise ValueError(f"a model without a parent is a seed: operation must be 'seed', "
                             f"got {operation!r}")  # fmt: skip
        if parent_id is not None and (not operation or operation == "seed"):
            raise ValueError(f"a child of model {parent_id} needs its operation, got {operation!r}")
        row = M(
            trial_number=int(trial_number), status="running", spec=_plain(spec_dict, "spec"),
            spec_hash=spec_hash, num_params=int(num_params), flops=int(flops),
            generation=int(generation), info=_plain(info or {}, "info"), created_at=_now(),
            preservation_error=_finite(preservation_error, "preservation_error"),
        )  # fmt: skip
        op_args = _plain(list(args), "args")
        with self._session(write=True) as s:
            row.study_id = self._study_id(s, study)
            taken = s.scalar(
                sa.select(M.id).where(M.study_id == row.study_id, M.trial_number == trial_number)
            )
            if taken is not None:
                raise ValueError(
                    f"trial {trial_number} of study '{study}' already has model {taken}"
                )
            if parent_id is not None:
                parent = self._model_row(s, parent_id)
                if parent.study_id != row.study_id:
                    raise ValueError(f"parent model {parent_id} is not in study '{study}'")
            s.add(row)
            s.flush()
            if parent_id is not None:
                s.add(E(child_id=row.id, parent_id=parent_id, operation=operation, args=op_args))
            return row.id

    def add_evaluation(
        self,
        model_id: int,
        epoch: int,
        val_accuracy: float | None,
        val_loss: float | None = None,
        train_loss: float | None = None,
        seconds: float | None = None,
    ) -> None:
        values = {
            "val_accuracy": _or_none(val_accuracy),
            "val_loss": _or_none(val_loss),
            "train_loss": _or_none(train_loss),
            "seconds": _or_none(seconds),
        }
        with self._session(write=True) as s:
            self._model_row(s, model_id)
            row = s.scalar(
                sa.select(EvaluationModel).where(
                    EvaluationModel.model_id == model_id, EvaluationModel.epoch == epoch
                )
            )
            if row is None:
                s.add(EvaluationModel(model_id=model_id, epoch=int(epoch), **values))
            else:
                for key, value in values.items():
                    setattr(row, key, value)

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
        _check_status(status, ("finished", "pruned"))
        extra = _plain(info or {}, "info")
        acc = _finite(val_accuracy, "val_accuracy", optional=False)
        objs = None if objectives is None else [
            _finite(v, f"objectives[{i}]", optional=False) for i, v in enumerate(objectives)
        ]  # fmt: skip
        perr = _finite(preservation_error, "preservation_error")
        secs = _finite(train_seconds, "train_seconds")
        with self._session(write=True) as s:
            row = self._model_row(s, model_id, lock=True)
            if row.status != "running":
                raise ValueError(f"model {model_id} is already {row.status}; only a running "
                                 "model can finish")  # fmt: skip
            row.status = status
            row.val_accuracy = acc
            row.objectives = objs
            row.checkpoint = None if checkpoint is None else str(checkpoint)
            row.sha256 = sha256
            row.preservation_error = perr
            row.train_seconds = secs
            row.finished_at = _now()
            if extra:
                row.info = {**(row.info or {}), **extra}

    def fail_model(self, model_id: int, status: str = "failed", reason: str = "") -> bool:
        _check_status(status, ("failed", "pruned", "killed", "interrupted"))
        with self._session(write=True) as s:
            row = self._model_row(s, model_id, lock=True)
            if row.status != "running":
                return False
            row.status = status
            row.reason = reason
            row.finished_at = _now()
            return True

    def mark_killed(
        self,
        study: str,
        trial_numbers: Iterable[int],
        reason: str = "its worker stopped",
        *,
        include_finished: bool = True,
    ) -> int:
        numbers = [int(n) for n in trial_numbers]
        if not numbers:
            return 0
        statuses = ("running", "finished") if include_finished else ("running",)
        with self._session(write=True) as s:
            sid = self._study_id(s, study)
            result = s.execute(
                sa.update(M)
                .where(M.study_id == sid, M.status.in_(statuses), M.trial_number.in_(numbers))
                .values(status="killed", reason=reason, finished_at=_now())
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def mark_checkpoint_lost(self, model_id: int, reason: str) -> bool:
        with self._session(write=True) as s:
            row = self._model_row(s, model_id, lock=True)
            if row.status != "finished":
                return False
            row.status = "lost"
            row.reason = reason
            return True

    # ---- reading --------------------------------------------------------------------------
    def get_model(self, model_id: int) -> ModelRecord | None:
        return self._one(_records_query().where(M.id == model_id))

    def find_by_trial(self, study: str, trial_number: int) -> ModelRecord | None:
        with self._session() as s:
            sid = self._study_id(s, study)
            row = s.execute(
                _records_query().where(M.study_id == sid, M.trial_number == trial_number)
            ).first()
        return None if row is None else _to_record(row)

    def models(self, study: str, status: str | None = None) -> list[ModelRecord]:
        _check_status(status, STATUSES)
        with gc_paused():
            with self._session() as s:
                stmt = _records_query(_BULK_COLUMNS)
                stmt = stmt.where(M.study_id == self._study_id(s, study))
                if status is not None:
                    stmt = stmt.where(M.status == status)
                rows = s.execute(stmt.order_by(M.trial_number, M.id)).all()
            return [_to_record(r) for r in _decode_json_columns(rows)]

    def best(self, study: str) -> ModelRecord | None:
        with self._session() as s:
            row = s.execute(
                _records_query()
                .where(
                    M.study_id == self._study_id(s, study),
                    M.status == "finished",
                    M.val_accuracy.is_not(None),
                )
                .order_by(M.val_accuracy.desc(), M.num_params.asc(), M.id.asc())
                .limit(1)
            ).first()
        return None if row is None else _to_record(row)

    def ancestry(self, model_id: int) -> list[ModelRecord]:
        # Walk up the edges in one recursive query; ``depth`` 0 is the model itself.
        chain = (
            sa.select(M.id.label("id"), sa.literal_column("0").label("depth"))
            .where(M.id == model_id)
            .cte("chain", recursive=True)
        )
        chain = chain.union_all(
            sa.select(E.parent_id, chain.c.depth + 1).join(chain, E.child_id == chain.c.id)
        )
        stmt = _records_query().join(chain, chain.c.id == M.id).order_by(chain.c.depth.desc())
        with self._session() as s:
            rows = s.execute(stmt).all()
            if not rows:
                self._model_row(s, model_id)  # raises for an unknown id
        return [_to_record(r) for r in rows]

    def children(self, model_id: int) -> list[ModelRecord]:
        with self._session() as s:
            rows = s.execute(_records_query().where(E.parent_id == model_id).order_by(M.id)).all()
            if not rows:
                self._model_row(s, model_id)
        return [_to_record(r) for r in rows]

    def find_duplicate(
        self, study: str, parent_id: int | None, spec_hash: str
    ) -> ModelRecord | None:
        parent_clause = E.parent_id.is_(None) if parent_id is None else E.parent_id == parent_id
        with self._session() as s:
            row = s.execute(
                _records_query()
                .where(
                    M.study_id == self._study_id(s, study),
                    M.spec_hash == spec_hash,
                    M.status == "finished",
                    parent_clause,
                )
                .order_by(M.id)
                .limit(1)
            ).first()
        return None if row is None else _to_record(row)

    def evaluations(self, model_id: int) -> list[EvaluationRecord]:
        ev = EvaluationModel
        with self._session() as s:
            self._model_row(s, model_id)
            rows = s.execute(
                sa.select(ev.model_id, ev.epoch, ev.val_accuracy, ev.val_loss, ev.train_loss,
                          ev.seconds)
                .where(ev.model_id == model_id)
                .order_by(ev.epoch)
            ).all()  # fmt: skip
        return [EvaluationRecord(*r) for r in rows]
