"""Bad data input through ``growsearch run``: one clear message, exit code 2, and nothing written
(no database, no lock file, no checkpoint folder)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from growsearch.cli import main
from tests._datafiles import IDX_NAMES, write_csv, write_idx, write_parquet
from tests._studyfiles import (
    IMAGE_MODEL,
    learnable_images,
    learnable_table,
    table_model,
    write_learnable_idx,
    write_study,
)

# A case's table has gaps, which loading reports as a warning before the real problem is found.
pytestmark = pytest.mark.filterwarnings("ignore:data. imputed:UserWarning")

# Each case writes its data into the folder and returns (data section, model, expected message
# fragments).
Case = Callable[[Path], tuple[dict[str, Any], dict[str, Any], list[str]]]


def _mnist_folder_missing(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    return (
        {"dataset": "mnist", "root": str(d / "no-such-folder")},
        IMAGE_MODEL,
        ["data.root: folder not found", "no-such-folder", "check the path"],
    )


def _csv_file_missing(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    return (
        {"dataset": "csv", "root": str(d / "trees.csv"), "target": "species"},
        table_model(5),
        ["data.root: file not found", "trees.csv", "check the path"],
    )


def _csv_wrong_target(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    write_csv(d / "trees.csv", learnable_table(60))
    return (
        {"dataset": "csv", "root": str(d / "trees.csv"), "target": "specie"},
        table_model(5),
        [
            "data.target: no column 'specie' in trees.csv (did you mean 'species'?)",
            "its columns are: height, girth, bark, species",
        ],
    )


def _csv_test_file_wrong_columns(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    write_csv(d / "trees.csv", learnable_table(60))
    write_csv(d / "test.csv", learnable_table(20).drop(columns=["girth"]))
    return (
        {"dataset": "csv", "root": str(d / "trees.csv"), "target": "species",
         "test": str(d / "test.csv")},
        table_model(5),
        ["data.test:", "lacks columns of the training file: girth"],
    )  # fmt: skip


def _idx_count_mismatch(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    write_learnable_idx(d / "idx", n_train=100)
    _, labels = learnable_images(90)
    write_idx(d / "idx" / (IDX_NAMES["train_labels"] + ".gz"), labels)
    return (
        {"dataset": "mnist", "root": str(d / "idx")},
        IMAGE_MODEL,
        [
            "train-images-idx3-ubyte.gz holds 100 images but train-labels-idx1-ubyte.gz "
            "holds 90 labels",
            "different downloads",
        ],
    )


def _idx_not_idx(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    write_learnable_idx(d / "idx", gz=False)
    # A CSV saved under the name of the training images.
    write_csv(d / "idx" / IDX_NAMES["train_images"], learnable_table(20))
    return (
        {"dataset": "mnist", "root": str(d / "idx")},
        IMAGE_MODEL,
        ["train-images-idx3-ubyte: not an IDX images file (magic 0x", "unmodified file"],
    )


def _csv_given_idx(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    write_learnable_idx(d / "idx", gz=False)
    path = d / "idx" / IDX_NAMES["train_images"]
    return (
        {"dataset": "csv", "root": str(path), "target": "label"},
        table_model(5),
        ["is not a CSV file (it holds binary data)", "comma-separated text file"],
    )


def _csv_given_parquet(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    write_parquet(d / "trees.parquet", learnable_table(30))
    return (
        {"dataset": "csv", "root": str(d / "trees.parquet"), "target": "species"},
        table_model(5),
        ["is a Parquet file, not CSV; set data.dataset: parquet"],
    )


def _parquet_given_csv(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    write_csv(d / "trees.csv", learnable_table(30))
    return (
        {"dataset": "parquet", "root": str(d / "trees.csv"), "target": "species"},
        table_model(5),
        ["is not a Parquet file (it looks like text: use data.dataset: csv)"],
    )


def _seed_does_not_fit(d: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    write_csv(d / "trees.csv", learnable_table(60))
    return (
        {"dataset": "csv", "root": str(d / "trees.csv"), "target": "species"},
        table_model(4, classes=2),
        ["model.input_shape is [4] but the data has samples of shape [5]", "3 classes"],
    )


CASES: dict[str, Case] = {
    "mnist folder missing": _mnist_folder_missing,
    "csv file missing": _csv_file_missing,
    "csv target column misspelt": _csv_wrong_target,
    "csv test file lacks a column": _csv_test_file_wrong_columns,
    "idx image and label counts differ": _idx_count_mismatch,
    "idx file is not idx": _idx_not_idx,
    "csv dataset given an idx file": _csv_given_idx,
    "csv dataset given a parquet file": _csv_given_parquet,
    "parquet dataset given a csv file": _parquet_given_csv,
    "seed architecture does not fit the data": _seed_does_not_fit,
}


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_data_is_one_message_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, model, expected = CASES[case](tmp_path)
    files = write_study(tmp_path, "bad", data, model)
    before = _tree(tmp_path)
    rc = main(files.run_args())
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err.startswith("growsearch: error: ") and "Traceback" not in err
    for fragment in expected:
        assert fragment in err, err
    # Nothing was written: no database (nor its lock file), no checkpoint folder, nothing else.
    assert not files.db.exists()
    assert not files.checkpoints.exists()
    assert _tree(tmp_path) == before


def test_every_data_problem_is_listed_in_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(tmp_path / "trees.csv", learnable_table(30))
    data = {"dataset": "csv", "root": str(tmp_path / "trees.csv"), "target": "kind",
            "test": str(tmp_path / "missing-test.csv")}  # fmt: skip
    files = write_study(tmp_path, "bad", data, table_model(5))
    assert main(files.run_args()) == 2
    err = capsys.readouterr().err
    assert "2 problems:" in err
    assert "data.target: no column 'kind'" in err and "data.test: file not found" in err
    assert not files.db.exists() and not files.checkpoints.exists()
