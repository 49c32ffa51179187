"""Learnable synthetic data (IDX images and tables) and study YAML files for end-to-end CLI tests.

``_datafiles`` writes files that test the readers (random pixels, indices in the corners); these
carry a signal a tiny model learns in an epoch or two, so a whole study can run in seconds and
its accuracy can be compared with chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tests._datafiles import IDX_NAMES, write_idx

__all__ = [
    "StudyFiles",
    "learnable_images",
    "learnable_table",
    "write_learnable_idx",
    "write_study",
]


def learnable_images(
    n: int, size: int = 12, classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (n, size, size), uint8 labels (n,)): each class is a fixed random binary
    pattern (the same for every ``seed``, so training and test files agree) plus pixel noise."""
    templates = np.random.default_rng(1234).random((classes, size, size)) < 0.5
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % classes).astype(np.uint8)
    rng.shuffle(labels)
    noise = rng.normal(0, 45, (n, size, size))
    images = np.clip(templates[labels] * 170.0 + 40.0 + noise, 0, 255).astype(np.uint8)
    return images, labels


def write_learnable_idx(
    root: Path,
    *,
    n_train: int = 400,
    n_test: int = 100,
    size: int = 12,
    gz: bool = True,
    test: bool = True,
) -> dict[str, np.ndarray]:
    """An MNIST-format folder of ``learnable_images``; returns the arrays written."""
    root.mkdir(parents=True, exist_ok=True)
    x, y = learnable_images(n_train, size, seed=0)
    arrays = {"train_images": x, "train_labels": y}
    if test:
        xt, yt = learnable_images(n_test, size, seed=1)
        arrays |= {"test_images": xt, "test_labels": yt}
    suffix = ".gz" if gz else ""
    for key, array in arrays.items():
        write_idx(root / (IDX_NAMES[key] + suffix), array)
    return arrays


def learnable_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Three species told apart by two numeric features (with gaps) and a categorical one:
    well separated, so a small MLP is near-perfect, yet every preprocessing path is used."""
    rng = np.random.default_rng(seed)
    species = np.array(["ash", "birch", "cedar"], dtype=object)[np.arange(n) % 3]
    rng.shuffle(species)
    code = np.array([{"ash": 0, "birch": 1, "cedar": 2}[s] for s in species])
    height = 10.0 + 6.0 * code + rng.normal(0, 1.0, n)
    girth = 50.0 - 15.0 * (code == 1) + rng.normal(0, 3.0, n)
    height[rng.choice(n, size=n // 20, replace=False)] = np.nan
    bark = np.where(code == 2, "rough", np.where(rng.random(n) < 0.5, "smooth", "flaky"))
    return pd.DataFrame(
        {"height": height, "girth": girth, "bark": bark.astype(object), "species": species}
    )


@dataclass
class StudyFiles:
    folder: Path
    yaml: Path
    name: str

    @property
    def db(self) -> Path:
        return self.folder / "study.db"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "ckpt"

    def run_args(self, *extra: str) -> list[str]:
        return ["run", str(self.yaml), *extra]


def write_study(
    folder: Path,
    name: str,
    data: dict[str, Any],
    model: dict[str, Any],
    *,
    n_trials: int = 3,
    train: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
) -> StudyFiles:
    """A study YAML in ``folder`` with its database and checkpoints in the same folder."""
    files = StudyFiles(folder, folder / f"{name}.yaml", name)
    doc = {
        "name": name,
        "storage": files.url,
        "n_trials": n_trials,
        "seed": 0,
        "data": data,
        "model": model,
        "train": {
            "epochs_per_trial": 1,
            "seed_epochs": 4,
            "optimizer": "adam",
            "lr": 0.01,
            "device": "cpu",
            **(train or {}),
        },
        # No pruning: three trials are too few for a pruner to judge, and the test wants three
        # finished models.
        "search": {"operations": ["widen", "deepen"], "pruner": "none", **(search or {})},
        "checkpoint_dir": str(files.checkpoints),
    }
    files.yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    return files


IMAGE_MODEL = {
    "input_shape": [1, 12, 12],
    "layers": [
        {"type": "conv", "out": 4, "kernel": 3, "activation": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "out": 16, "activation": "relu"},
        {"type": "dense", "out": 10},
    ],
}


def table_model(features: int, classes: int = 3) -> dict[str, Any]:
    return {
        "input_shape": [features],
        "layers": [
            {"type": "dense", "out": 12, "activation": "relu"},
            {"type": "dense", "out": classes},
        ],
    }
