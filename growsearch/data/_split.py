"""Stratified, seeded train/validation split."""

from __future__ import annotations

import numpy as np

from growsearch.exceptions import ConfigError

__all__ = ["stratified_split"]


def stratified_split(
    y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each in a seeded random order.

    The validation size is ``round(n * val_fraction)``, shared out over the classes in proportion
    to their sizes (largest remainders first), never taking a class's last training sample.
    """
    y = np.asarray(y)
    n = len(y)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * val_fraction
    take = np.floor(quota).astype(np.int64)
    take = np.minimum(take, counts - 1)
    missing = round(n * val_fraction) - int(take.sum())
    # Ties broken by class order (the stable sort) so the split depends on the seed alone.
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    for c in order:
        if missing <= 0:
            break
        if take[c] + 1 <= counts[c] - 1:
            take[c] += 1
            missing -= 1
    train_parts, val_parts = [], []
    for c, k in zip(classes, take, strict=True):
        members = rng.permutation(np.flatnonzero(y == c))
        val_parts.append(members[:k])
        train_parts.append(members[k:])
    train_idx = rng.permutation(np.concatenate(train_parts))
    val_idx = rng.permutation(np.concatenate(val_parts))
    if len(val_idx) == 0:
        raise ConfigError(
            f"data.val_fraction: {val_fraction} of {n} samples leaves no validation sample; "
            "raise data.val_fraction or use more data"
        )
    return train_idx, val_idx
