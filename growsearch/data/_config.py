"""What to load (``DataConfig``) and what loading gives (``Dataset``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from growsearch.data._tabular import TabularEncoder

__all__ = ["DataConfig", "Dataset", "data_config"]


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    root: str | None = None  # IDX folder (mnist, fashion_mnist) or file path (csv, parquet)
    target: str | None = None  # csv/parquet: the label column
    val_fraction: float = 0.2
    batch_size: int = 64
    # Train + validation tensors up to this size live on the accelerator; larger ones stream.
    max_device_bytes: int = 1 << 30
    test: str | None = None  # csv/parquet: optional file with the held-out test split


@dataclass
class Dataset:
    """Split, preprocessed data as CPU tensors: inputs float32, labels int64 in 0..K-1."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor | None
    y_test: Tensor | None
    feature_names: list[str] | None
    class_names: list[str] | None
    # Tabular data only: the statistics fitted on the training split (reused for the test split
    # and anything scored later, so every split is encoded the same way).
    preprocessing: TabularEncoder | None = None

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.x_val.shape[0])

    @property
    def has_test(self) -> bool:
        return self.x_test is not None and self.y_test is not None


def data_config(study: Any) -> DataConfig:
    """The DataConfig of a study config: any object whose ``data`` section has (some of) the
    DataConfig field names; absent ones keep their defaults."""
    section = study.data
    names = [f.name for f in fields(DataConfig)]
    return DataConfig(**{n: getattr(section, n) for n in names if hasattr(section, n)})
