"""Trials that nobody runs and no heartbeat check will ever find.

Optuna declares a trial dead when its heartbeat is older than the grace period, but a trial
without any heartbeat is never declared dead. Two things leave one behind: a worker killed
between creating its trial and the first heartbeat (microseconds apart), and a connection lost
while the server committed a new trial (the retry creates another). Left alone, such a trial
stays RUNNING for ever and the study waits for it. We fail it, through the same callback as a
stale heartbeat (the lineage row is marked killed, the trial is retried).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

__all__ = ["fail_orphans", "orphan_trial_ids"]


def orphan_trial_ids(rdb: Any, study_id: int, older_than_s: float) -> list[int]:
    """RUNNING trials of the study that never sent a heartbeat and started (by the clock of
    the worker that started them) more than ``older_than_s`` seconds ago."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    stmt = (
        sa.select(trial)
        .outerjoin(beat, beat.trial_id == trial.trial_id)
        .where(
            trial.study_id == study_id,
            trial.state == TrialState.RUNNING,
            beat.trial_heartbeat_id.is_(None),
        )
    )
    with _create_scoped_session(rdb.scoped_session) as session:
        # ``datetime_start`` is a property (local time) over however this Optuna stores it.
        rows = [(t.trial_id, t.datetime_start) for t in session.scalars(stmt)]
    cutoff = datetime.now() - timedelta(seconds=older_than_s)
    return [tid for tid, start in rows if start is not None and start < cutoff]


def fail_orphans(study: optuna.Study, rdb: Any, older_than_s: float) -> list[int]:
    """Fail the orphans (see the module docstring); returns their trial numbers."""
    storage = study._storage
    failed = []
    for trial_id in orphan_trial_ids(rdb, study._study_id, older_than_s):
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker was first
            continue
        trial = copy.deepcopy(storage.get_trial(trial_id))
        failed.append(trial.number)
        callback = rdb.get_heartbeat_stale_trial_callback()
        if callback is not None:
            callback(study, trial)
    return failed
