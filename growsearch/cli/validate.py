"""``growsearch validate STUDY.yaml``: check config, data and seed architecture without training."""

from __future__ import annotations

import argparse

from growsearch.config import StudyConfig, data_section, load_config
from growsearch.data import check_dataset, load_dataset
from growsearch.exceptions import ConfigError, UserError
from growsearch.fit import model_data_problems
from growsearch.storage_url import check_persistent_storage, check_storage_url, redact
from growsearch.training import check_train_config

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "validate",
        help="check a study YAML, its data and seed architecture; trains and writes nothing",
    )
    p.add_argument("study_yaml", metavar="STUDY.yaml")
    p.set_defaults(func=run)


def _load(path: str) -> StudyConfig:
    try:
        return load_config(path)  # raises with every config problem at once
    except ConfigError as e:
        # A wrong key elsewhere must not hide a wrong data path: list both in one message.
        data = data_section(path)
        more = check_dataset(data) if data is not None else []
        if not more:
            raise
        raise ConfigError([*e.problems, *more], e.source) from None


def run(args: argparse.Namespace) -> int:
    cfg = _load(args.study_yaml)
    problems: list[str] = []
    try:
        check_storage_url(cfg.storage)
        check_persistent_storage(cfg.storage)
    except UserError as e:
        problems.append(str(e))
    from growsearch.cli.run import check_checkpoint_dir
    from growsearch.search._optuna import check_search_objects

    for check in (
        lambda: check_search_objects(cfg),
        lambda: check_checkpoint_dir(cfg.checkpoint_dir),
    ):
        try:
            check()
        except ConfigError as e:
            problems += e.problems
    d = data_cfg = cfg.data
    problems += check_train_config(cfg.train)
    data_problems = check_dataset(data_cfg)
    problems += data_problems
    ds = None
    if not data_problems:  # load even if other checks failed: the seed must fit the data
        try:
            ds = load_dataset(data_cfg, seed=cfg.seed)
        except UserError as e:
            problems.append(str(e))
    if ds is not None:
        problems += model_data_problems(cfg.model, ds.input_shape, ds.num_classes)
    if problems:
        raise ConfigError(problems, args.study_yaml)
    spec = cfg.model
    print(f"{args.study_yaml}: ok")
    print(f"  study '{cfg.name}', {cfg.n_trials} trials, storage {redact(cfg.storage)}")
    assert ds is not None
    print(
        f"  data '{d.dataset}': {len(ds.y_train)} train / {len(ds.y_val)} validation samples, "
        f"shape {list(ds.input_shape)}, {ds.num_classes} classes"
    )
    print(f"  seed: {spec.summary()}")
    print(f"  {spec.num_params:,} parameters, {spec.flops:,} FLOPs per sample")
    for name, info in spec.info.items():
        print(
            f"    {name:<16} {list(info.in_shape)!s:<14} -> {list(info.out_shape)!s:<14} "
            f"{info.params:>9,} params"
        )
    return 0
