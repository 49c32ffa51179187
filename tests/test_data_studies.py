"""Issue 6 acceptance: a 3-trial study on IDX images and on a CSV table, each through the real
CLI (``growsearch run``), with learnable synthetic data written on the fly."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from growsearch.checkpoints import file_sha256, load_checkpoint
from growsearch.cli import main
from growsearch.store import ModelRecord, SQLLineageStore
from tests._datafiles import write_csv
from tests._studyfiles import (
    IMAGE_MODEL,
    StudyFiles,
    learnable_table,
    table_model,
    write_learnable_idx,
    write_study,
)


def _run(files: StudyFiles) -> list[ModelRecord]:
    assert main(files.run_args("--quiet")) == 0
    with SQLLineageStore(files.url, create=False) as store:
        return store.models(files.name)


def _check_lineage(files: StudyFiles, models: list[ModelRecord], input_shape: list[int]) -> None:
    finished = [m for m in models if m.status == "finished"]
    assert len(finished) == 3
    # A duplicate child is pruned before training; anything else would be a failure.
    assert {m.status for m in models} <= {"finished", "pruned"}
    by_id = {m.model_id: m for m in models}
    seeds = [m for m in models if m.parent_id is None]
    assert len(seeds) == 1
    seed = seeds[0]
    assert (seed.trial_number, seed.operation, seed.generation) == (0, "seed", 0)
    assert seed.preservation_error is None and seed.params == []
    for child in (m for m in finished if m is not seed):
        parent = by_id[child.parent_id]  # type: ignore[index]
        assert parent.status == "finished" and parent.trial_number < child.trial_number
        assert child.operation in ("widen", "deepen")
        assert [op["name"] for op in child.params] == [child.operation]
        assert child.generation == parent.generation + 1
        assert child.num_params > parent.num_params  # both operations add parameters
        # Children start exactly where their parents ended.
        assert child.preservation_error is not None and child.preservation_error < 1e-3
    for m in finished:
        assert m.checkpoint is not None and Path(m.checkpoint).is_file()
        assert Path(m.checkpoint).is_relative_to(files.checkpoints)
        assert file_sha256(m.checkpoint) == m.sha256
        ckpt = load_checkpoint(m.checkpoint, expected_sha256=m.sha256)
        assert list(ckpt.spec.input_shape) == input_shape
        assert ckpt.spec.hash == m.spec_hash
        assert m.train_seconds is not None and m.train_seconds > 0
    study = optuna.load_study(study_name=files.name, storage=files.url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert sorted(t.user_attrs["model_id"] for t in complete) == sorted(
        m.model_id for m in finished
    )


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_mnist_format_study_learns(tmp_path: Path, gz: bool) -> None:
    write_learnable_idx(tmp_path / "idx", gz=gz)
    files = write_study(
        tmp_path,
        "idx-study",
        {"dataset": "mnist", "root": str(tmp_path / "idx"), "batch_size": 32},
        IMAGE_MODEL,
    )
    models = _run(files)
    _check_lineage(files, models, [1, 12, 12])
    with SQLLineageStore(files.url, create=False) as store:
        evals = {m.model_id: store.evaluations(m.model_id) for m in models}
    finished = [m for m in models if m.status == "finished"]
    seed = next(m for m in finished if m.parent_id is None)
    assert [e.epoch for e in evals[seed.model_id]] == [1, 2, 3, 4]  # seed_epochs: 4
    # 10 classes: chance is 0.10. Every model must be far above it.
    accs = [m.val_accuracy for m in finished]
    assert min(accs) > 0.6, accs  # type: ignore[type-var]
    assert max(accs) > 0.9, accs  # type: ignore[type-var]


def test_csv_study_learns(tmp_path: Path) -> None:
    write_csv(tmp_path / "trees.csv", learnable_table(300, seed=0))
    files = write_study(
        tmp_path,
        "csv-study",
        {"dataset": "csv", "root": str(tmp_path / "trees.csv"), "target": "species",
         "batch_size": 16},
        table_model(features=5),  # height, girth, bark=flaky|rough|smooth
    )  # fmt: skip
    with pytest.warns(UserWarning, match="imputed"):  # the gaps in 'height'
        models = _run(files)
    _check_lineage(files, models, [5])
    accs = [m.val_accuracy for m in models if m.status == "finished"]
    # 3 classes: chance is 0.33.
    assert min(accs) > 0.8, accs  # type: ignore[type-var]
