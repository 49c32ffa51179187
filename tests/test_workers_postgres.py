"""Many workers on one study in the real PostgreSQL server: exact trial counts, one study, one
lineage row per finished trial, and a worker killed with SIGKILL mid-trial."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from growsearch.cli import main
from growsearch.store import SQLLineageStore
from tests._searchkit import check_finished_study, growsearch_process, running_child, tiny_study

pytestmark = pytest.mark.postgres


def _wait(procs: list, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except Exception:
            p.kill()
            raise
    return codes


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(folder.glob("w*.log")))


def test_four_workers_started_at_once_create_one_study_and_finish_exactly(
    postgresql_url: str, tmp_path: Path
) -> None:
    """Four `growsearch run STUDY.yaml` processes on a database where nothing exists yet: the
    first creates tables, study and seed under the admission lock; the others join."""
    n_trials = 6
    path, _ = tiny_study(tmp_path, postgresql_url, n_trials=n_trials)
    procs = [
        growsearch_process(["run", str(path), "--quiet"], tmp_path / f"w{i}.log") for i in range(4)
    ]
    codes = _wait(procs, timeout=240)
    assert codes == [0, 0, 0, 0], _logs(tmp_path)
    found = check_finished_study(postgresql_url, "tiny", n_trials)
    seed = next(m for m in found["models"] if m.parent_id is None)
    assert seed.trial_number == 0  # the enqueued seed, not a trial that raced ahead of it
    # Every worker did some of the work or waited for the rest; none ran extra COMPLETE trials.
    assert len(found["complete"]) == n_trials


@pytest.mark.slow
def test_run_with_four_worker_processes(postgresql_url: str, tmp_path: Path) -> None:
    n_trials = 12
    path, _ = tiny_study(tmp_path, postgresql_url, n_trials=n_trials)
    assert main(["run", str(path), "--workers", "4", "--quiet"]) == 0
    check_finished_study(postgresql_url, "tiny", n_trials)


def _kill_mid_trial(url: str, folder: Path, n_workers: int, n_trials: int, epochs: int) -> dict:
    """Start ``n_workers`` workers, SIGKILL the one training a child, let the rest finish."""
    path, raw = tiny_study(
        folder, url, n_trials=n_trials, train={"epochs_per_trial": epochs}, data={"batch_size": 32}
    )
    procs = [growsearch_process(["run", str(path)], folder / f"w{i}.log") for i in range(n_workers)]
    try:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = running_child(url, "tiny")
            time.sleep(0.05)
        assert victim is not None, "no child trial started\n" + _logs(folder)
        trial_number, model_id, pid = victim
        killed_at = datetime.now()
        os.kill(pid, signal.SIGKILL)
        survivors = [p for p in procs if p.pid != pid]
        assert len(survivors) == n_workers - 1
        codes = _wait(survivors, timeout=240)
        assert codes == [0] * len(survivors), _logs(folder)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return {
        "trial": trial_number,
        "model_id": model_id,
        "killed_at": killed_at,
        "workers": raw["workers"],
    }


def _check_killed_and_retried(url: str, n_trials: int, kill: dict) -> None:
    found = check_finished_study(url, "tiny", n_trials)
    study: optuna.Study = found["study"]
    by_number = {t.number: t for t in found["trials"]}
    killed = by_number[kill["trial"]]
    assert killed.state == TrialState.FAIL
    # Failed by a live worker once its last heartbeat was older than the grace period, not
    # before; the live workers look every heartbeat interval even while they train.
    grace, interval = kill["workers"]["grace_period"], kill["workers"]["heartbeat_interval"]
    failed_after = (killed.datetime_complete - kill["killed_at"]).total_seconds()
    assert grace - interval - 0.5 <= failed_after <= grace + interval + 2.0, failed_after
    retries = [
        t
        for t in found["trials"]
        if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number
    ]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    # Same parent and the same operation (same sampled parameters) as the killed attempt.
    assert retry.params == killed.params
    assert retry.user_attrs["parent_model_id"] == killed.user_attrs["parent_model_id"]
    assert retry.user_attrs["operation_args"] == killed.user_attrs["operation_args"]
    assert retry.user_attrs["spec_hash"] == killed.user_attrs["spec_hash"]
    with SQLLineageStore(url, create=False) as store:
        attempt = store.get_model(kill["model_id"])
        again = store.find_by_trial("tiny", retry.number)
    assert attempt is not None and attempt.status == "killed"
    assert "heartbeat" in (attempt.reason or "")
    assert again is not None and again.status == "finished"
    assert again.info["retry_of_model"] == kill["model_id"]
    assert again.info["retry_of_trial"] == killed.number
    assert again.parent_id == attempt.parent_id and again.spec_hash == attempt.spec_hash
    assert study.trials  # the study is still readable as a whole


def test_sigkilled_worker_trial_fails_within_grace_and_is_retried(
    postgresql_url: str, tmp_path: Path
) -> None:
    """Two workers, two trials: one trains the seed then waits; the other trains the child and
    is killed mid-training. The survivor fails the trial after the grace period (3 s here) and
    trains the retry with the same parent and operation."""
    kill = _kill_mid_trial(postgresql_url, tmp_path, n_workers=2, n_trials=2, epochs=40)
    _check_killed_and_retried(postgresql_url, 2, kill)


@pytest.mark.slow
def test_sigkill_among_four_workers(postgresql_url: str, tmp_path: Path) -> None:
    kill = _kill_mid_trial(postgresql_url, tmp_path, n_workers=4, n_trials=8, epochs=30)
    _check_killed_and_retried(postgresql_url, 8, kill)
