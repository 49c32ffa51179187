"""Optuna plumbing: storage with heartbeats, sampler and pruner by name, study create-or-load."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from growsearch.config import PRUNERS, SAMPLERS, StudyConfig
from growsearch.exceptions import ConfigError, StorageError
from growsearch.storage_url import make_engine_kwargs, redact

__all__ = [
    "ROLE_ATTR",
    "count_states",
    "directions",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "quiet_optuna",
    "reseedable",
]

ROLE_ATTR = "growsearch_role"  # user attribute on the enqueued seed trial


def quiet_optuna() -> None:
    """We print our own progress; Optuna's per-trial INFO lines would duplicate it."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def directions(cfg: StudyConfig) -> list[StudyDirection]:
    """Accuracy first (maximised), then every cost objective (minimised)."""
    rest = [StudyDirection.MINIMIZE] * (len(cfg.search.objectives) - 1)
    return [StudyDirection.MAXIMIZE, *rest]


def make_storage(
    cfg: StudyConfig,
    url: str,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> RDBStorage:
    """RDB storage with heartbeats, so a worker that dies mid-trial is detected and its trial
    retried (with the same parameters and user attributes, hence the same parent and operation)."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=cfg.workers.max_retry)

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=make_engine_kwargs(url),
                heartbeat_interval=cfg.workers.heartbeat_interval,
                grace_period=cfg.workers.grace_period,
                heartbeat_stale_trial_callback=stale,
            )
    except RuntimeError as e:
        # Optuna raises RuntimeError when its table schema is of another version.
        text = str(e).replace(url, redact(url))
        raise StorageError(
            f"the Optuna tables in {redact(url)} are of another version: {text}\n"
            f"Upgrade them with: optuna storage upgrade --storage '{redact(url)}'"
        ) from None
    except Exception as e:  # sqlalchemy errors: unreachable, bad credentials, ...
        raise StorageError(
            f"cannot open the storage {redact(url)}: {str(e).replace(url, redact(url))}"
        ) from None


def _by_name(kind: str, name: str, table: dict[str, str], module: Any) -> type:
    cls_name = table.get(name.lower(), name)
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ConfigError(f"search.{kind}: unknown {kind} {name!r}")
    return cls


# Samplers that keep no state between trials besides their random generator: each trial can get
# a sampler seeded from (seed, trial number). One worker stays reproducible, and concurrent
# workers, which would otherwise draw the same proposals from equally seeded generators, differ.
PER_TRIAL_SEEDED = ("TPESampler", "RandomSampler", "GPSampler", "NSGAIISampler", "NSGAIIISampler")


def reseedable(cfg: StudyConfig) -> bool:
    """Whether ``make_sampler(cfg, trial_number=...)`` gives a sampler per trial."""
    cls_name = SAMPLERS.get(cfg.search.sampler.lower(), cfg.search.sampler)
    return cls_name in PER_TRIAL_SEEDED and "seed" not in cfg.search.sampler_args


def make_sampler(cfg: StudyConfig, trial_number: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler; with ``trial_number`` (see ``reseedable``), seeded for it."""
    cls = _by_name("sampler", cfg.search.sampler, SAMPLERS, optuna.samplers)
    kwargs = dict(cfg.search.sampler_args)
    if "seed" not in kwargs and cls is not optuna.samplers.GridSampler:
        kwargs["seed"] = cfg.seed
        if trial_number is not None and cls.__name__ in PER_TRIAL_SEEDED:
            kwargs["seed"] = (cfg.seed * 1_000_003 + trial_number) % 2**32
    if cls is optuna.samplers.TPESampler and "n_startup_trials" not in kwargs:
        # Few trials per study are the norm here; start modelling early.
        kwargs["n_startup_trials"] = 5
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"search.sampler_args: {e}") from None


def check_search_objects(cfg: StudyConfig) -> None:
    """Build the sampler and the pruner once, so that bad ``sampler_args`` / ``pruner_args``
    are a ConfigError before anything is written (not in the middle of a run, nor later on
    ``resume`` from the stored config)."""
    make_sampler(cfg)
    make_pruner(cfg)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    if len(cfg.search.objectives) > 1:
        # Optuna cannot prune multi-objective trials; budgets and constraints replace pruning.
        return optuna.pruners.NopPruner()
    cls = _by_name("pruner", cfg.search.pruner, PRUNERS, optuna.pruners)
    kwargs = dict(cfg.search.pruner_args)
    if cls is optuna.pruners.MedianPruner:
        kwargs.setdefault("n_startup_trials", 5)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"search.pruner_args: {e}") from None


def open_study(cfg: StudyConfig, storage: RDBStorage, *, create: bool = True) -> optuna.Study:
    """Create the study (enqueueing the seed trial) or load it. Race-safe: whoever creates the
    study enqueues the seed; everyone else loads it."""
    sampler, pruner = make_sampler(cfg), make_pruner(cfg)
    names = list(cfg.search.objectives)
    if create:
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=cfg.name,
                sampler=sampler,
                pruner=pruner,
                directions=directions(cfg),
            )
        except optuna.exceptions.DuplicatedStudyError:
            pass
        else:
            study.set_metric_names(names)
            study.enqueue_trial({}, user_attrs={ROLE_ATTR: "seed"})
            return study
    try:
        study = optuna.load_study(
            study_name=cfg.name, storage=storage, sampler=sampler, pruner=pruner
        )
    except KeyError:
        raise StorageError(f"no study named '{cfg.name}' in {redact(storage.url)}") from None
    if study.metric_names is None and len(study.directions) == len(names):
        study.set_metric_names(names)  # optuna-dashboard labels the objectives with these
    if len(study.directions) != len(names):
        raise ConfigError(
            f"study '{cfg.name}' exists with {len(study.directions)} objective(s) but the config "
            f"asks for {names}; use another --study-name"
        )
    return study


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts
