"""The dataset registry (timm style) and the two entry points: ``load_dataset``, ``check_dataset``.

A dataset registers a loader ``(cfg, seed) -> Dataset`` and a cheap ``check(cfg) -> problems``.
``load_dataset`` runs every check first, so bad input is reported in one message before any
data is read in full (and long before anything is written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from growsearch.data._config import DataConfig, Dataset
from growsearch.exceptions import ConfigError
from growsearch.spec._parse import did_you_mean

__all__ = [
    "check_dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "unused_field_problems",
]

Loader = Callable[[DataConfig, int], Dataset]
Checker = Callable[[DataConfig], list[str]]


@dataclass(frozen=True)
class _Entry:
    load: Loader
    check: Checker


_REGISTRY: dict[str, _Entry] = {}


def _no_problems(cfg: DataConfig) -> list[str]:
    return []


def register_dataset(name: str, *, check: Checker | None = None) -> Callable[[Loader], Loader]:
    """Decorator: register ``fn(cfg, seed) -> Dataset`` under ``name`` (``data.dataset``)."""

    def decorate(fn: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset '{name}' is already registered")
        _REGISTRY[name] = _Entry(fn, check or _no_problems)
        return fn

    return decorate


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def unused_field_problems(cfg: DataConfig, used: tuple[str, ...]) -> list[str]:
    """A field set for a dataset that ignores it is almost always a mistake in study.yaml."""
    problems = []
    for field in ("root", "target", "test"):
        if field not in used and getattr(cfg, field) is not None:
            problems.append(
                f"data.{field}: the {cfg.dataset} dataset does not use it; remove data.{field}"
            )
    return problems


def _common_problems(cfg: DataConfig) -> list[str]:
    problems = []
    if cfg.dataset not in _REGISTRY:
        hint = did_you_mean(str(cfg.dataset), list_datasets())
        problems.append(
            f"data.dataset: unknown dataset {cfg.dataset!r}{hint}; choose one of "
            f"{', '.join(list_datasets())}"
        )
    vf = cfg.val_fraction
    if isinstance(vf, bool) or not isinstance(vf, int | float) or not 0 < vf < 1:
        problems.append(
            f"data.val_fraction: must be a number strictly between 0 and 1, got {vf!r} "
            "(0.2 keeps a fifth of the data for validation)"
        )
    bs = cfg.batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        problems.append(f"data.batch_size: must be a positive integer, got {bs!r} (e.g. 64)")
    mb = cfg.max_device_bytes
    if isinstance(mb, bool) or not isinstance(mb, int) or mb < 0:
        problems.append(f"data.max_device_bytes: must be a non-negative integer, got {mb!r}")
    return problems


def check_dataset(cfg: DataConfig) -> list[str]:
    """Every problem with ``cfg`` found without loading the data in full (empty if none)."""
    problems = _common_problems(cfg)
    entry = _REGISTRY.get(cfg.dataset)
    if entry is not None:
        problems += entry.check(cfg)
    return problems


def load_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Load, split (stratified, deterministic in ``seed``) and preprocess ``cfg.dataset``."""
    problems = check_dataset(cfg)
    if problems:
        raise ConfigError(problems)
    return _REGISTRY[cfg.dataset].load(cfg, seed)
