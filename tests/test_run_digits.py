"""Issue 2 acceptance: ``growsearch run studies/digits.yaml`` end to end, on real data.

One module-scoped run of the shipped study (about 15 s on 2 cores) feeds most tests here.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from growsearch.builder import build_model
from growsearch.checkpoints import load_checkpoint
from growsearch.cli import main
from growsearch.config import load_config
from growsearch.data import load_dataset
from growsearch.store import SQLLineageStore
from growsearch.transforms import Operation, apply_operation, places

ROOT = Path(__file__).resolve().parents[1]


class Run:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = folder / "growsearch.db"
        self.url = f"sqlite:///{self.db}"
        self.ckpt = folder / "ckpts"
        self.yaml = folder / "digits.yaml"

    def args(self, *extra: str) -> list[str]:
        return [
            "run",
            str(self.yaml),
            "--storage",
            self.url,
            "--checkpoint-dir",
            str(self.ckpt),
            "--quiet",
            *extra,
        ]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = Run(tmp_path_factory.mktemp("digits"))
    shutil.copy(ROOT / "studies" / "digits.yaml", run.yaml)
    assert main(run.args()) == 0
    return run


def _finished(url: str, study: str = "digits-cnn") -> list:
    with SQLLineageStore(url, create=False) as store:
        return store.models(study, status="finished")


def test_study_meets_the_acceptance_numbers(digits_run: Run) -> None:
    cfg = load_config(digits_run.yaml)
    models = _finished(digits_run.url)
    assert len(models) >= 12 and len(models) == cfg.n_trials
    best = max(m.val_accuracy for m in models)
    assert best >= 0.97, f"best validation accuracy {best}"
    ops = {m.operation for m in models}
    assert {"seed", "widen", "deepen"} <= ops
    assert max(m.generation for m in models) >= 2
    # Both operations appear at least two generations deep.
    deep_ops = {m.operation for m in models if m.generation >= 2}
    assert {"widen", "deepen"} <= deep_ops
    seeds = [m for m in models if m.parent_id is None]
    assert len(seeds) == 1 and seeds[0].operation == "seed"


def test_every_child_preserved_its_parent(digits_run: Run) -> None:
    children = [m for m in _finished(digits_run.url) if m.parent_id is not None]
    assert children
    for m in children:
        tol = m.info["preservation_tolerance"]
        assert m.preservation_error is not None
        assert m.preservation_error <= tol, (m.model_id, m.preservation_error, tol)
        # The stated tolerance is the one of DESIGN.md.
        assert tol == pytest.approx(1e-5 * max(1.0, m.info["max_parent_output"]))


def test_records_checkpoints_and_dashboard_attributes(digits_run: Run) -> None:
    models = {m.model_id: m for m in _finished(digits_run.url)}
    study = optuna.load_study(study_name="digits-cnn", storage=digits_run.url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == len(models)
    for t in complete:
        m = models[t.user_attrs["model_id"]]
        assert m.trial_number == t.number
        assert t.values[0] == pytest.approx(m.val_accuracy)
        assert t.user_attrs["params"] == m.num_params
        assert t.user_attrs["operation"] == m.operation
        if m.parent_id is None:
            assert t.user_attrs["parent_trial"] is None
        else:
            assert t.user_attrs["parent_trial"] == models[m.parent_id].trial_number
            assert t.user_attrs["preservation_error"] == pytest.approx(m.preservation_error)
        path = Path(m.checkpoint)
        assert path.is_file() and path.parent.parent == digits_run.ckpt.resolve()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == m.sha256
    assert study.metric_names == ["val_accuracy"]


def test_running_again_trains_nothing_and_raising_n_trials_adds_exactly_that(
    digits_run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {m.model_id for m in _finished(digits_run.url)}
    assert main(digits_run.args()) == 0
    assert {m.model_id for m in _finished(digits_run.url)} == before
    n = len(before)
    assert main(digits_run.args("--n-trials", str(n + 1))) == 0
    after = _finished(digits_run.url)
    assert len(after) == n + 1
    assert sum(m.parent_id is None for m in after) == 1  # the seed was never retrained
    new = [m for m in after if m.model_id not in before]
    assert new[0].parent_id in before  # the parent came from the database


def test_grown_child_predicts_like_its_trained_parent(digits_run: Run) -> None:
    cfg = load_config(digits_run.yaml)
    data = load_dataset(cfg.data, seed=cfg.seed)
    with SQLLineageStore(digits_run.url, create=False) as store:
        parent = store.best("digits-cnn")
    assert parent is not None
    path = Path(parent.checkpoint)
    raw_before = path.read_bytes()
    ckpt = load_checkpoint(path, expected_sha256=parent.sha256)
    parent_model = build_model(ckpt.spec)
    parent_model.load_state_dict(ckpt.state_dict)
    parent_model.eval()
    with torch.no_grad():
        expected = parent_model(data.x_val).argmax(1)
    # Every place each operation applies to, the conv -> flatten -> dense boundary included.
    ops = [Operation("widen", name, {"factor": 1.5}) for name in places(ckpt.spec, "widen")]
    ops += [Operation("deepen", name, {}) for name in places(ckpt.spec, "deepen")]
    assert {op.name for op in ops} == {"widen", "deepen"}
    for op in ops:
        grown = apply_operation(ckpt.spec, ckpt.state_dict, op, np.random.default_rng(0))
        child = build_model(grown.spec)
        child.load_state_dict(grown.state_dict, strict=True)
        child.eval()
        with torch.no_grad():
            got = child(data.x_val).argmax(1)
        agreement = (got == expected).double().mean().item()
        assert agreement >= 0.999, (op, agreement)
    assert path.read_bytes() == raw_before  # the parent's checkpoint is byte-identical


def test_overrides_name_the_study_trials_and_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The YAML's relative storage and checkpoint folder would land in the working directory.
    monkeypatch.chdir(tmp_path)
    yaml_path = tmp_path / "mlp.yaml"
    text = (ROOT / "studies" / "digits_mlp.yaml").read_text()
    yaml_path.write_text(text.replace("epochs_per_trial: 3", "epochs_per_trial: 1"))
    url = f"sqlite:///{tmp_path / 'other.db'}"
    ckpt = tmp_path / "weights"
    code = main(
        [
            "run",
            str(yaml_path),
            "--storage",
            url,
            "--study-name",
            "renamed",
            "--n-trials",
            "3",
            "--checkpoint-dir",
            str(ckpt),
            "--quiet",
        ]
    )
    assert code == 0
    models = _finished(url, "renamed")
    assert len(models) == 3
    assert all(Path(m.checkpoint).parent == (ckpt / "renamed").resolve() for m in models)
    assert not (tmp_path / "growsearch.db").exists()
    assert not (tmp_path / "checkpoints").exists()
    assert optuna.get_all_study_names(url) == ["renamed"]
