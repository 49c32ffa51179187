"""Tabular datasets: ``csv`` and ``parquet`` files read with pandas.

Preprocessing is fitted on the training split only, so validation and test rows never leak into
the statistics: numeric columns are imputed with the training mean then standardised; other
columns are one-hot encoded over the training categories (unseen or missing -> all zeros).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from growsearch.data._config import DataConfig, Dataset
from growsearch.data._registry import register_dataset, unused_field_problems
from growsearch.data._split import stratified_split
from growsearch.exceptions import ConfigError
from growsearch.spec._parse import did_you_mean

__all__ = ["TabularEncoder", "read_table"]

_COMPRESSED = {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}
_MANY_CATEGORIES = 100  # above this a column is probably an identifier: warn
_PARQUET_MAGIC = b"PAR1"


# ---- reading ----------------------------------------------------------------------------


def _has_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def _parquet_engine_problem(field: str) -> str | None:
    # pyarrow only: the column check reads the schema with it, and fastparquet alone would
    # pass this check and then fail there with an ImportError.
    if _has_pyarrow():
        return None
    return (
        f"{field}: reading Parquet files needs pyarrow, which is not installed; run "
        "`pip install pyarrow` (or `pip install 'growsearch[parquet]'`), or save the table as "
        "CSV and use data.dataset: csv"
    )


def _file_problem(path: Path, field: str, kind: str) -> str | None:
    """Whether ``path`` is a file of the right format, judged from its first and last bytes."""
    if not path.exists():
        return f"{field}: file not found: {path.resolve()}; check the path"
    if path.is_dir():
        return f"{field}: {path.resolve()} is a folder; the {kind} dataset needs a file path"
    with open(path, "rb") as f:
        head = f.read(8192)
        f.seek(max(0, path.stat().st_size - 4))
        tail = f.read(4)
    if kind == "parquet":
        if head[:4] != _PARQUET_MAGIC or tail != _PARQUET_MAGIC:
            hint = " (it looks like text: use data.dataset: csv)" if b"\0" not in head else ""
            return f"{field}: {path} is not a Parquet file{hint}"
        return _parquet_engine_problem(field)
    if path.suffix.lower() in _COMPRESSED:
        return None  # pandas decompresses by suffix; the parse below judges the content
    if head[:4] == _PARQUET_MAGIC:
        return f"{field}: {path} is a Parquet file, not CSV; set data.dataset: parquet"
    if b"\0" in head:
        return (
            f"{field}: {path} is not a CSV file (it holds binary data); give a comma-separated "
            "text file with a header row (UTF-8)"
        )
    if not head.strip():
        return f"{field}: {path} is empty; give a CSV file with a header row and data rows"
    return None


def read_table(
    path: Path, kind: str, field: str, columns: list[str] | None = None, nrows: int | None = None
) -> pd.DataFrame:
    """Read a csv or parquet file (``kind``); a file that is not one raises ConfigError."""
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path, columns=columns, engine="pyarrow")
            return frame.head(nrows) if nrows is not None else frame
        return pd.read_csv(path, usecols=columns, nrows=nrows, low_memory=False)
    except ImportError as e:  # no parquet engine
        raise ConfigError(_parquet_engine_problem(field) or str(e)) from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{field}: {path} is not a readable {kind.upper()} file ({first}); give a "
            "comma-separated UTF-8 text file with a header row"
        ) from e
    except (OSError, ValueError) as e:
        raise ConfigError(f"{field}: cannot read {path} as {kind} ({e})") from e


def _columns(path: Path, kind: str, field: str) -> list[str]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except (OSError, ValueError) as e:
            raise ConfigError(f"{field}: cannot read {path} as parquet ({e})") from e
        return [n for n in names if not n.startswith("__index_level_")]
    return [str(c) for c in read_table(path, kind, field, nrows=50).columns]


# ---- labels -----------------------------------------------------------------------------


def _label_names(values: pd.Series, target: str) -> np.ndarray:
    """Labels as strings; integral floats (pandas' way of holding ints next to NaN) as ints."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return values.astype(str).to_numpy(dtype=object)
    v = values.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(v) & (v == np.round(v))):
        bad = v[~(np.isfinite(v) & (v == np.round(v)))][0]
        raise ConfigError(
            f"data.target: column '{target}' holds non-integer numbers (e.g. {bad}); growsearch "
            "trains classifiers, so the target must be a column of class labels"
        )
    return v.astype(np.int64).astype(str).astype(object)


def _sorted_classes(names: np.ndarray) -> list[str]:
    uniq = [str(u) for u in pd.unique(names)]
    try:
        return sorted(uniq, key=int)  # "2" before "10"
    except ValueError:
        return sorted(uniq)


def _class_problems(names: np.ndarray, target: str) -> list[str]:
    classes = _sorted_classes(names)
    if len(classes) < 2:
        return [
            f"data.target: column '{target}' has {len(classes)} class "
            f"({', '.join(classes) or 'no labelled rows'}); a classifier needs at least 2"
        ]
    return []


# ---- the encoder ------------------------------------------------------------------------


def _numeric(values: pd.Series) -> np.ndarray:
    v = values.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)  # writable
    v[~np.isfinite(v)] = np.nan  # inf would poison the statistics: treat it as missing
    return v


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


@dataclass(frozen=True)
class TabularEncoder:
    """Feature and label encoding fitted on the training split; JSON round-trips via to_dict."""

    target: str
    classes: tuple[str, ...]
    numeric: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]  # (column, training categories)

    @classmethod
    def fit(cls, train: pd.DataFrame, target: str, classes: list[str]) -> TabularEncoder:
        numeric, means, stds, categorical = [], [], [], []
        for col in train.columns:
            if col == target:
                continue
            if _is_numeric(train[col]):
                v = _numeric(train[col])
                ok = ~np.isnan(v)
                mean = float(v[ok].mean()) if ok.any() else 0.0
                # std of the imputed column, so the training split ends with std 1 exactly
                std = float(np.sqrt(((v[ok] - mean) ** 2).sum() / len(v))) if len(v) else 0.0
                numeric.append(str(col))
                means.append(mean)
                stds.append(std if std > 0 else 1.0)  # constant column: centre it, no scaling
            else:
                cats = tuple(sorted(train[col].dropna().astype(str).unique()))
                if len(cats) > _MANY_CATEGORIES:
                    warnings.warn(
                        f"data: column '{col}' has {len(cats)} categories and adds as many "
                        "inputs; drop it if it is an identifier",
                        UserWarning,
                        stacklevel=3,
                    )
                categorical.append((str(col), cats))
        return cls(
            target, tuple(classes), tuple(numeric), tuple(means), tuple(stds), tuple(categorical)
        )

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for col, cats in self.categorical:
            names += [f"{col}={c}" for c in cats]
        return names

    def missing_columns(self, frame: pd.DataFrame) -> list[str]:
        have = {str(c) for c in frame.columns}
        return [c for c in (*self.numeric, *(c for c, _ in self.categorical)) if c not in have]

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        """(float32 features (N, D), number of imputed values per numeric column)."""
        missing = self.missing_columns(frame)
        if missing:
            raise ConfigError(f"data: the table lacks feature columns {', '.join(missing)}")
        frame = frame.rename(columns=str)
        blocks, imputed = [], {}
        for col, mean, std in zip(self.numeric, self.means, self.stds, strict=True):
            v = _numeric(frame[col])
            gaps = np.isnan(v)
            if gaps.any():
                imputed[col] = int(gaps.sum())
                v[gaps] = mean
            blocks.append(((v - mean) / std)[:, None])
        for col, cats in self.categorical:
            values = frame[col].astype(str).where(frame[col].notna())  # missing stays NaN
            codes = pd.Index(cats).get_indexer(values)  # -1: unseen or missing
            onehot = np.zeros((len(frame), len(cats)))
            rows = np.flatnonzero(codes >= 0)
            onehot[rows, codes[rows]] = 1.0
            blocks.append(onehot)
        x = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
        return x.astype(np.float32), imputed

    def encode_labels(self, values: pd.Series, field: str = "data.target") -> np.ndarray:
        names = _label_names(values, self.target)
        codes = pd.Index(self.classes).get_indexer(names)
        if (codes < 0).any():
            unseen = sorted({str(n) for n in names[codes < 0]})[:10]
            raise ConfigError(
                f"{field}: labels {', '.join(unseen)} of column '{self.target}' do not occur in "
                f"the training data (classes: {', '.join(self.classes)})"
            )
        return codes.astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "classes": list(self.classes),
            "numeric": [
                {"column": c, "mean": m, "std": s}
                for c, m, s in zip(self.numeric, self.means, self.stds, strict=True)
            ],
            "categorical": [{"column": c, "categories": list(k)} for c, k in self.categorical],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TabularEncoder:
        return cls(
            target=raw["target"],
            classes=tuple(raw["classes"]),
            numeric=tuple(n["column"] for n in raw["numeric"]),
            means=tuple(float(n["mean"]) for n in raw["numeric"]),
            stds=tuple(float(n["std"]) for n in raw["numeric"]),
            categorical=tuple((c["column"], tuple(c["categories"])) for c in raw["categorical"]),
        )


# ---- check and load ---------------------------------------------------------------------


def _list(columns: list[str], limit: int = 30) -> str:
    more = f", ... ({len(columns) - limit} more)" if len(columns) > limit else ""
    return ", ".join(columns[:limit]) + more


def _check_tabular(cfg: DataConfig) -> list[str]:
    kind = cfg.dataset
    problems = unused_field_problems(cfg, used=("root", "target", "test"))
    columns: list[str] | None = None
    if cfg.root is None:
        problems.append(
            f"data.root: the {kind} dataset needs the path of the {kind} file; set "
            f"data.root: path/to/table.{kind}"
        )
    else:
        path = Path(cfg.root).expanduser()
        problem = _file_problem(path, "data.root", kind)
        if problem is not None:
            problems.append(problem)
        else:
            try:
                columns = _columns(path, kind, "data.root")
            except ConfigError as e:
                problems += e.problems
    if columns is not None:
        problems += _target_problems(cfg, Path(cfg.root).expanduser(), columns)  # type: ignore[arg-type]
    if cfg.test is not None:
        test_path = Path(cfg.test).expanduser()
        problem = _file_problem(test_path, "data.test", kind)
        if problem is not None:
            problems.append(problem)
        elif columns is not None:
            try:
                have = set(_columns(test_path, kind, "data.test"))
            except ConfigError as e:
                return problems + e.problems
            lacking = [c for c in columns if c not in have]
            if lacking:
                problems.append(
                    f"data.test: {test_path} lacks columns of the training file: "
                    f"{_list(lacking)}; the test file needs the same columns"
                )
    return problems


def _target_problems(cfg: DataConfig, path: Path, columns: list[str]) -> list[str]:
    if cfg.target is None:
        return [
            f"data.target: the {cfg.dataset} dataset needs the name of the label column; "
            f"the columns of {path.name} are: {_list(columns)}"
        ]
    if cfg.target not in columns:
        hint = did_you_mean(cfg.target, columns)
        return [
            f"data.target: no column '{cfg.target}' in {path.name}{hint}; its columns are: "
            f"{_list(columns)}"
        ]
    if len(columns) < 2:
        return [f"data.root: {path.name} has no feature columns besides '{cfg.target}'"]
    try:
        labels = read_table(path, cfg.dataset, "data.root", columns=[cfg.target])[cfg.target]
        return _class_problems(_label_names(labels.dropna(), cfg.target), cfg.target)
    except ConfigError as e:
        return e.problems


def _labelled(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, int]:
    """Rows with a label (string column names), and how many were dropped for lacking one."""
    frame = frame.rename(columns=str)
    keep = frame[target].notna()
    return frame.loc[keep].reset_index(drop=True), int((~keep).sum())


def _load_tabular(cfg: DataConfig, seed: int) -> Dataset:
    kind, target = cfg.dataset, str(cfg.target)
    frame, unlabelled = _labelled(
        read_table(Path(str(cfg.root)).expanduser(), kind, "data.root"), target
    )
    names = _label_names(frame[target], target)
    problems = _class_problems(names, target)
    if problems:
        raise ConfigError(problems)
    classes = _sorted_classes(names)
    y = pd.Index(classes).get_indexer(names).astype(np.int64)
    train_idx, val_idx = stratified_split(y, cfg.val_fraction, seed)
    enc = TabularEncoder.fit(frame.iloc[train_idx], target, classes)
    x_train, imputed = enc.transform(frame.iloc[train_idx])
    x_val, more = enc.transform(frame.iloc[val_idx])
    x_test = y_test = None
    if cfg.test is not None:
        test_frame = read_table(Path(cfg.test).expanduser(), kind, "data.test")
        test, dropped = _labelled(test_frame, target)
        unlabelled += dropped
        x_test_np, test_imputed = enc.transform(test)
        y_test = torch.from_numpy(enc.encode_labels(test[target], "data.test"))
        x_test = torch.from_numpy(x_test_np)
        more = {c: more.get(c, 0) + test_imputed.get(c, 0) for c in {*more, *test_imputed}}
    imputed = {c: imputed.get(c, 0) + more.get(c, 0) for c in {*imputed, *more}}
    _warn_gaps(imputed, unlabelled, target)
    return Dataset(
        name=kind,
        input_shape=(x_train.shape[1],),
        num_classes=len(classes),
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y[train_idx]),
        x_val=torch.from_numpy(x_val),
        y_val=torch.from_numpy(y[val_idx]),
        x_test=x_test,
        y_test=y_test,
        feature_names=enc.feature_names,
        class_names=classes,
        preprocessing=enc,
    )


def _warn_gaps(imputed: dict[str, int], unlabelled: int, target: str) -> None:
    if imputed:
        per_column = ", ".join(f"{c}: {n}" for c, n in sorted(imputed.items()))
        warnings.warn(
            f"data: imputed {sum(imputed.values())} missing (or infinite) numeric values with the "
            f"training mean ({per_column})",
            UserWarning,
            stacklevel=4,
        )
    if unlabelled:
        warnings.warn(
            f"data: dropped {unlabelled} rows without a value in the target column '{target}'",
            UserWarning,
            stacklevel=4,
        )


@register_dataset("csv", check=_check_tabular)
def load_csv(cfg: DataConfig, seed: int) -> Dataset:
    """A CSV file with a header row; ``data.target`` names the label column."""
    return _load_tabular(cfg, seed)


@register_dataset("parquet", check=_check_tabular)
def load_parquet(cfg: DataConfig, seed: int) -> Dataset:
    """A Parquet file (needs pyarrow); ``data.target`` names the label column."""
    return _load_tabular(cfg, seed)
