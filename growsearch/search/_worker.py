"""The worker loop: admit a trial, run it under ``study.optimize`` (heartbeats, pruning), repeat
until the study has ``n_trials`` finished (COMPLETE) trials.

Faults it rides out: a database outage (every call retried with backoff, ``_dbretry``), trials
left behind by killed workers (stale heartbeats, orphans without any heartbeat, temp files of
interrupted checkpoint writes), a trial of ours that another worker declared dead, and an
out-of-memory trial (the accelerator's cache is emptied before the next one).
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from growsearch._stop import raise_if_requested
from growsearch.checkpoints import AtomicFileSystemArtifactStore, remove_stale_temp_files
from growsearch.config import StudyConfig
from growsearch.data import Dataset, DeviceData, load_dataset
from growsearch.search._admission import AdmissionLock
from growsearch.search._dbretry import DbGuard, RetryingLock, RetryingStore, is_transient
from growsearch.search._faults import free_accelerator_memory
from growsearch.search._objective import TrialRunner
from growsearch.search._optuna import (
    count_states,
    make_sampler,
    make_storage,
    open_study,
    quiet_optuna,
    reseedable,
)
from growsearch.search._optuna_schema import check_optuna_schema
from growsearch.search._orphans import fail_orphans
from growsearch.search._progress import Reporter
from growsearch.search._reconcile import reconcile
from growsearch.storage_url import redact
from growsearch.store import LineageStore, SQLLineageStore
from growsearch.training import select_device

__all__ = ["WorkerSummary", "reconcile", "run_worker"]

POLL_S = 0.5


@dataclass
class WorkerSummary:
    started: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    stopped_because: str = ""
    trial_numbers: list[int] = field(default_factory=list)


def _load_data(
    cfg: StudyConfig, device_pref: str | None, dataset: Dataset | None
) -> tuple[DeviceData, torch.device]:
    device = select_device(device_pref or cfg.train.device)
    if dataset is None:
        dataset = load_dataset(cfg.data, seed=cfg.seed)
    d = cfg.data
    return DeviceData(dataset, device, d.batch_size, d.max_device_bytes), device


class _Reaper(threading.Thread):
    """Fails the trials of dead workers every heartbeat interval, so their retries are queued
    within the grace period (plus one interval) even while every live worker is busy training;
    the worker loop alone would notice only between its own trials."""

    def __init__(
        self, study: optuna.Study, cfg: StudyConfig, reporter: Reporter, guard: DbGuard
    ) -> None:
        super().__init__(name="growsearch-reaper", daemon=True)
        self.study, self.cfg, self.reporter, self.guard = study, cfg, reporter, guard
        self.interval = cfg.workers.heartbeat_interval
        self.stop = threading.Event()

    def run(self) -> None:
        rdb = getattr(self.study._storage, "_backend", self.study._storage)
        while not self.stop.wait(self.interval):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(self.study)
                for number in fail_orphans(self.study, rdb, orphan_age_s(self.cfg)):
                    self.reporter.line(f"[trial {number}] was never run (its worker died); retried")
            except Exception as e:  # a database hiccup: the next round tries again
                if is_transient(e):
                    self.guard.note_background(e, "checking for dead workers")
                else:
                    self.reporter.line(
                        f"note: checking for dead workers failed: {self.guard.describe(e)}"
                    )


def orphan_age_s(cfg: StudyConfig) -> float:
    """A RUNNING trial without any heartbeat this old has no worker (see ``_orphans``)."""
    return float(cfg.workers.grace_period + 2 * cfg.workers.heartbeat_interval)


def _open(
    cfg: StudyConfig, store: LineageStore, reporter: Reporter, create: bool, guard: DbGuard
) -> optuna.Study:
    """Tables, study and seed trial, created by whichever worker comes first. Callers hold the
    admission lock: workers started at the same moment on an empty database would otherwise
    race to create the same tables (PostgreSQL refuses the loser) and the seed."""

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        store.mark_killed(cfg.name, [trial.number], "worker died mid-trial (heartbeat expired)")
        reporter.line(f"[trial {trial.number}] its worker died; the trial is retried")

    store.create_study(cfg.name, cfg.to_dict())
    storage = make_storage(cfg, cfg.storage, on_stale=on_stale)
    guard.protect_storage(storage, grace_period=cfg.workers.grace_period)
    study = open_study(cfg, storage, create=create)
    reconcile(study, store)
    return study


def resume_command(cfg: StudyConfig) -> str:
    return f"growsearch resume --storage {redact(cfg.storage)} --study {cfg.name}"


def _clean_checkpoint_folders(runner: TrialRunner, artifacts: Path, reporter: Reporter) -> None:
    """Temp files of checkpoint writes that a killed worker (or a full disk) interrupted."""
    removed = remove_stale_temp_files(runner.checkpoint_root)
    removed += remove_stale_temp_files(artifacts)
    if removed:
        reporter.line(
            f"removed {len(removed)} unfinished temporary checkpoint file(s) left by "
            "interrupted writes"
        )


def run_worker(
    cfg: StudyConfig,
    *,
    device: str | None = None,
    reporter: Reporter | None = None,
    create: bool = True,
    dataset: Dataset | None = None,
) -> WorkerSummary:
    """Run trials of ``cfg``'s study until it has ``n_trials`` COMPLETE trials."""
    quiet_optuna()
    reporter = reporter or Reporter(cfg.n_trials)
    data, torch_device = _load_data(cfg, device, dataset)  # bad data fails here, before any write
    # Read-only, before the lock file or any table; strictly once no other worker can be
    # creating the tables.
    check_optuna_schema(cfg.storage, strict=False)
    guard = DbGuard(cfg.storage, resume_hint=resume_command(cfg))
    lock = RetryingLock(AdmissionLock(cfg.storage, cfg.name), guard)
    lock.acquire()
    try:
        check_optuna_schema(cfg.storage)
        store = cast(LineageStore, RetryingStore(SQLLineageStore(cfg.storage), guard))
        study = _open(cfg, store, reporter, create, guard)
    except BaseException:
        lock.close()
        raise
    lock.release()
    # One artifact folder for every study under checkpoint_dir, so the dashboard needs one store.
    artifact_root = Path(cfg.checkpoint_dir).resolve() / "artifacts"
    artifacts = AtomicFileSystemArtifactStore(artifact_root)
    runner = TrialRunner(
        cfg, store, data, torch_device, reporter, artifacts, admission=lock, db=guard
    )
    _clean_checkpoint_folders(runner, artifact_root, reporter)
    # Also with SQLite, where this is the only worker: a trial left RUNNING by a worker killed
    # moments ago is stale only after the grace period, and a trial that waits for it (the
    # seed's first child) must see it failed and retried meanwhile.
    reaper = _Reaper(study, cfg, reporter, guard)
    reaper.start()
    try:
        return _loop(cfg, study, runner, lock, reporter, guard)
    finally:
        if reaper.is_alive():
            reaper.stop.set()
            reaper.join(timeout=30)
        lock.close()
        reporter.close()
        try:
            runner.lineage.publish(study)
        except Exception as e:  # a figure is not worth losing the run over
            reporter.line(f"note: could not save the lineage figure: {e}")


def _loop(
    cfg: StudyConfig,
    study: optuna.Study,
    runner: TrialRunner,
    lock: RetryingLock,
    reporter: Reporter,
    guard: DbGuard,
) -> WorkerSummary:
    summary = WorkerSummary()
    last: list[FrozenTrial] = []
    failures_in_row = pruned_in_row = 0
    t0 = time.monotonic()
    waiting_said = False
    per_trial_sampler = reseedable(cfg)
    rdb = getattr(study._storage, "_backend", study._storage)  # the RDBStorage
    while True:
        raise_if_requested()  # a Ctrl-C whose exception Python swallowed (growsearch._stop)
        budget = cfg.search.time_budget_s
        if budget is not None and time.monotonic() - t0 >= budget:
            summary.stopped_because = f"time budget of {budget:.0f}s used"
            break
        # Held from counting until the new trial exists (the objective releases it first
        # thing), so concurrent workers never start more trials than the study still needs.
        lock.acquire()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            orphans = guard.call(
                fail_orphans, study, rdb, orphan_age_s(cfg), what="trials without a worker"
            )
            for number in orphans:
                reporter.line(f"[trial {number}] was never run (its worker died); retried")
            counts = count_states(study)
            done = counts[TrialState.COMPLETE]
            reporter.study_progress(done, counts[TrialState.RUNNING])
            if done != runner.reconciled_at:
                reconcile(study, runner.store)
                runner.reconciled_at = done
            if done >= cfg.n_trials:
                summary.stopped_because = f"{done} trials finished (n_trials = {cfg.n_trials})"
                break
            running = counts[TrialState.RUNNING]
            if counts[TrialState.WAITING] == 0 and done + running >= cfg.n_trials:
                # The rest are running elsewhere; wait in case one of them fails.
                lock.release()
                if not waiting_said:
                    reporter.line(
                        f"waiting: {running} trial(s) running elsewhere may finish the study"
                    )
                    waiting_said = True
                time.sleep(POLL_S)
                continue
            waiting_said = False
            if per_trial_sampler:
                # Under the lock the next trial's number is the number of trials so far.
                study.sampler = make_sampler(cfg, trial_number=sum(counts.values()))
            last.clear()
            guard.own_trials.clear()
            try:
                study.optimize(
                    runner,
                    n_trials=1,
                    catch=(Exception,),
                    callbacks=[lambda s, t: runner.settle(t), lambda s, t: last.append(t)],
                )
            except Exception as e:
                last.append(_finished_elsewhere(study, runner, guard, reporter, e))
            if guard.gave_up:  # a call inside the trial gave up; Optuna may have swallowed it
                raise guard.unavailable()
        finally:
            lock.release()
        if not last:
            continue
        trial = last[0]
        summary.started += 1
        summary.trial_numbers.append(trial.number)
        if trial.state == TrialState.COMPLETE:
            summary.completed += 1
            failures_in_row = pruned_in_row = 0
            continue
        if trial.state == TrialState.PRUNED:
            summary.pruned += 1
            pruned_in_row += 1
        else:
            summary.failed += 1
            failures_in_row += 1
            _after_failure(trial, reporter)
        if failures_in_row >= cfg.workers.max_consecutive_failures:
            summary.stopped_because = (
                f"{failures_in_row} trials failed since the last one finished; see the reasons "
                "above (raise workers.max_consecutive_failures to keep going)"
            )
            break
        if pruned_in_row >= cfg.workers.max_consecutive_pruned:
            summary.stopped_because = (
                f"{pruned_in_row} trials were pruned or refused since the last one finished; see "
                "the reasons above (raise workers.max_consecutive_pruned to keep going)"
            )
            break
    return summary


def _finished_elsewhere(
    study: optuna.Study,
    runner: TrialRunner,
    guard: DbGuard,
    reporter: Reporter,
    error: Exception,
) -> FrozenTrial:
    """``study.optimize`` raised: Optuna could not record our trial. The database gave up (the
    worker ends: DatabaseUnavailable), or another worker declared the trial dead while its
    heartbeats could not reach the database, so it is finished already and its retry runs
    elsewhere (the worker goes on). Anything else is a bug and propagates."""
    if guard.gave_up:
        raise guard.unavailable() from error
    telling = isinstance(error, optuna.exceptions.UpdateFinishedTrialError) or (
        isinstance(error, ValueError) and str(error).startswith("Cannot tell a")
    )
    if telling:
        for trial_id in sorted(guard.own_trials):
            trial = study._storage.get_trial(trial_id)
            if trial.state.is_finished():
                runner.settle(trial)
                reporter.line(
                    f"[trial {trial.number}] another worker declared it dead (its heartbeats did "
                    f"not reach the database) and recorded it {trial.state.name}; going on"
                )
                return trial
    raise error


def _after_failure(trial: FrozenTrial, reporter: Reporter) -> None:
    """Out of memory: the dead trial's tensors are gone now (its frames are); return their
    cached blocks to the device so the next child can have them."""
    oom = str(trial.user_attrs.get("fail_reason", "")).startswith("out of memory")
    if oom and free_accelerator_memory():
        reporter.line(f"[trial {trial.number}] emptied the CUDA cache after running out of memory")
