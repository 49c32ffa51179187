"""Datasets: a registry of loaders (digits, mnist, fashion_mnist, csv, parquet) and the batches
one device trains on."""

from growsearch.data import _images, _tabular  # noqa: F401  (they register their datasets)
from growsearch.data._config import DataConfig, Dataset, data_config
from growsearch.data._device import DeviceData
from growsearch.data._idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from growsearch.data._images import FASHION_CLASSES, IDX_FILES
from growsearch.data._registry import (
    check_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from growsearch.data._split import stratified_split
from growsearch.data._tabular import TabularEncoder

__all__ = [
    "FASHION_CLASSES",
    "IDX_FILES",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "DataConfig",
    "Dataset",
    "DeviceData",
    "TabularEncoder",
    "check_dataset",
    "data_config",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "register_dataset",
    "stratified_split",
]
