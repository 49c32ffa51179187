"""Multi-objective search (validation accuracy vs parameters): the Pareto front that
``growsearch best`` lists is Optuna's, and constraints replace pruning."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from growsearch.cli import main
from growsearch.store import SQLLineageStore
from tests._searchkit import tiny_study


@pytest.fixture(scope="module")
def mo_study(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("mo")
    url = f"sqlite:///{folder / 'g.db'}"
    path, _ = tiny_study(
        folder,
        url,
        n_trials=5,
        search={
            "objectives": ["val_accuracy", "params"],
            "parent": "pareto",
            "pruner": "median",  # ignored: multi-objective trials cannot be pruned
            "max_params": 2600,
        },
        workers={"max_consecutive_failures": 20},
    )
    assert main(["run", str(path), "--quiet"]) == 0
    return url


def test_objectives_and_constraints_are_recorded(mo_study: str) -> None:
    study = optuna.load_study(study_name="tiny", storage=mo_study)
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_accuracy", "params"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 5
    for t in complete:
        assert t.values[1] == t.user_attrs["params"] <= 2600
        assert t.intermediate_values == {}  # nothing reported: no pruning in multi-objective
        assert t.constraints["max_params"] <= 0  # every trial carries its constraint values
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        # Only refused children are pruned (breaking max_params, or duplicates), untrained.
        reason = t.user_attrs["prune_reason"]
        assert "not trained" in reason or "duplicate child" in reason
        if t.constraints.get("max_params", 0) > 0:
            assert "search.max_params 2600" in reason


def test_best_lists_the_pareto_front(mo_study: str, capsys: pytest.CaptureFixture[str]) -> None:
    study = optuna.load_study(study_name="tiny", storage=mo_study)
    optuna_front = sorted(t.number for t in study.best_trials)
    assert main(["best", "--storage", mo_study, "--study", "tiny", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objectives"] == ["val_accuracy", "params"]
    front = out["pareto_front"]
    assert sorted(r["trial_number"] for r in front) == optuna_front
    # Nothing in the front is dominated by a finished model, and it is best-accuracy first.
    with SQLLineageStore(mo_study, create=False) as store:
        finished = store.models("tiny", status="finished")
    for r in front:
        acc, params = r["objectives"]
        assert (acc, params) == (r["val_accuracy"], r["num_params"])
        for m in finished:
            better = m.val_accuracy >= acc and m.num_params <= params
            assert not (better and (m.val_accuracy, m.num_params) != (acc, params))
    accs = [r["val_accuracy"] for r in front]
    assert accs == sorted(accs, reverse=True)
    assert main(["best", "--storage", mo_study, "--study", "tiny"]) == 0
    table = capsys.readouterr().out
    assert f"Pareto front of 'tiny' (val_accuracy vs params): {len(front)} model(s)" in table
