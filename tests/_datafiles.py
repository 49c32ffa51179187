"""Small data files written on the fly: MNIST-format IDX folders (plain or gzipped) and tables
(CSV, Parquet when pyarrow is installed). Nothing is downloaded; other test modules reuse these.

Every synthetic image carries its own index in its first two pixels (``index // 256``,
``index % 256``), so a test can tell where each loaded sample came from after the shuffle.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array: big-endian magic and dimensions, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None, cut: int = 0) -> Path:
    """Write ``array`` as IDX (gzipped when ``path`` ends in .gz), dropping the last ``cut``
    bytes of the uncompressed data to fake a truncated file."""
    data = idx_bytes(array, magic)
    if cut:
        data = data[:-cut]
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def synthetic_images(
    n: int, size: int = 28, classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, size, size), labels uint8 (n,)); pixels 0 and 1 encode the index."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % classes).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    idx = np.arange(n)
    images[:, 0, 0] = idx // 256
    images[:, 0, 1] = idx % 256
    return images, labels


def image_index(x: np.ndarray) -> np.ndarray:
    """Recover the indices ``synthetic_images`` embedded, from loaded float images in [0, 1]."""
    px = np.rint(np.asarray(x)[:, 0, 0, :2] * 255).astype(np.int64)
    return px[:, 0] * 256 + px[:, 1]


def make_idx_folder(
    root: Path,
    *,
    n_train: int = 60,
    n_test: int = 20,
    size: int = 28,
    gz: bool = True,
    test: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write an MNIST-format folder; return the arrays written (keys as in ``IDX_NAMES``)."""
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    x, y = synthetic_images(n_train, size, seed=seed)
    arrays = {"train_images": x, "train_labels": y}
    if test:
        xt, yt = synthetic_images(n_test, size, seed=seed + 1)
        arrays |= {"test_images": xt, "test_labels": yt}
    for key, array in arrays.items():
        write_idx(root / (IDX_NAMES[key] + suffix), array)
    return arrays


def tabular_frame(n: int = 200, seed: int = 0, classes: int = 3) -> pd.DataFrame:
    """A table with an integer ``id``, two numeric features (``height`` has gaps), a categorical
    ``colour`` (with gaps) and an integer label ``species`` that depends on the features."""
    rng = np.random.default_rng(seed)
    species = np.arange(n) % classes
    rng.shuffle(species)
    height = rng.normal(170, 10, n) + 8 * species
    height[rng.choice(n, size=max(1, n // 20), replace=False)] = np.nan
    colours = np.array(["red", "green", "blue"], dtype=object)[rng.integers(0, 3, n)]
    colours[rng.choice(n, size=max(1, n // 25), replace=False)] = None
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "height": height,
            "weight": rng.normal(60, 5, n) - 4 * species,
            "colour": colours,
            "species": species,
        }
    )


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    """A real Parquet file when pyarrow is installed; otherwise a stand-in with the PAR1 magic at
    both ends (enough to get past the format check and reach the missing-engine message)."""
    if has_pyarrow():
        frame.to_parquet(path, index=False)
    else:
        path.write_bytes(b"PAR1" + b"\0" * 32 + b"PAR1")
    return path
