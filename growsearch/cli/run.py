"""``growsearch run STUDY.yaml``: create or continue a study until n_trials have finished."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from growsearch.config import StudyConfig, load_config
from growsearch.data import Dataset, check_dataset, load_dataset
from growsearch.exceptions import ConfigError
from growsearch.fit import model_data_problems
from growsearch.storage_url import check_persistent_storage, check_storage_url, redact

__all__ = ["add_parser", "execute"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run (or continue) the study described by a YAML file",
        description="Create the study (or continue it) and run trials until n_trials have "
        "finished in total. Running the same command again resumes; the seed is never retrained.",
    )
    p.add_argument("study_yaml", metavar="STUDY.yaml")
    p.add_argument("--storage", help="override the storage URL of the YAML")
    p.add_argument("--study-name", help="override the study name of the YAML")
    p.add_argument("--n-trials", type=int, help="override n_trials (finished trials in total)")
    p.add_argument("--checkpoint-dir", help="override checkpoint_dir")
    add_run_options(p)
    p.set_defaults(func=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine (several need PostgreSQL; one per GPU when "
        "there are GPUs)",
    )
    p.add_argument(
        "--device",
        help="auto, cpu, cuda, cuda:N or mps (default: the study's train.device)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.study_yaml)
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError("--n-trials must be at least 1")
    cfg = cfg.with_overrides(
        storage=args.storage,
        name=args.study_name,
        n_trials=args.n_trials,
        checkpoint_dir=args.checkpoint_dir,
    )
    resume_hint = f"growsearch run {args.study_yaml}" + "".join(
        f" {flag} {value}"
        for flag, value in (
            ("--storage", args.storage and redact(args.storage)),
            ("--study-name", args.study_name),
            ("--n-trials", args.n_trials),
            ("--checkpoint-dir", args.checkpoint_dir),
        )
        if value is not None
    )
    return execute(cfg, args.workers, args.device, args.quiet, resume_hint)


def check_checkpoint_dir(folder: str) -> None:
    """The checkpoint folder exists as a folder we can write, or can be made in one: else every
    trial would fail on its checkpoint. Creates nothing."""
    path = Path(folder).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is" if probe == path else f"would be inside {probe}, which is"
        raise ConfigError(
            f"checkpoint_dir: {path} {where} not a folder; set checkpoint_dir (or "
            "--checkpoint-dir) to a folder"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"checkpoint_dir: cannot write in {probe}; set checkpoint_dir (or --checkpoint-dir) "
            "to a folder you can write"
        )


def preflight(cfg: StudyConfig, workers: int) -> Dataset:
    """Every check that needs no write: storage URL, worker count, data, and whether the seed
    architecture fits the data. Bad input stops here, before any database or folder exists."""
    from growsearch.search import check_workers
    from growsearch.search._optuna import check_search_objects

    check_storage_url(cfg.storage)
    check_persistent_storage(cfg.storage)
    check_workers(cfg, workers)
    check_search_objects(cfg)
    check_checkpoint_dir(cfg.checkpoint_dir)
    data_cfg = cfg.data
    problems = check_dataset(data_cfg)
    if problems:
        raise ConfigError(problems, cfg.source)
    dataset = load_dataset(data_cfg, seed=cfg.seed)
    problems = model_data_problems(cfg.model, dataset.input_shape, dataset.num_classes)
    if problems:
        raise ConfigError(problems, cfg.source)
    return dataset


def execute(
    cfg: StudyConfig,
    workers: int,
    device: str | None,
    quiet: bool,
    resume_hint: str,
    create: bool = True,
) -> int:
    from growsearch.search import run_processes, run_worker
    from growsearch.search._progress import Reporter
    from growsearch.store import SQLLineageStore

    dataset = preflight(cfg, workers)
    out = sys.stdout
    if not quiet:
        print(
            f"growsearch: study '{cfg.name}' in {redact(cfg.storage)}: {cfg.n_trials} trials, "
            f"{workers} worker(s), checkpoints in {cfg.checkpoint_dir}/",
            file=out,
            flush=True,
        )
    try:
        if workers == 1:
            summary = run_worker(
                cfg,
                device=device,
                reporter=Reporter(cfg.n_trials, quiet=quiet),
                create=create,
                dataset=dataset,
            )
            stopped = summary.stopped_because
        else:
            bad = run_processes(cfg, workers)
            stopped = f"{workers - bad} of {workers} workers finished cleanly"
    except KeyboardInterrupt:
        print(
            "\ngrowsearch: interrupted. Finished trials are safe (a trial that was running is "
            f"marked failed). Resume with:\n  {resume_hint}",
            file=sys.stderr,
            flush=True,
        )
        return 130
    store = SQLLineageStore(cfg.storage)
    best = store.best(cfg.name)
    finished = len(store.models(cfg.name, status="finished"))
    print(f"growsearch: stopped: {stopped}", file=out)
    if best is not None:
        print(
            f"growsearch: best model {best.model_id} (trial {best.trial_number}, generation "
            f"{best.generation}): val_accuracy {best.val_accuracy:.4f}, {best.num_params:,} "
            f"parameters; {finished} finished models",
            file=out,
        )
    url = redact(cfg.storage)
    print(
        f"growsearch: lineage:   growsearch lineage --storage {url} --study {cfg.name}\n"
        f"growsearch: dashboard: growsearch dashboard --storage {url}",
        file=out,
        flush=True,
    )
    return 0
