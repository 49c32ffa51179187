"""The lineage store's writes and queries, on SQLite and PostgreSQL (``store`` fixture)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
from datetime import timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from growsearch.exceptions import StorageError
from growsearch.store import STATUSES, ModelRecord, SQLLineageStore

SPEC = {"input_shape": [4], "layers": [{"type": "dense", "out": 3, "name": "dense0"}]}
# The fields `growsearch lineage` promises (DESIGN.md).
CONTRACT_FIELDS = (
    "model_id", "parent_id", "trial_number", "operation", "params", "val_accuracy",
    "preservation_error", "checkpoint", "sha256", "spec",
)  # fmt: skip
CONFIG = {"name": "s", "n_trials": 3, "model": SPEC, "data": {"dataset": "digits"}}


def grow(
    store: SQLLineageStore,
    trial: int,
    parent: int | None = None,
    *,
    study: str = "s",
    acc: float | None = 0.5,
    params: int = 100,
    objectives: list[float] | None = None,
    spec_hash: str | None = None,
    status: str = "finished",
    op: str = "widen",
    checkpoint: str | None = None,
    sha256: str | None = None,
) -> int:
    """Record one model through the public API; returns its id."""
    generation = 0 if parent is None else store.get_model(parent).generation + 1  # type: ignore[union-attr]
    mid = store.start_model(
        study,
        trial,
        parent,
        "seed" if parent is None else op,
        [] if parent is None else [{"name": op, "layer": "dense0", "factor": 2}],
        SPEC,
        spec_hash or f"hash{trial}",
        params,
        2 * params,
        generation,
        {"trial": trial},
    )
    if status in ("finished", "pruned"):
        store.finish_model(
            mid,
            val_accuracy=acc,  # type: ignore[arg-type]
            objectives=objectives,
            checkpoint=checkpoint,
            sha256=sha256,
            preservation_error=None if parent is None else 1e-7,
            train_seconds=1.5,
            status=status,
        )
    elif status != "running":
        store.fail_model(mid, status, f"{status} on purpose")
    return mid


@pytest.fixture
def s(store: SQLLineageStore) -> SQLLineageStore:
    """A store with study 's' created."""
    store.create_study("s", CONFIG)
    return store


# ---- studies ---------------------------------------------------------------------------------
def test_create_study_is_idempotent_and_keeps_the_first_config(store: SQLLineageStore) -> None:
    first = store.create_study("s", CONFIG)
    again = store.create_study("s", {"other": True})
    other = store.create_study("a-study", {})
    assert first == again != other
    record = store.get_study("s")
    assert record is not None
    assert (record.study_id, record.name, record.config) == (first, "s", CONFIG)
    assert record.created_at.tzinfo is not None
    assert store.list_studies() == ["a-study", "s"]
    assert store.get_study("nope") is None


def test_create_study_rejects_bad_input(store: SQLLineageStore) -> None:
    with pytest.raises(ValueError, match="NaN"):
        store.create_study("s", {"lr": float("nan")})
    with pytest.raises(ValueError, match="study name"):
        store.create_study("", {})
    assert store.list_studies() == []


def test_unknown_study_names_the_known_ones(s: SQLLineageStore) -> None:
    for query in (s.best, s.models, s.pareto, s.lineage_dataframe):
        with pytest.raises(StorageError, match=r"no study named 'typo'.*studies there: s"):
            query("typo")
    with pytest.raises(StorageError, match="no study named 'typo'"):
        s.start_model("typo", 0, None, "seed", [], SPEC, "h", 1, 1, 0)


# ---- recording models --------------------------------------------------------------------------
def test_seed_and_child_records(s: SQLLineageStore) -> None:
    seed = grow(s, 0, acc=0.6, checkpoint="ck/0.safetensors", sha256="ab" * 32)
    child = grow(s, 1, seed, acc=0.7, objectives=[0.7, 100.0])
    r0, r1 = s.get_model(seed), s.get_model(child)
    assert r0 is not None and r1 is not None
    assert (r0.parent_id, r0.operation, r0.params) == (None, "seed", [])
    assert r0.preservation_error is None
    assert r0.is_seed and not r1.is_seed
    assert (r0.checkpoint, r0.sha256, r0.generation) == ("ck/0.safetensors", "ab" * 32, 0)
    assert (r1.parent_id, r1.operation, r1.generation) == (seed, "widen", 1)
    assert r1.params == [{"name": "widen", "layer": "dense0", "factor": 2}]
    assert (r1.val_accuracy, r1.objectives, r1.preservation_error) == (0.7, [0.7, 100.0], 1e-7)
    assert (r1.spec, r1.spec_hash, r1.num_params, r1.flops) == (SPEC, "hash1", 100, 200)
    assert (r1.study, r1.trial_number, r1.status, r1.info) == ("s", 1, "finished", {"trial": 1})
    assert r1.train_seconds == 1.5
    assert r1.created_at.tzinfo is not None and r1.finished_at is not None
    assert r1.created_at <= r1.finished_at
    assert r1.finished_at.utcoffset() == timezone.utc.utcoffset(None)


def test_the_many_row_read_decodes_json_exactly_like_the_one_row_read(s: SQLLineageStore) -> None:
    """``models`` decodes the JSON columns in bulk (one json.loads per column); every record
    must equal what ``get_model`` (the JSON type, one value at a time) returns."""
    seed = grow(s, 0, acc=0.6)
    child = grow(s, 1, seed, acc=0.7, objectives=[0.7, 100.0])
    grow(s, 2, child, status="running")
    grow(s, 3, child, acc=0.3, status="pruned", op="deepen")
    listed = s.models("s")
    assert [r.model_id for r in listed] == [seed, child, seed + 2, seed + 3]
    assert listed == [s.get_model(r.model_id) for r in listed]
    assert (listed[0].params, listed[0].objectives, listed[2].objectives) == ([], None, None)
    assert listed[1].params == [{"name": "widen", "layer": "dense0", "factor": 2}]
    assert listed[1].spec == SPEC and listed[3].info == {"trial": 3}


def test_running_model_has_no_result_yet(s: SQLLineageStore) -> None:
    mid = grow(s, 0, status="running")
    r = s.get_model(mid)
    assert r is not None
    assert (r.status, r.val_accuracy, r.finished_at, r.checkpoint) == ("running", None, None, None)


def test_records_are_immutable_snapshots(s: SQLLineageStore) -> None:
    mid = grow(s, 0, status="running")
    before = s.get_model(mid)
    assert before is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.status = "finished"  # type: ignore[misc]
    before.spec["layers"].clear()
    before.info["trial"] = 99
    s.finish_model(mid, val_accuracy=0.9)
    after = s.get_model(mid)
    assert before.status == "running" and before.val_accuracy is None
    assert after is not None and after.status == "finished" and after.val_accuracy == 0.9
    assert after.spec == SPEC and after.info == {"trial": 0}


def test_to_json_dict_is_plain_json(s: SQLLineageStore) -> None:
    seed = grow(s, 0, acc=0.5)
    child = grow(s, 1, seed, acc=0.75, objectives=[0.75, 100.0])
    for r in (s.get_model(seed), s.get_model(child)):
        assert r is not None
        d = r.to_json_dict()
        text = json.dumps(d, allow_nan=False)  # raises on NaN or non-JSON values
        assert json.loads(text) == d
        assert set(CONTRACT_FIELDS) <= set(d)
        assert isinstance(d["created_at"], str) and d["created_at"].endswith("+00:00")
    assert s.get_model(seed).to_json_dict()["parent_id"] is None  # type: ignore[union-attr]


def test_start_model_validates_its_input(s: SQLLineageStore) -> None:
    seed = grow(s, 0)
    s.create_study("other", {})
    foreign = grow(s, 0, study="other")
    with pytest.raises(ValueError, match="must be 'seed'"):
        s.start_model("s", 5, None, "widen", [], SPEC, "h", 1, 1, 0)
    with pytest.raises(ValueError, match="needs its operation"):
        s.start_model("s", 5, seed, "seed", [], SPEC, "h", 1, 1, 1)
    with pytest.raises(ValueError, match="trial 0 of study 's' already has model"):
        s.start_model("s", 0, None, "seed", [], SPEC, "h", 1, 1, 0)
    with pytest.raises(ValueError, match="not in study 's'"):
        s.start_model("s", 5, foreign, "widen", [], SPEC, "h", 1, 1, 1)
    with pytest.raises(StorageError, match="no model with id 12345"):
        s.start_model("s", 5, 12345, "widen", [], SPEC, "h", 1, 1, 1)
    with pytest.raises(ValueError, match="info holds nan"):
        s.start_model("s", 5, seed, "widen", [], SPEC, "h", 1, 1, 1, {"noise": float("nan")})
    with pytest.raises(ValueError, match="not JSON data"):
        s.start_model("s", 5, seed, "widen", [], SPEC, "h", 1, 1, 1, {"x": object()})
    with pytest.raises(ValueError, match="preservation_error must be a finite number"):
        s.start_model("s", 5, seed, "widen", [], SPEC, "h", 1, 1, 1, preservation_error=math.inf)
    assert [m.trial_number for m in s.models("s")] == [0]


def test_a_child_that_never_finishes_keeps_its_preservation_error(s: SQLLineageStore) -> None:
    # Measured before training: a pruned or failed child still shows how exact its growth was.
    seed = grow(s, 0)
    pruned = s.start_model("s", 1, seed, "widen", [], SPEC, "h1", 1, 1, 1, preservation_error=3e-6)
    failed = s.start_model("s", 2, seed, "deepen", [], SPEC, "h2", 1, 1, 1, preservation_error=0.0)
    s.fail_model(pruned, "pruned", "pruned by MedianPruner at epoch 1")
    s.fail_model(failed, "failed", "diverged")
    rows = {m.model_id: m for m in s.models("s")}
    assert (rows[pruned].status, rows[pruned].preservation_error) == ("pruned", 3e-6)
    assert (rows[failed].status, rows[failed].preservation_error) == ("failed", 0.0)


def test_numpy_scalars_are_stored_as_plain_numbers(s: SQLLineageStore) -> None:
    mid = s.start_model(
        "s", np.int64(0), None, "seed", [], SPEC, "h", np.int64(7), np.int64(14), 0,
        {"noise": np.float32(0.25), "sizes": (np.int64(1), 2)},
    )  # fmt: skip
    s.finish_model(mid, val_accuracy=np.float64(0.5), objectives=[np.float32(0.5), np.int64(7)])
    r = s.get_model(mid)
    assert r is not None
    assert r.info == {"noise": 0.25, "sizes": [1, 2]}
    assert (r.num_params, r.val_accuracy, r.objectives) == (7, 0.5, [0.5, 7.0])
    assert type(r.val_accuracy) is float


def test_finish_model_rules(s: SQLLineageStore) -> None:
    mid = grow(s, 0, status="running")
    with pytest.raises(ValueError, match="val_accuracy must be a finite number"):
        s.finish_model(mid, val_accuracy=float("nan"))
    with pytest.raises(ValueError, match=r"objectives\[1\]"):
        s.finish_model(mid, val_accuracy=0.5, objectives=[0.5, float("inf")])
    with pytest.raises(ValueError, match="status must be one of"):
        s.finish_model(mid, val_accuracy=0.5, status="failed")
    s.finish_model(mid, val_accuracy=0.5)
    with pytest.raises(ValueError, match="already finished"):
        s.finish_model(mid, val_accuracy=0.6)
    assert s.get_model(mid).val_accuracy == 0.5  # type: ignore[union-attr]
    with pytest.raises(StorageError, match="no model with id 999"):
        s.finish_model(999, val_accuracy=0.5)


def test_pruned_with_result(s: SQLLineageStore) -> None:
    mid = grow(s, 0, acc=0.4, status="pruned")
    r = s.get_model(mid)
    assert r is not None and (r.status, r.val_accuracy) == ("pruned", 0.4)


def test_fail_model(s: SQLLineageStore) -> None:
    ids = {st: grow(s, i, status="running") for i, st in enumerate(STATUSES[2:6])}
    for status, mid in ids.items():
        assert s.fail_model(mid, status, f"why {status}") is True
        r = s.get_model(mid)
        assert r is not None
        assert (r.status, r.reason) == (status, f"why {status}")
        assert r.finished_at is not None
    done = grow(s, 9)
    assert s.fail_model(done, "failed", "late") is False
    assert s.get_model(done).status == "finished"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="status must be one of"):
        s.fail_model(grow(s, 10, status="running"), "finished", "")


def test_mark_killed(s: SQLLineageStore) -> None:
    running = grow(s, 0, status="running")
    finished = grow(s, 1)
    failed = grow(s, 2, status="failed")
    other = grow(s, 3, status="running")
    assert s.mark_running_as_killed("s", [0, 1, 2]) == 1
    assert s.get_model(finished).status == "finished"  # type: ignore[union-attr]
    assert s.mark_killed("s", [1, 2, 77], "worker died") == 1
    statuses = {m.model_id: (m.status, m.reason) for m in s.models("s")}
    assert statuses[running] == ("killed", "its worker stopped")
    assert statuses[finished] == ("killed", "worker died")
    assert statuses[failed] == ("failed", "failed on purpose")
    assert statuses[other] == ("running", None)
    assert s.mark_killed("s", []) == 0


def test_mark_checkpoint_lost_removes_a_model_from_best(s: SQLLineageStore) -> None:
    seed = grow(s, 0, acc=0.5)
    top = grow(s, 1, seed, acc=0.9)
    assert s.best("s").model_id == top  # type: ignore[union-attr]
    assert s.mark_checkpoint_lost(top, "sha256 mismatch") is True
    assert s.get_model(top).status == "lost"  # type: ignore[union-attr]
    assert s.best("s").model_id == seed  # type: ignore[union-attr]
    assert s.mark_checkpoint_lost(grow(s, 2, status="running"), "x") is False


def test_evaluations_upsert_and_nan_losses(s: SQLLineageStore) -> None:
    mid = grow(s, 0, status="running")
    s.add_evaluation(mid, 1, 0.6, 0.9, 1.1, 2.0)
    s.add_evaluation(mid, 0, 0.5, 1.0, float("nan"), 2.5)
    s.add_evaluation(mid, 1, 0.65, 0.8, float("inf"), 2.1)  # replaces epoch 1
    rows = s.evaluations(mid)
    assert [(e.epoch, e.val_accuracy, e.val_loss, e.train_loss, e.seconds) for e in rows] == [
        (0, 0.5, 1.0, None, 2.5),
        (1, 0.65, 0.8, None, 2.1),
    ]
    assert json.loads(json.dumps(rows[0].to_json_dict()))["model_id"] == mid
    assert s.evaluations(grow(s, 1, status="running")) == []
    with pytest.raises(StorageError, match="no model with id 4242"):
        s.add_evaluation(4242, 0, 0.5)
    with pytest.raises(StorageError, match="no model with id 4242"):
        s.evaluations(4242)


# ---- queries -----------------------------------------------------------------------------------
def test_best_prefers_accuracy_then_fewer_params_then_older(s: SQLLineageStore) -> None:
    assert s.best("s") is None
    seed = grow(s, 0, acc=0.5, params=50)
    grow(s, 1, seed, acc=0.99, status="running")
    grow(s, 2, seed, acc=0.99, status="failed")
    big = grow(s, 3, seed, acc=0.8, params=300)
    assert s.best("s").model_id == big  # type: ignore[union-attr]
    small = grow(s, 4, seed, acc=0.8, params=200)
    assert s.best("s").model_id == small  # type: ignore[union-attr]
    grow(s, 5, seed, acc=0.8, params=200)  # same accuracy and size, newer
    assert s.best("s").model_id == small  # type: ignore[union-attr]
    s.create_study("other", {})
    grow(s, 0, study="other", acc=1.0)
    assert s.best("s").model_id == small  # type: ignore[union-attr]


def test_pareto_front(s: SQLLineageStore) -> None:
    seed = grow(s, 0, acc=0.5, objectives=[0.5, 100.0])
    a = grow(s, 1, seed, objectives=[0.9, 500.0])
    b = grow(s, 2, seed, objectives=[0.7, 100.0])  # dominates the seed
    c = grow(s, 3, seed, objectives=[0.8, 300.0])
    grow(s, 4, seed, objectives=[0.8, 400.0])  # dominated by c
    twin = grow(s, 5, seed, objectives=[0.8, 300.0])  # equal to c: neither dominates
    grow(s, 6, seed, objectives=None)  # single-objective record: ignored
    grow(s, 7, seed, objectives=[0.99, 1.0], status="failed")
    assert [r.model_id for r in s.pareto("s")] == [a, c, twin, b]
    both_max = [r.model_id for r in s.pareto("s", ("maximize", "maximize"))]
    assert both_max == [a]
    with pytest.raises(ValueError, match="direction"):
        s.pareto("s", ("up", "down"))


def test_ancestry_and_children(s: SQLLineageStore) -> None:
    seed = grow(s, 0)
    a = grow(s, 1, seed)
    b = grow(s, 2, a, op="deepen")
    sibling = grow(s, 3, seed)
    c = grow(s, 4, b, op="widen+deepen")
    assert [r.model_id for r in s.ancestry(c)] == [seed, a, b, c]
    assert [r.operation for r in s.ancestry(c)] == ["seed", "widen", "deepen", "widen+deepen"]
    assert [r.generation for r in s.ancestry(c)] == [0, 1, 2, 3]
    assert [r.model_id for r in s.ancestry(sibling)] == [seed, sibling]
    assert [r.model_id for r in s.ancestry(seed)] == [seed]
    assert [r.model_id for r in s.children(seed)] == [a, sibling]
    assert [r.model_id for r in s.children(b)] == [c]
    assert s.children(c) == []
    with pytest.raises(StorageError, match="no model with id 999"):
        s.ancestry(999)
    with pytest.raises(StorageError, match="no model with id 999"):
        s.children(999)


def test_models_find_by_trial_and_get_model(s: SQLLineageStore) -> None:
    seed = grow(s, 0)
    grow(s, 2, seed, status="failed")
    grow(s, 1, seed, status="running")
    assert [m.trial_number for m in s.models("s")] == [0, 1, 2]
    assert [m.trial_number for m in s.models("s", status="running")] == [1]
    assert [m.trial_number for m in s.models("s", status="failed")] == [2]
    assert s.models("s", status="killed") == []
    with pytest.raises(ValueError, match="status must be one of"):
        s.models("s", status="done")
    found = s.find_by_trial("s", 2)
    assert found is not None and (found.trial_number, found.status) == (2, "failed")
    assert s.find_by_trial("s", 42) is None
    assert s.get_model(seed) == s.find_by_trial("s", 0)
    assert s.get_model(10_000) is None


def test_find_duplicate(s: SQLLineageStore) -> None:
    seed = grow(s, 0, spec_hash="h-seed")
    other_parent = grow(s, 1, seed, spec_hash="hx")
    grow(s, 2, seed, spec_hash="h-child", status="failed")
    assert s.find_duplicate("s", seed, "h-child") is None  # failed does not count
    first = grow(s, 3, seed, spec_hash="h-child")
    grow(s, 4, seed, spec_hash="h-child")
    assert s.find_duplicate("s", seed, "h-child").model_id == first  # type: ignore[union-attr]
    assert s.find_duplicate("s", other_parent, "h-child") is None
    assert s.find_duplicate("s", None, "h-seed").model_id == seed  # type: ignore[union-attr]
    assert s.find_duplicate("s", None, "h-child") is None


def test_lineage_dataframe(s: SQLLineageStore) -> None:
    empty = s.lineage_dataframe("s")
    assert len(empty) == 0 and "parent_id" in empty.columns
    seed = grow(s, 0, acc=0.5)
    child = grow(s, 1, seed, acc=0.7, objectives=[0.7, 100.0])
    grow(s, 2, child, status="running")
    df = s.lineage_dataframe("s")
    assert list(df.columns)[:4] == ["model_id", "study", "trial_number", "parent_id"]
    assert len(df) == 3 and df["model_id"].tolist() == [seed, child, child + 1]
    assert pd.isna(df.loc[0, "parent_id"]) and df.loc[1, "parent_id"] == seed
    assert df["operation"].tolist() == ["seed", "widen", "widen"]
    assert df.loc[1, "val_accuracy"] == 0.7 and math.isnan(df.loc[2, "val_accuracy"])
    assert df.loc[1, "spec"] == SPEC and df.loc[1, "objectives"] == [0.7, 100.0]
    assert df["status"].tolist() == ["finished", "finished", "running"]
    assert str(df["parent_id"].dtype) == "Int64"


def test_missing_checkpoints(s: SQLLineageStore, tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(b"weights")
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(b"weights")
    real = hashlib.sha256(b"weights").hexdigest()
    seed = grow(s, 0, checkpoint=str(good), sha256=real)
    t = grow(s, 1, seed, checkpoint=str(tampered), sha256="0" * 64)
    gone = grow(s, 2, seed, checkpoint=str(tmp_path / "gone.bin"))
    none = grow(s, 3, seed, checkpoint=None)
    grow(s, 4, seed, checkpoint="s3://bucket/model.safetensors")  # cannot check: skipped
    grow(s, 5, seed, checkpoint=str(tmp_path / "gone-but-failed.bin"), status="failed")
    relative = grow(s, 6, seed, checkpoint="good.bin", sha256=real)
    uri = grow(s, 7, seed, checkpoint=good.as_uri(), sha256=real)
    quick = {r.model_id for r in s.missing_checkpoints("s", root=tmp_path)}
    assert quick == {gone, none}
    full = {r.model_id for r in s.missing_checkpoints("s", verify_sha256=True, root=tmp_path)}
    assert full == {gone, none, t}
    assert relative not in full and uri not in full


def test_store_is_thread_safe(s: SQLLineageStore) -> None:
    seed = grow(s, 0)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(8):
                trial = 1 + k * 100 + i
                mid = grow(s, trial, seed, acc=0.1 * k)
                s.add_evaluation(mid, 0, 0.1 * k)
                assert s.get_model(mid).trial_number == trial  # type: ignore[union-attr]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    models = s.models("s")
    assert len(models) == 33 and len({m.model_id for m in models}) == 33
    assert len(s.children(seed)) == 32


# ---- a large lineage ---------------------------------------------------------------------------
def _bulk_lineage(store: SQLLineageStore, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` finished models in one transaction: a random tree plus one long chain. Written with
    SQL directly because 2,000 separate commits would dominate the test's run time."""
    import sqlalchemy as sa

    from growsearch.store._models import EdgeModel, ModelModel, StudyModel

    rng = np.random.default_rng(seed)
    with store._session(write=True) as sess:
        sid = sess.scalar(sa.select(StudyModel.id).where(StudyModel.name == "s"))
        now = pd.Timestamp.now(tz="UTC").to_pydatetime()
        rows, edges = [], []
        for i in range(1, n + 1):
            # First half: a chain; second half: random parents among all earlier models.
            parent = None if i == 1 else (i - 1 if i <= n // 2 else int(rng.integers(1, i)))
            acc = float(rng.choice([0.25, 0.5, 0.75, 0.8125]))
            params = int(rng.integers(10, 40))
            rows.append(dict(
                id=i, study_id=sid, trial_number=i - 1, status="finished", spec=SPEC,
                spec_hash=f"h{i}", num_params=params, flops=2 * params, generation=0,
                val_accuracy=acc, objectives=[acc, float(params)], info={}, created_at=now,
            ))  # fmt: skip
            if parent is not None:
                edges.append(dict(child_id=i, parent_id=parent, operation="widen", args=[]))
        sess.execute(sa.insert(ModelModel), rows)
        sess.execute(sa.insert(EdgeModel), edges)
    parents = {e["child_id"]: e["parent_id"] for e in edges}
    for r in rows:
        r["parent"] = parents.get(r["id"])
    return rows


def test_large_lineage_queries_are_correct(s: SQLLineageStore) -> None:
    n = 2000
    rows = _bulk_lineage(s, n)
    by_id = {r["id"]: r for r in rows}

    expected_best = min(rows, key=lambda r: (-r["val_accuracy"], r["num_params"], r["id"]))
    best = s.best("s")
    assert best is not None and best.model_id == expected_best["id"]

    leaf = n  # in the random half: its chain goes through the random tree, then the chain
    chain, node = [], leaf
    while node is not None:
        chain.append(node)
        node = by_id[node]["parent"]
    assert [r.model_id for r in s.ancestry(leaf)] == chain[::-1]
    deep = [r.model_id for r in s.ancestry(n // 2)]  # the end of the chain: n/2 ancestors
    assert deep == list(range(1, n // 2 + 1))

    df = s.lineage_dataframe("s")
    assert len(df) == n and df["model_id"].tolist() == list(range(1, n + 1))
    assert df["parent_id"].isna().sum() == 1

    obj = np.array([[r["val_accuracy"], r["num_params"]] for r in rows])
    dominated = (
        (obj[None, :, 0] >= obj[:, None, 0])
        & (obj[None, :, 1] <= obj[:, None, 1])
        & ((obj[None, :, 0] > obj[:, None, 0]) | (obj[None, :, 1] < obj[:, None, 1]))
    ).any(axis=1)
    expected_front = {rows[i]["id"] for i in np.flatnonzero(~dominated)}
    front = s.pareto("s")
    assert {r.model_id for r in front} == expected_front
    assert [r.val_accuracy for r in front] == sorted((r.val_accuracy for r in front), reverse=True)
    assert len(s.children(1)) == len([r for r in rows if r["parent"] == 1])


def test_model_record_fields_are_the_documented_ones() -> None:
    names = [f.name for f in dataclasses.fields(ModelRecord)]
    for key in ("model_id", "parent_id", "trial_number", "operation", "params", "val_accuracy",
                "preservation_error", "checkpoint", "sha256", "spec", "study", "spec_hash",
                "num_params", "flops", "generation", "status", "reason", "objectives", "info",
                "created_at", "finished_at", "train_seconds"):  # fmt: skip
        assert key in names
