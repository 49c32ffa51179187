"""Helpers for the search, worker and dashboard tests: a tiny study file and the invariants a
finished study must satisfy whatever ran it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from growsearch.exceptions import StorageError
from growsearch.store import SQLLineageStore

# A 1,210-parameter MLP on the bundled digits: one epoch is a fraction of a second.
TINY_MODEL = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "flatten"},
        {"type": "dense", "out": 16, "activation": "relu"},
        {"type": "dense", "out": 10},
    ],
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_study(
    folder: Path, storage: str, name: str = "tiny", **overrides: Any
) -> tuple[Path, dict[str, Any]]:
    """Write a study YAML for the tiny MLP into ``folder``; nested ``overrides`` are merged."""
    raw: dict[str, Any] = {
        "name": name,
        "storage": storage,
        "n_trials": 4,
        "seed": 0,
        "data": {"dataset": "digits", "batch_size": 64},
        "model": TINY_MODEL,
        "train": {"epochs_per_trial": 1, "seed_epochs": 1, "lr": 0.05},
        "search": {"operations": ["widen", "deepen"], "pruner": "none"},
        "workers": {"heartbeat_interval": 1, "grace_period": 3},
        "checkpoint_dir": str(folder / "ckpt"),
    }
    raw = _merge(raw, overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path, raw


def growsearch_process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``growsearch ARGS`` as a separate process (one CPU thread, output to ``log``)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    code = "import sys, torch; torch.set_num_threads(1); from growsearch.cli import main; "
    code += "sys.exit(main(sys.argv[1:]))"
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=out, stderr=subprocess.STDOUT, env=full_env
        )


def check_finished_study(url: str, study_name: str, n_trials: int) -> dict[str, Any]:
    """Assert what any finished study satisfies, however many workers ran it; return the
    Optuna trials and lineage models for further checks."""
    summaries = optuna.get_all_study_summaries(url)
    assert [s.study_name for s in summaries] == [study_name], "exactly one Optuna study"
    study = optuna.load_study(study_name=study_name, storage=url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials, Counter(t.state.name for t in trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    with SQLLineageStore(url, create=False) as store:
        assert store.list_studies() == [study_name], "exactly one lineage study"
        models = store.models(study_name)
    by_trial = Counter(m.trial_number for m in models)
    assert max(by_trial.values()) == 1, f"one model per trial at most: {by_trial}"
    finished = [m for m in models if m.status == "finished"]
    # One finished lineage row per COMPLETE trial, and no other.
    assert sorted(m.trial_number for m in finished) == sorted(t.number for t in complete)
    for t in complete:
        model_id = t.user_attrs["model_id"]
        row = next(m for m in finished if m.trial_number == t.number)
        assert row.model_id == model_id
        assert row.val_accuracy == t.values[0]
        path = Path(row.checkpoint)
        assert path.is_file(), f"lost checkpoint {path}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
    # No model trained twice: a (parent, architecture) pair appears once among finished models.
    pairs = Counter((m.parent_id, m.spec_hash) for m in finished)
    assert max(pairs.values()) == 1, pairs
    seeds = [m for m in finished if m.parent_id is None]
    assert len(seeds) == 1, "exactly one seed was trained"
    return {"study": study, "trials": trials, "complete": complete, "models": models}


def running_child(url: str, study: str) -> tuple[int, int, int] | None:
    """(trial number, model id, worker pid) of a child trained for at least one epoch."""
    try:
        store = SQLLineageStore(url, create=False)
    except StorageError:  # no tables yet
        return None
    with store:
        if store.get_study(study) is None:
            return None
        for m in store.models(study, status="running"):
            if m.parent_id is not None and store.evaluations(m.model_id):
                return m.trial_number, m.model_id, int(m.info["worker"]["pid"])
    return None
