"""The search driver: Optuna study, parent policy, mutation space, one trial, workers."""

from growsearch.search._multi import check_workers, run_processes
from growsearch.search._reconcile import reconcile
from growsearch.search._worker import WorkerSummary, run_worker

__all__ = ["WorkerSummary", "check_workers", "reconcile", "run_processes", "run_worker"]
