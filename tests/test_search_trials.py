"""Whole trials on one worker (SQLite): what each trial records, and how the study goes on when
a parent lost its checkpoint, a child diverges or breaks a constraint."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from growsearch.builder import build_model
from growsearch.checkpoints import load_checkpoint
from growsearch.cli import main
from growsearch.search._objective import TrialRunner
from growsearch.search._timing import PHASES
from growsearch.spec import Spec
from growsearch.store import LineageStore, SQLLineageStore
from growsearch.transforms import GrowResult
from tests._searchkit import TINY_MODEL, check_finished_study, tiny_study

STORE_KEEPS_TIMINGS = "info" in inspect.signature(LineageStore.finish_model).parameters


def _run(path: Path, *extra: str) -> int:
    return main(["run", str(path), "--quiet", *extra])


def _url(folder: Path) -> str:
    return f"sqlite:///{folder / 'g.db'}"


def _trials(url: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_each_trial_records_plain_json_attributes_and_phase_timings(tmp_path: Path) -> None:
    url = _url(tmp_path)
    path, _ = tiny_study(
        tmp_path,
        url,
        n_trials=5,
        search={"max_ops_per_child": 2, "search_epochs": [1, 2], "search_lr": [0.01, 0.1]},
    )
    assert _run(path) == 0
    found = check_finished_study(url, "tiny", 5)
    with SQLLineageStore(url, create=False) as store:
        for t in found["complete"]:
            attrs = t.user_attrs
            json.dumps(attrs, allow_nan=False)  # plain JSON, nothing numpy, no NaN
            row = store.get_model(attrs["model_id"])
            assert row is not None and row.trial_number == t.number
            timings = attrs["timings"]
            assert set(timings) <= {*PHASES, "other", "total", "overhead"}
            assert {"training", "checkpoint_save", "db", "total"} <= set(timings)
            assert all(v >= 0 for v in timings.values())
            assert sum(timings[p] for p in PHASES if p in timings) <= timings["total"] + 1e-3
            assert 0 < timings["overhead"] < 1
            if STORE_KEEPS_TIMINGS:
                assert row.info["timings"] == timings
            assert attrs["checkpoint"] == row.checkpoint and attrs["checkpoint_artifact"]
            assert (attrs["params"], attrs["flops"]) == (row.num_params, row.flops)
            if attrs["parent_model_id"] is None:  # the seed
                assert t.number == 0 and attrs["operation"] == "seed"
                assert "load_parent" not in timings
                continue
            assert {"load_parent", "transform", "preservation"} <= set(timings)
            n_ops = t.params.get("n_operations", 1)
            assert len(attrs["operation_args"]) == n_ops == len(row.params)
            assert attrs["operation"] == "+".join(a["name"] for a in attrs["operation_args"])
            assert attrs["preservation_error"] <= row.info["preservation_tolerance"]
            assert row.info["lr"] == pytest.approx(t.params["lr"])
            # The sampled number of epochs is what was trained.
            assert len(store.evaluations(row.model_id)) == t.params["epochs"] == row.info["epochs"]
            assert row.info["worker"]["pid"] > 0


def test_parent_that_lost_its_checkpoint_is_marked_and_the_study_goes_on(tmp_path: Path) -> None:
    url = _url(tmp_path)
    path, _ = tiny_study(tmp_path, url, n_trials=2)
    assert _run(path) == 0
    with SQLLineageStore(url, create=False) as store:
        best = store.best("tiny")
    assert best is not None
    Path(best.checkpoint).unlink()
    assert _run(path, "--n-trials", "4") == 0  # continue the same study
    trials = _trials(url)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    reason = failed[0].user_attrs["fail_reason"]
    assert f"parent model {best.model_id}" in reason and "lost its checkpoint" in reason
    assert "does not exist" in reason
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 4
    with SQLLineageStore(url, create=False) as store:
        lost = store.get_model(best.model_id)
        assert lost is not None and lost.status == "lost" and "does not exist" in lost.reason
        later = [m for m in store.models("tiny") if m.trial_number > failed[0].number]
    assert later and all(m.parent_id != best.model_id for m in later)
    assert all(m.status == "finished" for m in later)


def test_diverged_children_fail_with_the_reason_and_the_seed_stays_the_parent(
    tmp_path: Path,
) -> None:
    url = _url(tmp_path)
    # Every child trains with an absurd learning rate: its loss becomes NaN in the first epoch.
    path, _ = tiny_study(
        tmp_path,
        url,
        n_trials=3,
        search={"search_lr": [1.0e20, 1.0e21]},
        workers={"max_consecutive_failures": 3},
    )
    assert _run(path) == 0  # the worker stops by itself, with the reason
    trials = _trials(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 3
    with SQLLineageStore(url, create=False) as store:
        models = store.models("tiny")
    seed = models[0]
    assert seed.parent_id is None and seed.status == "finished"
    for t, m in zip(trials[1:], models[1:], strict=True):
        assert "TrainingDivergedError" in t.user_attrs["fail_reason"]
        assert "nan" in t.user_attrs["fail_reason"]
        assert m.status == "failed" and "diverged" in (m.reason or "")
        assert m.parent_id == seed.model_id  # nothing else finished: the seed stays the parent


def test_a_child_above_the_tolerance_fails_its_trial_naming_the_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from growsearch.search import _objective

    exact = _objective.apply_operations

    def broken(*args: Any, **kwargs: Any) -> GrowResult:
        # A transform that claims to be exact but shifts every bias: the gate must catch it.
        grow = exact(*args, **kwargs)
        state = {k: v + 0.5 if k.endswith(".bias") else v for k, v in grow.state_dict.items()}
        return dataclasses.replace(grow, state_dict=state)

    monkeypatch.setattr(_objective, "apply_operations", broken)
    url = _url(tmp_path)
    path, _ = tiny_study(tmp_path, url, n_trials=2, workers={"max_consecutive_failures": 2})
    assert _run(path) == 0  # the worker stops by itself after two refused children
    trials = _trials(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 2
    for t in trials[1:]:
        reason = t.user_attrs["fail_reason"]
        op = t.params["operation"]
        assert re.match(rf"PreservationError: child from '{op}\(\w+", reason), reason
        assert "before training; the child was refused" in reason
        assert t.user_attrs["preservation_error"] > 0.1  # the shifted biases, not rounding
    with SQLLineageStore(url, create=False) as store:
        models = store.models("tiny")
    # Refused before its record was started: no lineage row, no checkpoint, nothing trained.
    assert [m.operation for m in models] == ["seed"]
    assert len(list((tmp_path / "ckpt").rglob("model-*.safetensors"))) == 1


def test_a_child_that_breaks_max_params_is_not_trained(tmp_path: Path) -> None:
    url = _url(tmp_path)
    # The seed has 1,210 parameters; widening its 16 units by 2x or more passes 2,000 and
    # deepening adds 272: the constraint leaves only the deeper child.
    path, _ = tiny_study(
        tmp_path,
        url,
        n_trials=3,
        search={"max_params": 1500, "widen_factor": [2.0, 3.0]},
        workers={"max_consecutive_failures": 8},
    )
    assert _run(path) == 0
    trials = _trials(url)
    with SQLLineageStore(url, create=False) as store:
        by_trial = {m.trial_number: m for m in store.models("tiny")}
    assert all(t.constraints["max_params"] <= 0 for t in trials if t.state == TrialState.COMPLETE)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    refused = [t for t in pruned if t.constraints.get("max_params", 0) > 0]
    assert refused, "a widened child should have been refused"
    for t in refused:
        assert t.number not in by_trial  # never started: no lineage row, no training
        assert "search.max_params 1500 (not trained)" in t.user_attrs["prune_reason"]
    for m in by_trial.values():
        assert m.num_params <= 1500


@pytest.mark.parametrize("init", ["net2net", "random-pad", "random-init"])
def test_init_and_grown_optimizer_state_are_study_settings(tmp_path: Path, init: str) -> None:
    """search.init picks the exact transform or an ablation baseline; with
    search.optimizer_state: grow a child's Adam state continues its parent's (the step count of an
    inherited parameter keeps counting, a new one starts at zero), except after random-init,
    whose child has no history to inherit."""
    url = _url(tmp_path)
    path, _ = tiny_study(
        tmp_path,
        url,
        n_trials=2,  # the seed and one deeper child (the tiny MLP has one place to deepen)
        train={"optimizer": "adam", "lr": 0.01},
        search={"init": init, "optimizer_state": "grow", "operations": ["deepen"]},
    )
    assert _run(path) == 0
    with SQLLineageStore(url, create=False) as store:
        models = {m.model_id: m for m in store.models("tiny") if m.status == "finished"}
    assert len(models) == 2
    seed = next(m for m in models.values() if m.parent_id is None)
    seed_steps = {
        k: int(v["step"]) for k, v in load_checkpoint(seed.checkpoint).optimizer_state.items()
    }
    steps_per_epoch = next(iter(seed_steps.values()))  # one epoch, every parameter stepped
    assert set(seed_steps.values()) == {steps_per_epoch}
    for m in models.values():
        if m.parent_id is None:
            assert m.info["init"] == "scratch"
            continue
        assert m.info["init"] == init and m.info["exact"] == (init == "net2net")
        parent = models[m.parent_id]
        parent_steps = {
            k: int(v["step"]) for k, v in load_checkpoint(parent.checkpoint).optimizer_state.items()
        }
        ckpt = load_checkpoint(m.checkpoint)
        assert ckpt.optimizer_state is not None
        assert set(ckpt.optimizer_state) == set(ckpt.state_dict) & {
            n for n, _ in build_model(ckpt.spec).named_parameters()
        }
        for name, entry in ckpt.optimizer_state.items():
            inherited = parent_steps.get(name, 0) if init != "random-init" else 0
            assert int(entry["step"]) == inherited + steps_per_epoch, (name, init)


def test_same_architecture_from_the_same_parent_the_younger_gives_way(tmp_path: Path) -> None:
    store = SQLLineageStore(_url(tmp_path))
    store.create_study("s", {})
    spec = Spec.from_dict(TINY_MODEL)

    def start(trial: int, parent: int | None, spec_hash: str) -> int:
        return store.start_model(
            "s", trial, parent, "widen" if parent else "seed", [{}] if parent else [],
            spec.to_dict(), spec_hash, 1, 1, 1 if parent else 0,
        )  # fmt: skip

    seed = start(0, None, "s0")
    store.finish_model(seed, val_accuracy=0.5)
    first, second, other = start(1, seed, "x"), start(2, seed, "x"), start(3, seed, "y")
    runner = SimpleNamespace(store=store)
    sibling = TrialRunner._sibling_with
    assert sibling(runner, seed, "x", before=None).model_id == first  # type: ignore[arg-type,union-attr]
    assert sibling(runner, seed, "x", before=second).model_id == first  # type: ignore[arg-type,union-attr]
    assert sibling(runner, seed, "x", before=first) is None  # type: ignore[arg-type]
    assert sibling(runner, seed, "y", before=other) is None  # type: ignore[arg-type]
    store.fail_model(first, "failed", "diverged")
    assert sibling(runner, seed, "x", before=second) is None  # type: ignore[arg-type]


def test_the_configured_pruner_stops_children_but_never_the_seed(tmp_path: Path) -> None:
    url = _url(tmp_path)
    # ThresholdPruner prunes any trial whose validation accuracy is below 0.999 at epoch 1.
    path, _ = tiny_study(
        tmp_path,
        url,
        n_trials=1,
        train={"epochs_per_trial": 3},
        search={"pruner": "threshold", "pruner_args": {"lower": 0.999}},
        # Pruned children are not failures: only max_consecutive_pruned stops the worker.
        workers={"max_consecutive_failures": 1, "max_consecutive_pruned": 3},
    )
    assert _run(path, "--n-trials", "2") == 0  # the worker gives up after 3 pruned children
    trials = _trials(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 3
    with SQLLineageStore(url, create=False) as store:
        models = store.models("tiny")
        for t, m in zip(trials[1:], models[1:], strict=True):
            assert t.user_attrs["prune_reason"].startswith("pruned by ThresholdPruner at epoch 1")
            assert list(t.intermediate_values) == [1]
            assert m.status == "pruned" and len(store.evaluations(m.model_id)) == 1
            # The gate ran before training: its error stays on the pruned child's record.
            assert m.preservation_error is not None
            assert m.preservation_error == t.user_attrs["preservation_error"]
            assert m.preservation_error <= m.info["preservation_tolerance"]
    assert models[0].status == "finished" and trials[0].intermediate_values  # seed: reported


def test_a_slow_checkpoint_write_warns_to_raise_the_grace_period() -> None:
    from growsearch.config import WorkerSection

    lines: list[str] = []
    runner = SimpleNamespace(
        cfg=SimpleNamespace(workers=WorkerSection(heartbeat_interval=10, grace_period=30)),
        reporter=SimpleNamespace(line=lines.append),
        _slow_save_said=False,
    )
    TrialRunner._check_save_time(runner, 9.0)  # type: ignore[arg-type]
    assert lines == []  # within half of the 20 s window
    TrialRunner._check_save_time(runner, 12.5)  # type: ignore[arg-type]
    TrialRunner._check_save_time(runner, 14.0)  # type: ignore[arg-type]
    assert len(lines) == 1  # said once per worker
    assert "took 12.5s" in lines[0] and "grace_period to at least 35" in lines[0]


def test_a_child_deeper_than_max_depth_is_not_trained(tmp_path: Path) -> None:
    url = _url(tmp_path)
    # The seed has depth 2 (two dense layers): with max_depth 2 every deepened child is refused.
    path, _ = tiny_study(
        tmp_path,
        url,
        n_trials=2,
        search={"operations": ["deepen"], "max_depth": 2},
        workers={"max_consecutive_pruned": 3},
    )
    assert _run(path) == 0  # the worker stops by itself after 3 refused children
    trials = _trials(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 3
    assert trials[0].constraints["max_depth"] <= 0
    for t in trials[1:]:
        assert t.constraints["max_depth"] == 1.0  # depth 3 against 2: infeasible by 1
        assert "child depth 3 > search.max_depth 2 (not trained)" in t.user_attrs["prune_reason"]
    with SQLLineageStore(url, create=False) as store:
        assert [m.trial_number for m in store.models("tiny")] == [0]  # no row, no training


def test_the_time_budget_stops_a_worker_between_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _url(tmp_path)
    # Any trial takes longer than 0.05 s: the seed runs, then the budget is spent.
    path, _ = tiny_study(tmp_path, url, n_trials=4, search={"time_budget_s": 0.05})
    capsys.readouterr()
    assert _run(path) == 0
    assert "stopped: time budget of" in capsys.readouterr().out
    assert [t.state for t in _trials(url)] == [TrialState.COMPLETE]


def test_a_complete_seed_whose_row_is_not_finished_yet_is_a_parent_not_a_reason_to_retrain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna records a trial COMPLETE a moment before its worker finishes the lineage row. A
    trial of another worker that looks for a parent in that moment must not train a second
    seed (seen once among four PostgreSQL workers). Frozen here: the seed's row is put back to
    running and the worker loop's own reconcile is disabled, so only the seed claim sees it."""
    import sqlalchemy as sa

    import growsearch.search._worker as worker

    url = _url(tmp_path)
    path, _ = tiny_study(tmp_path, url, n_trials=1)
    assert _run(path) == 0
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE gs_models SET status = 'running', finished_at = NULL"))
    engine.dispose()
    monkeypatch.setattr(worker, "reconcile", lambda study, store: [])
    assert _run(path, "--n-trials", "2") == 0
    with SQLLineageStore(url, create=False) as store:
        models = store.models("tiny")
    assert [(m.trial_number, m.status, m.parent_id) for m in models] == [
        (0, "finished", None),
        (1, "finished", models[0].model_id),
    ]
    assert models[0].info.get("finished_by") == "reconcile"
