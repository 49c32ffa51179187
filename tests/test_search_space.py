"""The mutation space, the parent policies, the search/workers config and the per-trial sampler
seeding, without training anything."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from _arch_gen import random_spec

from growsearch.config import (
    SearchSection,
    checkpoint_window,
    checkpoint_write_estimate,
    parse_config,
)
from growsearch.exceptions import ConfigError
from growsearch.search._optuna import make_pruner, make_sampler, reseedable
from growsearch.search._policy import candidate_parents, select_parent
from growsearch.search._space import NoPlaceError, propose
from growsearch.search._timing import PhaseTimer
from growsearch.spec import Spec
from growsearch.store import SQLLineageStore
from growsearch.transforms import child_spec, get_operation, places
from tests._searchkit import TINY_MODEL

SPEC = Spec.from_dict(TINY_MODEL)


def _raw(**search: object) -> dict:
    return {"name": "s", "model": TINY_MODEL, "search": search}


# ---- mutation space ---------------------------------------------------------------------------
def test_several_operations_per_child_chain_on_the_growing_spec() -> None:
    search = SearchSection(max_ops_per_child=3, widen_factor=(2.0, 2.0))
    trial = optuna.trial.FixedTrial(
        {
            "n_operations": 3,
            "operation": "widen",
            "position": 0.0,
            "widen_factor": 2.0,
            "operation_2": "deepen",
            "position_2": 0.0,
            "deepen_kernel_2": 1,
            "operation_3": "widen",
            "position_3": 0.99,
            "widen_factor_3": 2.0,
        }
    )
    p = propose(trial, SPEC, search)
    assert [op.name for op in p.operations] == ["widen", "deepen", "widen"]
    assert p.operations[0].args == {"width": 32}
    expected = SPEC
    for op in p.operations:
        expected = child_spec(expected, op)
    assert p.spec == expected  # the child spec is known before any weight is touched
    # The third operation is placed on the grown child: its target exists only there.
    assert p.operations[2].target not in SPEC.names()
    assert (
        p.operations[2].target
        in child_spec(child_spec(SPEC, p.operations[0]), p.operations[1]).names()
    )
    assert p.lr is None and p.epochs is None


def test_one_operation_by_default_and_optional_lr_and_epochs() -> None:
    search = SearchSection(search_lr=(0.01, 0.1), search_epochs=(2, 5))
    trial = optuna.trial.FixedTrial(
        {"operation": "deepen", "position": 0.5, "deepen_kernel": 3, "lr": 0.02, "epochs": 4}
    )
    p = propose(trial, SPEC, search)
    assert len(p.operations) == 1 and p.operations[0].name == "deepen"
    assert (p.lr, p.epochs) == (0.02, 4)
    assert p.spec.depth == SPEC.depth + 1


def test_sampler_proposes_epochs_in_the_configured_range() -> None:
    search = SearchSection(search_epochs=(2, 3), max_ops_per_child=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        p = propose(trial, SPEC, search)
        seen.add(p.epochs)
        assert 1 <= len(p.operations) <= 2
        assert trial.params["n_operations"] == len(p.operations)
        study.tell(trial, 0.5)
    assert seen == {2, 3}


def test_the_study_never_proposes_a_refused_operation() -> None:
    """On random architectures (residual, concat, layernorm, non-square maps ...) every operation
    the sampler can draw, at any position and with any allowed argument, lands on a place where
    it is exact; the layers it refuses (output layer, layernorm, input-tied skips ...) never come
    up. Specs only, so it is quick."""
    search = SearchSection(
        operations=("widen", "deepen", "widen_kernel", "add_skip"),
        widen_factor=(1.01, 3.0),
        deepen_kernels=(1, 3, 5, 7),
        max_ops_per_child=2,
    )
    rng = np.random.default_rng(0)
    refused = proposed = 0
    for _ in range(40):
        spec = random_spec(rng)
        for op in search.operations:
            where = set(places(spec, op))
            refused += len(set(spec.names()) - where)
            for position in (0.0, 0.3, 0.7, 0.999):
                trial = optuna.trial.FixedTrial(
                    {
                        "n_operations": 2,
                        "operation": op,
                        "position": position,
                        "widen_factor": float(rng.uniform(1.01, 3.0)),
                        "deepen_kernel": int(rng.choice(search.deepen_kernels)),
                        "operation_2": str(rng.choice(search.operations)),
                        "position_2": 1.0 - position,
                        "widen_factor_2": 2.0,
                        "deepen_kernel_2": 7,
                    }
                )
                if not where:  # nothing to propose: the trial is pruned, nothing is refused
                    with pytest.raises(NoPlaceError):
                        propose(trial, spec, search)
                    continue
                try:
                    p = propose(trial, spec, search)
                except NoPlaceError:  # the second operation has no place in the grown child
                    continue
                assert p.operations[0].target in where, (spec.to_json(), p.operations)
                current = spec
                for grown in p.operations:  # each one is exact where it is placed
                    assert grown.target in places(current, grown.name)
                    assert get_operation(grown.name).exact
                    current = child_spec(current, grown)
                assert current == p.spec
                proposed += 1
    assert proposed > 400 and refused > 400  # both sides were really exercised


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ([1, 3], True),
        ([2, 2], True),
        ([0, 3], False),
        ([3, 2], False),
        ([1.5, 2], False),
        (4, False),
    ],
)
def test_search_epochs_is_validated(value: object, ok: bool) -> None:
    if ok:
        assert parse_config(_raw(search_epochs=value)).search.search_epochs == tuple(value)  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError, match=r"search\.search_epochs"):
            parse_config(_raw(search_epochs=value))


# ---- parent policies --------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> SQLLineageStore:
    s = SQLLineageStore(f"sqlite:///{tmp_path / 'l.db'}")
    s.create_study("s", {})
    return s


def _model(
    store: SQLLineageStore, trial: int, acc: float, params: int, status: str = "finished"
) -> int:
    parent = None if trial == 0 else store.models("s")[0].model_id
    mid = store.start_model(
        "s", trial, parent, "seed" if parent is None else "widen", [] if parent is None else [{}],
        SPEC.to_dict(), f"h{trial}", params, params, 0 if parent is None else 1,
    )  # fmt: skip
    if status in ("finished", "lost"):
        store.finish_model(mid, val_accuracy=acc, objectives=[acc, float(params)])
    if status == "lost":
        store.mark_checkpoint_lost(mid, "deleted")
    elif status in ("failed", "killed", "pruned"):
        store.fail_model(mid, status, "test")
    return mid


@pytest.fixture
def population(store: SQLLineageStore) -> dict[str, int]:
    ids = {
        "seed": _model(store, 0, 0.50, 100),
        "a": _model(store, 1, 0.90, 400),
        "b": _model(store, 2, 0.80, 150),
        "c": _model(store, 3, 0.70, 120),
        "d": _model(store, 4, 0.60, 300),  # dominated by b
    }
    # Better on paper, but never parents: failed (diverged), killed, pruned, lost checkpoint.
    ids["failed"] = _model(store, 5, 0.0, 10, status="failed")
    ids["killed"] = _model(store, 6, 0.0, 10, status="killed")
    ids["pruned"] = _model(store, 7, 0.0, 10, status="pruned")
    ids["lost"] = _model(store, 8, 0.99, 10, status="lost")
    return ids


def _ids(records: list) -> list[int]:
    return [r.model_id for r in records]


def test_best_policy(store: SQLLineageStore, population: dict[str, int]) -> None:
    got = candidate_parents(store, "s", SearchSection(parent="best"), ["maximize"])
    assert _ids(got) == [population["a"]]  # the lost 0.99 model is never chosen


def test_top_k_policy_ranks_and_the_sampler_picks(
    store: SQLLineageStore, population: dict[str, int]
) -> None:
    search = SearchSection(parent="top_k", top_k=3)
    got = candidate_parents(store, "s", search, ["maximize"])
    assert _ids(got) == [population["a"], population["b"], population["c"]]
    for pick, name in ((0.0, "a"), (0.34, "b"), (0.99, "c"), (1.0, "c")):
        trial = optuna.trial.FixedTrial({"parent_pick": pick})
        parent = select_parent(trial, store, "s", search, ["maximize"])
        assert parent is not None and parent.model_id == population[name]


def test_pareto_policy_offers_the_front(store: SQLLineageStore, population: dict[str, int]) -> None:
    search = SearchSection(parent="pareto", objectives=("val_accuracy", "params"))
    got = candidate_parents(store, "s", search, ["maximize", "minimize"])
    # seed (0.5, 100), a (0.9, 400), b (0.8, 150), c (0.7, 120) are not dominated; d is.
    assert set(_ids(got)) == {population[k] for k in ("seed", "a", "b", "c")}
    assert _ids(got)[0] == population["a"]  # best accuracy first


def test_no_finished_model_means_no_candidate(store: SQLLineageStore) -> None:
    _model(store, 0, 0.0, 10, status="failed")
    for policy in ("best", "top_k"):
        assert candidate_parents(store, "s", SearchSection(parent=policy), ["maximize"]) == []


# ---- workers config: heartbeats and the checkpoint window -------------------------------------
def test_grace_period_must_cover_two_heartbeats() -> None:
    raw = _raw()
    raw["workers"] = {"heartbeat_interval": 5, "grace_period": 9}
    with pytest.raises(ConfigError, match="at least twice"):
        parse_config(raw)
    raw["workers"] = {"heartbeat_interval": 5, "grace_period": 10}
    assert checkpoint_window(parse_config(raw).workers) == 5.0


def test_grace_period_must_cover_writing_the_largest_checkpoint() -> None:
    # 500M float32 parameters: 2 GB, ~20 s at the assumed 100 MB/s; 60 s with optimiser state.
    assert checkpoint_write_estimate(500_000_000) == pytest.approx(20.0)
    assert checkpoint_write_estimate(500_000_000, "grow") == pytest.approx(60.0)
    raw = _raw(max_params=500_000_000, optimizer_state="grow")
    raw["workers"] = {"heartbeat_interval": 10, "grace_period": 60}
    with pytest.raises(ConfigError, match=r"raise workers.grace_period to at least 70"):
        parse_config(raw)
    raw["workers"]["grace_period"] = 70
    assert parse_config(raw).workers.grace_period == 70


# ---- Optuna plumbing ----------------------------------------------------------------------------
def test_samplers_are_seeded_per_trial() -> None:
    cfg = parse_config(_raw())
    assert reseedable(cfg)

    def draw(number: int) -> float:
        sampler = make_sampler(cfg, trial_number=number)
        study = optuna.create_study(sampler=sampler)
        return study.ask().suggest_float("x", 0, 1)

    assert draw(3) == draw(3)  # one worker stays reproducible
    assert len({draw(n) for n in range(5)}) == 5  # concurrent trials draw differently
    assert not reseedable(parse_config(_raw(sampler="tpe", sampler_args={"seed": 3})))
    assert not reseedable(parse_config(_raw(sampler="cmaes")))


def test_multi_objective_studies_never_prune() -> None:
    cfg = parse_config(_raw(objectives=["val_accuracy", "flops"], pruner="median"))
    assert isinstance(make_pruner(cfg), optuna.pruners.NopPruner)
    single = parse_config(_raw(pruner="median"))
    assert isinstance(make_pruner(single), optuna.pruners.MedianPruner)


def test_phase_timer_accounts_for_every_second() -> None:
    timer = PhaseTimer()
    with timer.phase("training"):
        time.sleep(0.05)
    with timer.phase("db"):
        time.sleep(0.01)
    with timer.phase("db"):
        time.sleep(0.01)
    timer.move("training", "db", 0.02)
    out = timer.as_dict()
    assert out["training"] == pytest.approx(0.03, abs=0.015)
    assert out["db"] == pytest.approx(0.04, abs=0.015)
    assert out["total"] >= out["training"] + out["db"]
    assert out["overhead"] == pytest.approx(1 - out["training"] / out["total"], abs=1e-3)
    assert list(out) == ["training", "db", "other", "total", "overhead"]


@pytest.mark.parametrize("name", ["tpe", "random", "gp", "nsgaii", "qmc", "RandomSampler"])
def test_any_optuna_sampler_by_name(name: str) -> None:
    cfg = parse_config(_raw(sampler=name))
    sampler = make_sampler(cfg)
    cls_name = {"tpe": "TPESampler", "random": "RandomSampler", "gp": "GPSampler",
                "nsgaii": "NSGAIISampler", "qmc": "QMCSampler"}.get(name, name)  # fmt: skip
    assert type(sampler) is getattr(optuna.samplers, cls_name)
    study = optuna.create_study(sampler=sampler)
    trial = study.ask()
    assert propose(trial, SPEC, cfg.search).operations[0].name in ("widen", "deepen")
