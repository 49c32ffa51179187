"""Image datasets: ``digits`` (bundled with scikit-learn) and ``mnist`` / ``fashion_mnist`` from
the standard IDX files in a local folder. Nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from growsearch.data._config import DataConfig, Dataset
from growsearch.data._idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_idx_header
from growsearch.data._registry import register_dataset, unused_field_problems
from growsearch.data._split import stratified_split
from growsearch.exceptions import ConfigError

__all__ = ["FASHION_CLASSES", "IDX_FILES", "find_idx_folder"]

# The four files of the MNIST format (each may also be gzipped: name + ".gz").
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_NUM_CLASSES = 10  # mnist and fashion_mnist alike
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _images_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    cfg: DataConfig,
    seed: int,
    scale: float,
    class_names: list[str],
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """(N, H, W) numbers in [0, scale] -> split, float32 (N, 1, H, W) tensors in [0, 1]."""
    train_idx, val_idx = stratified_split(y, cfg.val_fraction, seed)

    def images(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).div_(scale)
        return t.unsqueeze(1)  # (N, 1, H, W)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(
        name=name,
        input_shape=(1, *x.shape[1:]),
        num_classes=len(class_names),
        x_train=images(x[train_idx]),
        y_train=labels(y[train_idx]),
        x_val=images(x[val_idx]),
        y_val=labels(y[val_idx]),
        x_test=images(test[0]) if test is not None else None,
        y_test=labels(test[1]) if test is not None else None,
        feature_names=None,
        class_names=class_names,
    )


def _check_labels(y: np.ndarray, path: Path, dataset: str, need_two: bool = True) -> None:
    if len(y) and int(y.max()) >= _NUM_CLASSES:
        raise ConfigError(
            f"data.root: {path.name} holds label {int(y.max())}; {dataset} labels are "
            f"0..{_NUM_CLASSES - 1}; use the files of the {dataset} dataset"
        )
    if need_two and len(np.unique(y)) < 2:
        raise ConfigError(
            f"data.root: {path.name} holds fewer than 2 classes; a classifier needs examples "
            "of at least 2 classes"
        )


# ---- digits -------------------------------------------------------------------------------


def _check_digits(cfg: DataConfig) -> list[str]:
    return unused_field_problems(cfg, used=())


@register_dataset("digits", check=_check_digits)
def load_digits(cfg: DataConfig, seed: int) -> Dataset:
    """scikit-learn's 1797 8x8 digit images (values 0..16), bundled: no download."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return _images_dataset(
        "digits", bunch.images, bunch.target, cfg, seed, 16.0, [str(d) for d in range(10)]
    )


# ---- mnist / fashion_mnist -----------------------------------------------------------------


def _variants(base: str) -> list[str]:
    # Some mirrors (Kaggle) spell "train-images.idx3-ubyte" with a dot.
    names = [base, base.replace("-idx", ".idx")]
    return [v for n in names for v in (n, n + ".gz")]


def _find_file(folder: Path, base: str) -> Path | None:
    for candidate in _variants(base):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def find_idx_folder(root: Path, dataset: str) -> Path:
    """``root`` itself, or the ``raw`` folder a torchvision download leaves, whichever has the
    training images (``root`` when none has)."""
    sub = _TORCHVISION_FOLDER.get(dataset, "")
    for folder in (root, root / "raw", root / sub / "raw"):
        if _find_file(folder, IDX_FILES["train_images"]) is not None:
            return folder
    return root


def _locate(cfg: DataConfig) -> tuple[dict[str, Path], list[str]]:
    """The IDX files present, and the problems that stop loading."""
    if cfg.root is None:
        return {}, [
            f"data.root: the {cfg.dataset} dataset needs the folder holding its IDX files "
            f"({', '.join(IDX_FILES.values())}, optionally .gz); set data.root: path/to/folder"
        ]
    root = Path(cfg.root).expanduser()
    if not root.exists():
        return {}, [f"data.root: folder not found: {root.resolve()}; check the path"]
    if not root.is_dir():
        return {}, [
            f"data.root: {root.resolve()} is a file; the {cfg.dataset} dataset needs the "
            "folder that holds its IDX files"
        ]
    folder = find_idx_folder(root, cfg.dataset)
    found = {key: _find_file(folder, base) for key, base in IDX_FILES.items()}
    files = {key: path for key, path in found.items() if path is not None}
    missing = [IDX_FILES[k] for k in ("train_images", "train_labels") if k not in files]
    has_test = [k in files for k in ("test_images", "test_labels")]
    if any(has_test) and not all(has_test):  # half a test split is a broken download
        missing += [IDX_FILES[k] for k in ("test_images", "test_labels") if k not in files]
    if missing:
        return files, [
            f"data.root: {folder.resolve()} lacks {', '.join(missing)} (or the same name + "
            f".gz); a {cfg.dataset} folder holds {', '.join(IDX_FILES.values())}"
        ]
    return files, []


def _check_idx(cfg: DataConfig) -> list[str]:
    problems = unused_field_problems(cfg, used=("root",))
    files, missing = _locate(cfg)
    if missing:
        return problems + missing
    headers = {}
    for key, path in files.items():
        magic = IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC
        try:
            headers[key] = read_idx_header(path, magic)
        except ConfigError as e:
            problems += e.problems
    for split in ("train", "test"):
        images, labels = headers.get(f"{split}_images"), headers.get(f"{split}_labels")
        if images is not None and labels is not None and images.dims[0] != labels.dims[0]:
            problems.append(
                f"data.root: {files[f'{split}_images'].name} holds {images.dims[0]} images but "
                f"{files[f'{split}_labels'].name} holds {labels.dims[0]} labels; the two files "
                "come from different downloads"
            )
    if "train_labels" in headers:
        try:  # label files are small (60 kB for MNIST): read them to count the classes
            y = read_idx(files["train_labels"], LABELS_MAGIC)
            _check_labels(y, files["train_labels"], cfg.dataset)
        except ConfigError as e:
            problems += e.problems
    train_hw = headers["train_images"].dims[1:] if "train_images" in headers else None
    test_hw = headers["test_images"].dims[1:] if "test_images" in headers else None
    if train_hw is not None and test_hw is not None and train_hw != test_hw:
        problems.append(
            f"data.root: training images are {train_hw} but test images are {test_hw}; use "
            "the files of one dataset"
        )
    return problems


def _load_idx(cfg: DataConfig, seed: int, class_names: list[str]) -> Dataset:
    files, _ = _locate(cfg)

    def pair(split: str) -> tuple[np.ndarray, np.ndarray]:
        x = read_idx(files[f"{split}_images"], IMAGES_MAGIC)
        y = read_idx(files[f"{split}_labels"], LABELS_MAGIC)
        _check_labels(y, files[f"{split}_labels"], cfg.dataset, need_two=split == "train")
        if len(x) != len(y):  # the check compared headers; this guards direct callers
            raise ConfigError(
                f"data.root: {len(x)} {split} images but {len(y)} labels; the files come "
                "from different downloads"
            )
        return x, y

    x, y = pair("train")
    test = pair("test") if "test_images" in files else None
    return _images_dataset(cfg.dataset, x, y, cfg, seed, 255.0, class_names, test)


@register_dataset("mnist", check=_check_idx)
def load_mnist(cfg: DataConfig, seed: int) -> Dataset:
    """Handwritten digits, (1, 28, 28) in [0, 1]; the t10k files are the test split."""
    return _load_idx(cfg, seed, [str(d) for d in range(10)])


@register_dataset("fashion_mnist", check=_check_idx)
def load_fashion_mnist(cfg: DataConfig, seed: int) -> Dataset:
    """Zalando's clothing images in the MNIST format; the t10k files are the test split."""
    return _load_idx(cfg, seed, list(FASHION_CLASSES))
