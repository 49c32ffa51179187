"""Datasets for the benchmarks: growsearch's own loaders, optionally subsampled, and a labelled
synthetic MNIST-format folder that only proves the IDX code path (it is never a result)."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from growsearch.data import DataConfig, Dataset, load_dataset

__all__ = ["IDX_HELP", "load", "subsample", "write_synthetic_idx"]

IDX_HELP = (
    "folder holding the MNIST-format files train-images-idx3-ubyte, train-labels-idx1-ubyte "
    "(and optionally t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), each may be gzipped (.gz); "
    "a torchvision download folder (MNIST/raw) works too. Nothing is downloaded."
)


def subsample(ds: Dataset, max_train: int | None, max_val: int | None, seed: int) -> Dataset:
    """A random subset of the training and validation splits (same subset for every arm)."""
    gen = torch.Generator().manual_seed(seed)

    def pick(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        if n is None or n >= x.shape[0]:
            return x, y
        idx = torch.randperm(int(x.shape[0]), generator=gen)[:n]
        return x[idx].contiguous(), y[idx].contiguous()

    x_train, y_train = pick(ds.x_train, ds.y_train, max_train)
    x_val, y_val = pick(ds.x_val, ds.y_val, max_val)
    return dataclasses.replace(ds, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)


def load(
    dataset: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    batch_size: int = 64,
    max_train: int | None = None,
    max_val: int | None = None,
) -> Dataset:
    cfg = DataConfig(
        dataset=dataset,
        root=None if root is None else str(root),
        val_fraction=val_fraction,
        batch_size=batch_size,
    )
    return subsample(load_dataset(cfg, seed=seed), max_train, max_val, seed)


def _idx(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_synthetic_idx(root: Path, n_train: int = 2000, n_test: int = 500, seed: int = 0) -> Path:
    """Write a gzipped MNIST-format folder of 28x28 images: each class is a bright bar at its own
    place plus noise, so a CNN can learn it. It exercises the IDX loader and the benchmark's code;
    its numbers mean nothing about MNIST."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 120, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            row = 2 + int(label) * 2 + int(rng.integers(0, 2))
            images[i, row : row + 3, 4:24] = 255
        files = {f"{prefix}-images-idx3-ubyte.gz": images, f"{prefix}-labels-idx1-ubyte.gz": labels}
        for name, array in files.items():
            (root / name).write_bytes(gzip.compress(_idx(array)))
    return root
