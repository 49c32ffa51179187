"""``growsearch evaluate MODEL_ID``: test-split accuracy and loss from the database alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from growsearch.checkpoints import load_model
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


def _best(files: StudyFiles) -> ModelRecord:
    with SQLLineageStore(files.url, create=False) as store:
        best = store.best(files.name)
    assert best is not None
    return best


def _evaluate(
    capsys: pytest.CaptureFixture[str], model_id: int | str, url: str, *args: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["evaluate", str(model_id), "--storage", url, *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def mnist_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyFiles, dict]:
    folder = tmp_path_factory.mktemp("mnist")
    arrays = write_learnable_idx(folder / "idx", n_test=150)
    files = write_study(
        folder, "mnist-eval", {"dataset": "mnist", "root": str(folder / "idx")}, IMAGE_MODEL
    )
    assert main(files.run_args("--quiet")) == 0
    return files, arrays


@pytest.fixture(scope="module")
def csv_study(tmp_path_factory: pytest.TempPathFactory) -> StudyFiles:
    folder = tmp_path_factory.mktemp("csv")
    write_csv(folder / "train.csv", learnable_table(240, seed=0))
    write_csv(folder / "test.csv", learnable_table(90, seed=7))
    data = {
        "dataset": "csv",
        "root": str(folder / "train.csv"),
        "target": "species",
        "test": str(folder / "test.csv"),
        "batch_size": 16,
    }
    files = write_study(folder, "csv-eval", data, table_model(features=5), n_trials=2)
    with pytest.warns(UserWarning, match="imputed"):
        assert main(files.run_args("--quiet")) == 0
    return files


def test_mnist_test_split_matches_a_direct_computation(
    mnist_study: tuple[StudyFiles, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    files, arrays = mnist_study
    best = _best(files)
    rc, out, err = _evaluate(capsys, best.model_id, files.url, "--format", "json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["split"] == "test" and result["dataset"] == "mnist"
    assert result["samples"] == 150 == len(arrays["test_labels"])
    assert (result["model_id"], result["study"]) == (best.model_id, files.name)
    # The same numbers, computed by hand from the t10k arrays written above.
    _, model = load_model(best.checkpoint, expected_sha256=best.sha256)  # type: ignore[arg-type]
    model.eval()
    x = torch.from_numpy(arrays["test_images"].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    with torch.no_grad():
        logits = model(x)
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["accuracy"] > 0.6  # 10 classes: chance is 0.1


def test_table_output_and_the_validation_split(
    mnist_study: tuple[StudyFiles, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    files, _ = mnist_study
    best = _best(files)
    rc, out, err = _evaluate(capsys, best.model_id, files.url, "--study", files.name)
    assert rc == 0, err
    assert f"model {best.model_id} of study '{files.name}'" in out
    assert "test split of mnist: 150 samples: accuracy " in out and "loss " in out
    # --split val rebuilds the search's own split: it must give back the recorded accuracy.
    rc, out, err = _evaluate(capsys, best.model_id, files.url, "--split", "val", "--format", "json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["split"] == "val" and result["samples"] == 80  # 0.2 of 400
    assert result["accuracy"] == pytest.approx(best.val_accuracy, abs=1e-12)


def test_wrong_model_or_study(
    mnist_study: tuple[StudyFiles, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    files, _ = mnist_study
    rc, _, err = _evaluate(capsys, 999, files.url)
    assert rc == 2 and "no model with id 999 in this storage" in err
    rc, _, err = _evaluate(capsys, 1, files.url, "--study", "nope")
    assert rc == 2 and "no study named 'nope'" in err and "mnist-eval" in err
    rc, _, err = _evaluate(capsys, 1, f"sqlite:///{files.folder}/missing.db")
    assert rc == 2 and not (files.folder / "missing.db").exists()


def test_tampered_checkpoint_is_refused(
    mnist_study: tuple[StudyFiles, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    files, _ = mnist_study
    best = _best(files)
    path = Path(best.checkpoint)  # type: ignore[arg-type]
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-4] + bytes(b ^ 0xFF for b in original[-4:]))  # flip bits
        rc, out, err = _evaluate(capsys, best.model_id, files.url)
    finally:
        path.write_bytes(original)
    assert rc == 2 and out == ""
    assert "has sha256" in err and best.sha256 in err  # type: ignore[operator]


def test_moved_data_needs_data_root(
    mnist_study: tuple[StudyFiles, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files, _ = mnist_study
    best = _best(files)
    moved = tmp_path / "moved"
    shutil.copytree(files.folder / "idx", moved)
    rc, _, err = _evaluate(
        capsys, best.model_id, files.url, "--data-root", str(tmp_path / "elsewhere")
    )
    assert rc == 2
    assert "data.root: folder not found" in err and "--data-root" in err
    rc, out, err = _evaluate(capsys, best.model_id, files.url, "--data-root", str(moved))
    assert rc == 0, err
    assert "150 samples" in out
    # Without t10k files there is no test split: say what to do instead.
    for f in moved.glob("t10k-*"):
        f.unlink()
    rc, out, err = _evaluate(capsys, best.model_id, files.url, "--data-root", str(moved))
    assert rc == 2 and out == ""
    assert "has no test split" in err and "t10k-images-idx3-ubyte" in err
    assert "--split val" in err


@pytest.mark.filterwarnings("ignore:data. imputed:UserWarning")  # the gaps in 'height'
def test_csv_test_file(
    csv_study: StudyFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    best = _best(csv_study)
    rc, out, err = _evaluate(capsys, best.model_id, csv_study.url, "--format", "json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["dataset"] == "csv" and result["samples"] == 90
    assert result["accuracy"] > 0.8  # 3 classes: chance is 1/3
    # The validation split and its encoding (fitted on the training split) are rebuilt exactly.
    rc, out, _ = _evaluate(
        capsys, best.model_id, csv_study.url, "--split", "val", "--format", "json"
    )
    assert json.loads(out)["accuracy"] == pytest.approx(best.val_accuracy, abs=1e-12)
    # Another test file, given on the command line.
    other = write_csv(tmp_path / "other.csv", learnable_table(30, seed=11))
    rc, out, err = _evaluate(
        capsys, best.model_id, csv_study.url, "--test-file", str(other), "--format", "json"
    )
    assert rc == 0, err
    assert json.loads(out)["samples"] == 30


def test_dataset_without_test_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = {
        "input_shape": [1, 8, 8],
        "layers": [{"type": "flatten"}, {"type": "dense", "out": 10}],
    }
    files = write_study(
        tmp_path, "digits-eval", {"dataset": "digits"}, model, n_trials=1, train={"seed_epochs": 1}
    )
    assert main(files.run_args("--quiet")) == 0
    best = _best(files)
    rc, out, err = _evaluate(capsys, best.model_id, files.url)
    assert rc == 2 and out == ""
    assert "digits dataset of study 'digits-eval' comes without a test split" in err
    assert "--split val" in err
    rc, _, err = _evaluate(capsys, best.model_id, files.url, "--test-file", "x")
    assert rc == 2 and "--test-file is for csv/parquet data" in err
    rc, out, err = _evaluate(capsys, best.model_id, files.url, "--split", "val")
    assert rc == 0, err
    assert "validation split of digits: 359 samples" in out
    # A model that did not finish has no checkpoint to evaluate.
    with SQLLineageStore(files.url, create=False) as store:
        spec = best.spec
        mid = store.start_model(files.name, 99, None, "seed", [], spec, best.spec_hash, 1, 1, 0)
        store.fail_model(mid, "failed", "for the test")
    rc, _, err = _evaluate(capsys, mid, files.url)
    assert rc == 2 and "has status 'failed'" in err
