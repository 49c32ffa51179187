"""Lineage rows that agree with Optuna's trial states.

Optuna records a trial's state first and the worker finishes its lineage row right after
(``TrialRunner.settle``); a worker that dies in between leaves a running row for a COMPLETE
trial, and a killed trial leaves a running row for a FAIL one. ``reconcile`` repairs both from
the trial attributes; every worker runs it when the count of finished trials moves.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from growsearch.store import LineageStore

__all__ = ["finish_row", "reconcile"]


def finish_row(store: LineageStore, model_id: int, result: dict[str, Any]) -> None:
    """Finish a running row; a row that another worker's ``reconcile`` finished meanwhile (from
    the same trial attributes) is left as it is."""
    try:
        store.finish_model(model_id, **result)
    except ValueError:
        record = store.get_model(model_id)
        if record is None or record.status != "finished":
            raise


def reconcile(study: optuna.Study, store: LineageStore) -> list[int]:
    """Make the lineage agree with Optuna after workers died: rows of FAIL trials that are still
    running or finished become ``killed``; running rows of COMPLETE trials (the worker died
    between Optuna's record and its own) are finished from the trial's attributes. Afterwards a
    finished row always means a COMPLETE trial. Returns the trial numbers changed."""
    failed: list[int] = []
    complete: dict[int, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.COMPLETE)):
        if t.state == TrialState.FAIL:
            failed.append(t.number)
        else:
            complete[t.number] = t
    changed = []
    if failed and store.mark_killed(
        study.study_name, failed, "worker died mid-trial (heartbeat expired)"
    ):
        changed += failed
    for row in store.models(study.study_name, status="running"):
        done = complete.get(row.trial_number)
        if done is None or "sha256" not in done.user_attrs:
            continue
        finish_row(
            store,
            row.model_id,
            {
                "val_accuracy": done.values[0],
                "objectives": list(done.values),
                "checkpoint": done.user_attrs["checkpoint"],
                "sha256": done.user_attrs["sha256"],
                "preservation_error": done.user_attrs.get("preservation_error"),
                "train_seconds": done.user_attrs.get("train_seconds"),
                "info": {"timings": done.user_attrs.get("timings"), "finished_by": "reconcile"},
            },
        )
        changed.append(row.trial_number)
    return changed
