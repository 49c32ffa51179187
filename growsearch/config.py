"""study.yaml -> validated ``StudyConfig``. Every problem is collected and reported at once."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from growsearch.data import DataConfig, list_datasets
from growsearch.exceptions import ConfigError, SpecError
from growsearch.spec import Spec
from growsearch.spec._parse import did_you_mean
from growsearch.training import OPTIMIZERS, TrainConfig

__all__ = [
    "DEFAULT_STORAGE",
    "SearchSection",
    "StudyConfig",
    "WorkerSection",
    "checkpoint_window",
    "checkpoint_write_estimate",
    "data_section",
    "load_config",
    "parse_config",
]

DEFAULT_STORAGE = "sqlite:///growsearch.db"
OPERATIONS = ("widen", "deepen", "widen_kernel", "add_skip")

PARENT_POLICIES = ("best", "top_k", "pareto")
INIT_MODES = ("net2net", "random-pad", "random-init")
OBJECTIVES = ("val_accuracy", "params", "flops")
SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "nsgaii": "NSGAIISampler",
    "nsgaiii": "NSGAIIISampler",
    "qmc": "QMCSampler",
    "bruteforce": "BruteForceSampler",
}
PRUNERS = {
    "median": "MedianPruner",
    "none": "NopPruner",
    "nop": "NopPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "threshold": "ThresholdPruner",
    "patient": "PatientPruner",
    "wilcoxon": "WilcoxonPruner",
}


@dataclass(frozen=True)
class SearchSection:
    operations: tuple[str, ...] = ("widen", "deepen")
    parent: str = "best"
    top_k: int = 3
    sampler: str = "tpe"
    sampler_args: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    pruner_args: dict[str, Any] = field(default_factory=dict)
    init: str = "net2net"  # net2net (exact) | random-pad | random-init (ablation baselines)
    widen_factor: tuple[float, float] = (1.25, 2.0)
    deepen_kernels: tuple[int, ...] = (1, 3)
    max_ops_per_child: int = 1
    max_params: int | None = None
    max_depth: int | None = None
    time_budget_s: float | None = None
    objectives: tuple[str, ...] = ("val_accuracy",)
    optimizer_state: str = "fresh"  # fresh | grow (grow the parent's optimiser state)
    search_lr: tuple[float, float] | None = None  # let the sampler choose lr in this range
    search_epochs: tuple[int, int] | None = None  # let the sampler choose a child's epochs
    preservation_rtol: float = 1e-5
    probe_size: int = 256


# Serialising a checkpoint holds the GIL (safetensors), so the heartbeat thread is silent while a
# large checkpoint is written: about 0.85 s per 400 MB measured on a small CPU. We assume a slow
# 100 MB/s to size the grace period against search.max_params.
CHECKPOINT_BYTES_PER_S = 100e6


@dataclass(frozen=True)
class WorkerSection:
    heartbeat_interval: int = 10  # seconds between heartbeats of a running trial
    grace_period: int = 60  # a trial silent this long is failed and retried
    max_retry: int = 2  # retries of a trial whose worker died
    max_consecutive_failures: int = 10  # stop a worker that fails this many trials in a row
    # Pruned children are the search at work, not a failing worker, so they have their own,
    # larger limit: it only stops a study whose every child is pruned or refused (a duplicate,
    # over max_params) without one finishing in between.
    max_consecutive_pruned: int = 100


@dataclass(frozen=True)
class StudyConfig:
    name: str
    model: Spec
    storage: str = DEFAULT_STORAGE
    n_trials: int = 12
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchSection = field(default_factory=SearchSection)
    workers: WorkerSection = field(default_factory=WorkerSection)
    checkpoint_dir: str = "checkpoints"
    source: str | None = None  # the YAML file this came from

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot (stored in the lineage so a study can resume from the DB alone)."""
        out: dict[str, Any] = {
            "name": self.name,
            "storage": self.storage,
            "n_trials": self.n_trials,
            "seed": self.seed,
            "checkpoint_dir": self.checkpoint_dir,
            "model": self.model.to_dict(),
        }
        for section in ("data", "train", "search", "workers"):
            values = dataclasses.asdict(getattr(self, section))
            out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out

    def with_overrides(self, **overrides: Any) -> StudyConfig:
        """Apply CLI overrides (None values are ignored) and re-validate them."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        raw = self.to_dict()
        raw.update(changes)
        return parse_config(raw, source=self.source)


# ---- validation helpers --------------------------------------------------------------------
class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, msg: str) -> None:
        self.problems.append(msg)

    def section(self, raw: Any, where: str, cls: type) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(f"{where}: must be a mapping, got {type(raw).__name__}")
            return {}
        known = [f.name for f in dataclasses.fields(cls)]
        out = {}
        for key, value in raw.items():
            if key not in known:
                self.fail(f"{where}: unknown key '{key}'{did_you_mean(str(key), known)}")
            else:
                out[key] = value
        return out

    def integer(
        self, d: dict[str, Any], key: str, where: str, lo: int, allow_none: bool = False
    ) -> None:
        if key not in d:
            return
        v = d[key]
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            self.fail(f"{where}.{key}: must be an integer >= {lo}, got {v!r}")

    def number(
        self,
        d: dict[str, Any],
        key: str,
        where: str,
        ok: Callable[[float], bool],
        rule: str,
        allow_none: bool = False,
    ) -> None:
        if key not in d:
            return
        v = d[key]
        if v is None and allow_none:
            return
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or not math.isfinite(v)
            or not ok(v)
        ):
            self.fail(f"{where}.{key}: must be {rule}, got {v!r}")
        else:
            d[key] = float(v)

    def choice(self, d: dict[str, Any], key: str, where: str, choices: Any) -> None:
        if key not in d:
            return
        v = d[key]
        if not isinstance(v, str) or v not in choices:
            hint = did_you_mean(str(v), list(choices))
            self.fail(
                f"{where}.{key}: unknown value {v!r}{hint}; choose one of {', '.join(choices)}"
            )

    def string(self, d: dict[str, Any], key: str, where: str, allow_none: bool = False) -> None:
        if key not in d:
            return
        v = d[key]
        if v is None and allow_none:
            return
        if not isinstance(v, str) or not v.strip():
            self.fail(f"{where}.{key}: must be a non-empty string, got {v!r}")


def _check_data(c: _Checker, raw: Any) -> DataConfig:
    before = len(c.problems)
    d = c.section(raw, "data", DataConfig)
    # Which fields a dataset needs (root, target, ...) is checked by growsearch.data.check_dataset.
    c.choice(d, "dataset", "data", list_datasets())
    c.string(d, "root", "data", allow_none=True)
    c.string(d, "target", "data", allow_none=True)
    c.string(d, "test", "data", allow_none=True)
    c.number(d, "val_fraction", "data", lambda v: 0 < v < 1, "a number in (0, 1)")
    c.integer(d, "batch_size", "data", 1)
    c.integer(d, "max_device_bytes", "data", 0)
    return DataConfig(**d) if len(c.problems) == before else DataConfig()


def _check_train(c: _Checker, raw: Any) -> TrainConfig:
    before = len(c.problems)
    d = c.section(raw, "train", TrainConfig)
    c.integer(d, "epochs_per_trial", "train", 1)
    c.integer(d, "seed_epochs", "train", 1, allow_none=True)
    c.choice(d, "optimizer", "train", OPTIMIZERS)
    c.number(d, "lr", "train", lambda v: v > 0, "a positive number")
    c.number(d, "momentum", "train", lambda v: 0 <= v < 1, "a number in [0, 1)")
    c.number(d, "weight_decay", "train", lambda v: v >= 0, "a non-negative number")
    c.choice(d, "amp", "train", ("none", "bf16"))
    c.string(d, "device", "train")
    return TrainConfig(**d) if len(c.problems) == before else TrainConfig()


def _range(c: _Checker, d: dict[str, Any], key: str, lo: float, where: str) -> None:
    if key not in d or d[key] is None:
        return
    v = d[key]
    if (
        not isinstance(v, list | tuple)
        or len(v) != 2
        or any(isinstance(x, bool) or not isinstance(x, int | float) for x in v)
        or not (lo < v[0] <= v[1])
    ):
        c.fail(f"{where}.{key}: must be [low, high] with {lo} < low <= high, got {v!r}")
    else:
        d[key] = (float(v[0]), float(v[1]))


def _check_search(c: _Checker, raw: Any) -> SearchSection:
    before = len(c.problems)
    d = c.section(raw, "search", SearchSection)
    ops = d.get("operations", SearchSection.operations)
    if not isinstance(ops, list | tuple) or not ops:
        c.fail("search.operations: must be a non-empty list, e.g. [widen, deepen]")
    else:
        for op in ops:
            if op not in OPERATIONS:
                hint = did_you_mean(str(op), OPERATIONS)
                c.fail(
                    f"search.operations: unknown operation {op!r}{hint}; choose from "
                    f"{', '.join(OPERATIONS)}"
                )
        if len(set(ops)) != len(ops):
            c.fail("search.operations: lists an operation twice")
        d["operations"] = tuple(ops)
    c.choice(d, "parent", "search", PARENT_POLICIES)
    c.integer(d, "top_k", "search", 1)
    for key, table, example in (
        ("sampler", SAMPLERS, "TPESampler"),
        ("pruner", PRUNERS, "MedianPruner"),
    ):
        name = d.get(key)
        if key in d and (
            not isinstance(name, str) or (name.lower() not in table and name not in table.values())
        ):
            c.fail(
                f"search.{key}: unknown {key} {name!r}{did_you_mean(str(name), list(table))}; "
                f"choose one of {', '.join(table)} (or an Optuna class name such as {example})"
            )
    for key in ("sampler_args", "pruner_args"):
        if key in d and not isinstance(d[key], dict):
            c.fail(f"search.{key}: must be a mapping of keyword arguments")
    c.choice(d, "init", "search", INIT_MODES)
    _range(c, d, "widen_factor", 1.0, "search")
    if "deepen_kernels" in d:
        ks = d["deepen_kernels"]
        if (
            not isinstance(ks, list | tuple)
            or not ks
            or any(
                isinstance(k, bool) or not isinstance(k, int) or k not in (1, 3, 5, 7) for k in ks
            )
        ):
            c.fail(
                f"search.deepen_kernels: must be a list of odd sizes from 1, 3, 5, 7, got {ks!r}"
            )
        else:
            d["deepen_kernels"] = tuple(ks)
    c.integer(d, "max_ops_per_child", "search", 1)
    c.integer(d, "max_params", "search", 1, allow_none=True)
    c.integer(d, "max_depth", "search", 1, allow_none=True)
    c.number(d, "time_budget_s", "search", lambda v: v > 0, "a positive number", allow_none=True)
    if "objectives" in d:
        objs = d["objectives"]
        if (
            not isinstance(objs, list | tuple)
            or not objs
            or objs[0] != "val_accuracy"
            or any(o not in OBJECTIVES for o in objs)
            or len(set(objs)) != len(objs)
        ):
            c.fail(
                "search.objectives: must start with val_accuracy, optionally followed by params "
                f"and/or flops (minimised), got {objs!r}"
            )
        else:
            d["objectives"] = tuple(objs)
    c.choice(d, "optimizer_state", "search", ("fresh", "grow"))
    _range(c, d, "search_lr", 0.0, "search")
    if d.get("search_epochs") is not None:
        v = d["search_epochs"]
        if (
            not isinstance(v, list | tuple)
            or len(v) != 2
            or any(isinstance(x, bool) or not isinstance(x, int) for x in v)
            or not (1 <= v[0] <= v[1])
        ):
            c.fail(f"search.search_epochs: must be [low, high] integers with 1 <= low <= high, "
                   f"got {v!r}")  # fmt: skip
        else:
            d["search_epochs"] = (int(v[0]), int(v[1]))
    c.number(d, "preservation_rtol", "search", lambda v: v > 0, "a positive number")
    c.integer(d, "probe_size", "search", 1)
    if (
        len(c.problems) == before
        and d.get("parent") == "pareto"
        and len(d.get("objectives", ())) < 2
    ):
        c.fail(
            "search.parent: 'pareto' needs two or more search.objectives, "
            "e.g. [val_accuracy, params]"
        )
    return SearchSection(**d) if len(c.problems) == before else SearchSection()


def _check_workers(c: _Checker, raw: Any) -> WorkerSection:
    before = len(c.problems)
    d = c.section(raw, "workers", WorkerSection)
    for key in (
        "heartbeat_interval",
        "grace_period",
        "max_consecutive_failures",
        "max_consecutive_pruned",
    ):
        c.integer(d, key, "workers", 1)
    c.integer(d, "max_retry", "workers", 0)
    w = WorkerSection(**d) if len(c.problems) == before else WorkerSection()
    if len(c.problems) == before and w.grace_period < 2 * w.heartbeat_interval:
        c.fail(
            f"workers.grace_period ({w.grace_period}s) must be at least twice "
            f"workers.heartbeat_interval ({w.heartbeat_interval}s), or live trials would be "
            "declared dead; a grace period also has to cover a checkpoint write"
        )
    return w


_TOP_KEYS = (
    "name",
    "storage",
    "n_trials",
    "seed",
    "data",
    "model",
    "train",
    "search",
    "workers",
    "checkpoint_dir",
)


def parse_config(raw: Any, source: str | None = None) -> StudyConfig:
    """Validate a study mapping; raises ConfigError listing every problem."""
    c = _Checker()
    if not isinstance(raw, dict):
        raise ConfigError(
            "the file must contain a YAML mapping (name:, model:, data:, ...); "
            "see studies/digits.yaml",
            source,
        )
    raw = dict(raw)
    for key in raw:
        if key not in _TOP_KEYS:
            c.fail(f"unknown key '{key}'{did_you_mean(str(key), _TOP_KEYS)}")
    if "name" not in raw:
        c.fail("name: missing; give the study a name, e.g. name: digits-cnn")
    else:
        c.string(raw, "name", "study")
        name = raw["name"]
        if isinstance(name, str) and not 1 <= len(name.strip()) <= 512:  # Optuna's limit
            c.fail(f"name: must be 1 to 512 characters, got {len(name)}")
    c.string(raw, "storage", "study")
    c.integer(raw, "n_trials", "study", 1)
    c.integer(raw, "seed", "study", 0)
    seed = raw.get("seed", 0)
    if isinstance(seed, int) and seed > 2**32 - 1:  # what numpy and Optuna's samplers accept
        c.fail(f"seed: must be an integer from 0 to 4294967295, got {seed}")
    c.string(raw, "checkpoint_dir", "study")
    data = _check_data(c, raw.get("data"))
    train = _check_train(c, raw.get("train"))
    search = _check_search(c, raw.get("search"))
    workers = _check_workers(c, raw.get("workers"))
    spec: Spec | None = None
    if "model" not in raw:
        c.fail("model: missing; describe the seed architecture (input_shape and layers)")
    else:
        try:
            spec = Spec.from_dict(raw["model"], where="model")
        except SpecError as e:
            c.problems.extend(str(e).splitlines()[1:] if "problems in" in str(e) else [str(e)])
    if c.problems:
        raise ConfigError([p.strip().removeprefix("- ") for p in c.problems], source)
    cfg = StudyConfig(
        name=raw["name"],
        model=spec,  # type: ignore[arg-type]
        storage=raw.get("storage", DEFAULT_STORAGE),
        n_trials=raw.get("n_trials", 12),
        seed=raw.get("seed", 0),
        data=data,
        train=train,
        search=search,
        workers=workers,
        checkpoint_dir=raw.get("checkpoint_dir", "checkpoints"),
        source=source,
    )
    _check_constraints(cfg)
    return cfg


def _check_constraints(cfg: StudyConfig) -> None:
    problems = []
    if cfg.search.max_params is not None and cfg.model.num_params > cfg.search.max_params:
        problems.append(
            f"search.max_params ({cfg.search.max_params}) is below the seed model's "
            f"{cfg.model.num_params} parameters; raise it or shrink the seed"
        )
    if cfg.search.max_depth is not None and cfg.model.depth > cfg.search.max_depth:
        problems.append(
            f"search.max_depth ({cfg.search.max_depth}) is below the seed's depth {cfg.model.depth}"
        )
    window = checkpoint_window(cfg.workers)
    if cfg.search.max_params is not None:
        seconds = checkpoint_write_estimate(cfg.search.max_params, cfg.search.optimizer_state)
        if seconds > window:
            problems.append(
                f"workers.grace_period ({cfg.workers.grace_period}s) leaves {window:.0f}s beyond "
                f"one heartbeat interval, but writing a checkpoint of search.max_params "
                f"({cfg.search.max_params:,}) parameters may take ~{seconds:.0f}s, during which "
                "no heartbeat is sent; raise workers.grace_period to at least "
                f"{math.ceil(seconds + cfg.workers.heartbeat_interval)}"
            )
    if cfg.model.num_classes is None:
        problems.append(
            "model.layers: the last layer must produce class scores (a dense layer with "
            f"out = number of classes), but the output shape is {list(cfg.model.output_shape)}"
        )
    if problems:
        raise ConfigError(problems, cfg.source)


def checkpoint_window(workers: WorkerSection) -> float:
    """Seconds a live worker may stay silent (e.g. writing a checkpoint) before its trial is
    declared dead: the grace period less the heartbeat interval already elapsed."""
    return float(workers.grace_period - workers.heartbeat_interval)


def checkpoint_write_estimate(num_params: int, optimizer_state: str = "fresh") -> float:
    """Pessimistic seconds to write a float32 checkpoint of ``num_params`` parameters (the
    optimiser's state, when kept, can double or triple it)."""
    copies = 3 if optimizer_state == "grow" else 1
    return num_params * 4 * copies / CHECKPOINT_BYTES_PER_S


# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-3` and `rtol: 1e-5` load as strings.
# Everyone writes them, and YAML 1.2 (and every other tool) reads them as numbers, so we do too.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def _yaml12_floats(node: Any, key: object = None) -> Any:
    """``node`` with strings such as '1e-5' turned into floats (names stay strings)."""
    if isinstance(node, dict):
        return {k: _yaml12_floats(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_yaml12_floats(v, key) for v in node]
    if isinstance(node, str) and key != "name" and _EXPONENT_FLOAT.fullmatch(node.strip()):
        return float(node)
    return node


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study.yaml; every failure is a ConfigError naming the file."""
    return parse_config(_read_study_file(path), source=str(Path(path)))


def data_section(path: str | os.PathLike[str]) -> DataConfig | None:
    """The data section of a study file even when other sections are wrong, so ``validate`` can
    check the data in the same pass; None if the file or the section itself is unusable."""
    try:
        raw = _read_study_file(path)
    except ConfigError:
        return None
    if not isinstance(raw, dict):
        return None
    c = _Checker()
    data = _check_data(c, raw.get("data"))
    return None if c.problems else data


def _read_study_file(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such file; check the path (cwd is {Path.cwd()})", str(p))
    if p.is_dir():
        raise ConfigError("is a folder; pass the study YAML file inside it", str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the file: {e}", str(p)) from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"not valid YAML{where}: {problem}", str(p)) from None
    if raw is None:
        raise ConfigError("the file is empty; see studies/digits.yaml for an example", str(p))
    return _yaml12_floats(raw)
