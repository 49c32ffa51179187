"""SIGKILL a run at random points again and again, then let it finish: every COMPLETE trial has
exactly one finished lineage row with a verifiable checkpoint, no row points at a missing or
partial file, and the study ends with the right count."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from growsearch.checkpoints import file_sha256, load_checkpoint
from growsearch.store import SQLLineageStore

STUDY = """\
name: killed
storage: sqlite:///{db}
n_trials: {n_trials}
seed: 5
data: {{dataset: digits, batch_size: 64}}
model:
  input_shape: [1, 8, 8]
  layers:
    - {{type: flatten}}
    - {{type: dense, out: 16, activation: relu}}
    - {{type: dense, out: 10}}
train: {{epochs_per_trial: 2, lr: 0.1}}
search: {{operations: [widen, deepen], pruner: none}}
workers: {{heartbeat_interval: 1, grace_period: 2, max_retry: 100,
           max_consecutive_failures: 1000}}
checkpoint_dir: {ckpt}
"""


def _kill_and_resume(tmp_path: Path, kills: int, n_trials: int, seed: int) -> None:
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    ckpt = tmp_path / "ckpt"
    yaml_path = tmp_path / "study.yaml"
    yaml_path.write_text(STUDY.format(db=db, ckpt=ckpt, n_trials=n_trials))
    cmd = [sys.executable, "-m", "growsearch", "run", str(yaml_path), "--quiet"]
    rng = random.Random(seed)
    for _ in range(kills):
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # Interpreter start and imports take ~2-4 s; kill somewhere in the trials after that,
        # which lands in training, in checkpoint writes and in database writes.
        time.sleep(rng.uniform(2.0, 6.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_consistent(url, n_trials)


def _check_consistent(url: str, n_trials: int) -> None:
    study = optuna.load_study(study_name="killed", storage=url)
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert len(complete) == n_trials
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    with SQLLineageStore(url, create=False) as store:
        models = store.models("killed")
        finished = [m for m in models if m.status == "finished"]
        # Exactly one finished row per COMPLETE trial, and no finished row for any other trial.
        assert sorted(m.trial_number for m in finished) == sorted(complete)
        assert not [m for m in models if m.status == "running"]
        ids = {m.model_id for m in finished}
        for m in finished:
            assert m.checkpoint is not None and Path(m.checkpoint).is_file()
            assert file_sha256(m.checkpoint) == m.sha256
            load_checkpoint(m.checkpoint, expected_sha256=m.sha256)
            assert m.parent_id is None or m.parent_id in {x.model_id for x in models}
        assert sum(m.parent_id is None for m in finished) >= 1
        assert store.missing_checkpoints("killed", verify_sha256=True) == []
        # A parent is always a finished model of a COMPLETE trial, never a killed attempt.
        assert all(m.parent_id in ids for m in finished if m.parent_id is not None)


def test_sigkill_a_few_times_then_resume(tmp_path: Path) -> None:
    _kill_and_resume(tmp_path, kills=4, n_trials=6, seed=1)


@pytest.mark.slow
def test_sigkill_twenty_times_then_resume(tmp_path: Path) -> None:
    _kill_and_resume(tmp_path, kills=20, n_trials=10, seed=2)
