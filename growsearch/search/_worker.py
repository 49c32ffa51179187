"""The worker loop: admit a trial, run it under ``study.optimize`` (heartbeats, pruning), repeat
until the study has ``n_trials`` finished (COMPLETE) trials."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from growsearch.checkpoints import AtomicFileSystemArtifactStore
from growsearch.config import StudyConfig
from growsearch.data import Dataset, DeviceData, load_dataset
from growsearch.search._admission import AdmissionLock
from growsearch.search._dashboard import publish_lineage
from growsearch.search._objective import TrialRunner
from growsearch.search._optuna import count_states, make_storage, open_study, quiet_optuna
from growsearch.search._progress import Reporter
from growsearch.store import LineageStore, SQLLineageStore
from growsearch.training import select_device

__all__ = ["WorkerSummary", "reconcile", "run_worker"]

POLL_S = 1.0


@dataclass
class WorkerSummary:
    started: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    stopped_because: str = ""
    trial_numbers: list[int] = field(default_factory=list)


def reconcile(study: optuna.Study, store: LineageStore) -> list[int]:
    """Mark lineage rows of trials that ended FAIL without their worker saying so (killed
    workers, detected by heartbeats) as ``killed``, so a finished row always means a COMPLETE
    trial. Returns the trial numbers marked."""
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    if not failed:
        return []
    stale = [
        m.trial_number
        for m in store.models(study.study_name)
        if m.trial_number in failed and m.status in ("running", "finished")
    ]
    if stale:
        store.mark_killed(study.study_name, stale, "worker died mid-trial (heartbeat expired)")
    return stale


def _load_data(
    cfg: StudyConfig, device_pref: str | None, dataset: Dataset | None
) -> tuple[DeviceData, torch.device]:
    device = select_device(device_pref or cfg.train.device)
    if dataset is None:
        dataset = load_dataset(cfg.data, seed=cfg.seed)
    d = cfg.data
    return DeviceData(dataset, device, d.batch_size, d.max_device_bytes), device


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
    store = SQLLineageStore(cfg.storage)
    store.create_study(cfg.name, cfg.to_dict())

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        store.mark_killed(cfg.name, [trial.number], "worker died mid-trial (heartbeat expired)")
        reporter.line(f"[trial {trial.number}] its worker died; the trial is retried")

    storage = make_storage(cfg, cfg.storage, on_stale=on_stale)
    study = open_study(cfg, storage, create=create)
    reconcile(study, store)
    lock = AdmissionLock(cfg.storage, cfg.name)
    # One artifact folder for every study under checkpoint_dir, so the dashboard needs one store.
    artifacts = AtomicFileSystemArtifactStore(Path(cfg.checkpoint_dir).resolve() / "artifacts")
    runner = TrialRunner(cfg, store, data, torch_device, reporter, artifacts, on_start=lock.release)
    summary = WorkerSummary()
    last: list[FrozenTrial] = []
    failures_in_row = 0
    t0 = time.monotonic()
    waiting_said = False
    try:
        while True:
            budget = cfg.search.time_budget_s
            if budget is not None and time.monotonic() - t0 >= budget:
                summary.stopped_because = f"time budget of {budget:.0f}s used"
                break
            lock.acquire()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                counts = count_states(study)
                done = counts[TrialState.COMPLETE]
                if done >= cfg.n_trials:
                    summary.stopped_because = f"{done} trials finished (n_trials = {cfg.n_trials})"
                    break
                if (
                    counts[TrialState.WAITING] == 0
                    and done + counts[TrialState.RUNNING] >= cfg.n_trials
                ):
                    # The rest are running elsewhere; wait in case one of them fails.
                    lock.release()
                    if not waiting_said:
                        reporter.line(
                            f"waiting: {counts[TrialState.RUNNING]} trial(s) running elsewhere "
                            "finish the study"
                        )
                        waiting_said = True
                    time.sleep(POLL_S)
                    continue
                last.clear()
                study.optimize(
                    runner,
                    n_trials=1,
                    catch=(Exception,),
                    callbacks=[lambda s, t: last.append(t)],
                )
            finally:
                lock.release()
            if not last:
                continue
            trial = last[0]
            summary.started += 1
            summary.trial_numbers.append(trial.number)
            if trial.state == TrialState.COMPLETE:
                summary.completed += 1
                failures_in_row = 0
                if summary.completed % 5 == 0:
                    publish_lineage(study, store)
            else:
                failures_in_row += 1
                if trial.state == TrialState.PRUNED:
                    summary.pruned += 1
                else:
                    summary.failed += 1
                if failures_in_row >= cfg.workers.max_consecutive_failures:
                    summary.stopped_because = (
                        f"{failures_in_row} trials in a row did not finish; see the reasons above "
                        "(raise workers.max_consecutive_failures to keep going)"
                    )
                    break
    finally:
        lock.close()
        try:
            publish_lineage(study, store)
        except Exception as e:  # a figure is not worth losing the run over
            reporter.line(f"note: could not save the lineage figure: {e}")
    return summary
