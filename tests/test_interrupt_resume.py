"""Ctrl-C a run, run the same command again: the study continues to n_trials finished trials,
the seed is not retrained and parents come from the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from growsearch.store import SQLLineageStore

STUDY = """\
name: interrupted
storage: sqlite:///{db}
n_trials: 6
seed: 3
data: {{dataset: digits, batch_size: 32}}
model:
  input_shape: [1, 8, 8]
  layers:
    - {{type: flatten}}
    - {{type: dense, out: 24, activation: relu}}
    - {{type: dense, out: 10}}
train: {{epochs_per_trial: 8, lr: 0.05}}
search: {{operations: [widen, deepen], pruner: none}}
checkpoint_dir: {ckpt}
"""


def _complete(url: str) -> int:
    try:
        study = optuna.load_study(study_name="interrupted", storage=url)
    except KeyError:
        return 0
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


def test_ctrl_c_then_resume(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    yaml_path = tmp_path / "study.yaml"
    yaml_path.write_text(STUDY.format(db=db, ckpt=tmp_path / "ckpt"))
    cmd = [sys.executable, "-m", "growsearch", "run", str(yaml_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while _complete(url) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.3)  # into the next trial's training
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a run that did not stop must not outlive the test
    assert proc.returncode == 130, (out, err)
    assert "Resume with" in err and f"growsearch run {yaml_path}" in err
    done_before = _complete(url)
    assert 2 <= done_before < 6

    with SQLLineageStore(url, create=False) as store:
        interrupted = store.models("interrupted", status="interrupted")
        kept = {m.model_id for m in store.models("interrupted", status="finished")}
    study = optuna.load_study(study_name="interrupted", storage=url)
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    if interrupted:  # Ctrl-C landed inside a trial (the usual case)
        assert {m.trial_number for m in interrupted} <= {t.number for t in failed}

    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _complete(url) == 6
    with SQLLineageStore(url, create=False) as store:
        finished = store.models("interrupted", status="finished")
    assert len(finished) == 6
    seeds = [m for m in finished if m.parent_id is None]
    assert len(seeds) == 1 and seeds[0].model_id in kept  # the seed of the first run, not retrained
    assert "seed (from scratch)" not in result.stdout
    ids = {m.model_id for m in finished}
    assert kept <= ids  # nothing finished before Ctrl-C was lost or redone
    assert all(m.parent_id in ids for m in finished if m.parent_id is not None)
