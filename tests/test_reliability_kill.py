"""SIGKILL a run at chosen points of a trial again and again, then let it finish: every COMPLETE
trial has exactly one finished lineage row with a verifiable checkpoint, no row points at a
missing or partial file, and the study ends with the right count.

A kill "at a point" is deterministic: the run is started through a small hook (``HOOK`` below,
selected by ``GS_KILL_AT=point:n``) that SIGKILLs its own process the n-th time it reaches the
point, after writing the point's name to a marker file, so each test knows where every kill
landed:

- ``train``: in the middle of a training epoch;
- ``ckpt_write``: half-way through writing a checkpoint's temp file (flushed to disk);
- ``ckpt_saved``: after the checkpoint is in place, before anything records it;
- ``db_commit``: inside a database transaction that wrote rows, just before its COMMIT (the
  lineage rows, the trial's attributes, Optuna's record of the result ...);
- ``told``: after Optuna recorded the trial COMPLETE, before the lineage row is finished;
- ``asked``: after Optuna created the trial, before its first heartbeat (the trial can never go
  stale: only the orphan check finds it).

Kills at random moments (``random``) are mixed in as well.
"""

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
from growsearch.cli import main
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

HOOK = r"""
import os, signal, sys, threading
point, _, nth = os.environ.get("GS_KILL_AT", "").partition(":")
nth = int(nth or 1)
seen = [0]

def die(where):
    seen[0] += 1
    if seen[0] < nth:
        return
    with open(os.environ["GS_KILL_MARK"], "a") as f:
        f.write(where + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

import torch
torch.set_num_threads(1)
if point == "train":
    from growsearch.data import DeviceData
    batches = DeviceData.train_batches
    def train_batches(self, *a, **k):
        for i, b in enumerate(batches(self, *a, **k)):
            if i == 3:
                die("train")
            yield b
    DeviceData.train_batches = train_batches
elif point == "ckpt_write":
    import io
    import growsearch.checkpoints as ck
    atomic = ck._atomic_write
    def half_then_die(dest, write, **kw):
        if dest.suffix != ".safetensors":
            return atomic(dest, write, **kw)
        def half(f):
            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            die("ckpt_write")
            f.write(data[len(data) // 2 :])
        return atomic(dest, half, **kw)
    ck._atomic_write = half_then_die
elif point == "ckpt_saved":
    import growsearch.search._objective as objective
    save = objective.save_checkpoint
    def save_then_die(*a, **k):
        sha = save(*a, **k)
        die("ckpt_saved")
        return sha
    objective.save_checkpoint = save_then_die
elif point == "db_commit":
    import sqlalchemy as sa
    def before(conn, cursor, statement, *rest):
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            conn.info["wrote"] = True
    def on_commit(conn):
        if conn.info.pop("wrote", False) and threading.current_thread() is threading.main_thread():
            die("db_commit")
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    sa.event.listen(sa.engine.Engine, "commit", on_commit)
elif point == "told":
    from growsearch.search._objective import TrialRunner
    settle = TrialRunner.settle
    def die_then_settle(self, trial):
        if trial.state.name == "COMPLETE":
            die("told")
        return settle(self, trial)
    TrialRunner.settle = die_then_settle
elif point == "asked":
    from optuna.storages._heartbeat import HeartbeatThread
    start = HeartbeatThread.start
    def die_then_start(self):
        die("asked")
        return start(self)
    HeartbeatThread.start = die_then_start
from growsearch.cli import main
sys.exit(main(sys.argv[1:]))
"""

POINTS = ("train", "ckpt_write", "ckpt_saved", "db_commit", "told", "asked")


def _run_killed(cmd: list[str], cwd: Path, point: str, nth: int, mark: Path) -> str | None:
    """Run until killed at ``point`` (the n-th time); the name of the point it died at, or None
    if it finished (or reached no such point) first."""
    env = {**os.environ, "GS_KILL_AT": f"{point}:{nth}", "GS_KILL_MARK": str(mark)}
    mark.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", HOOK, *cmd], cwd=cwd, env=env, capture_output=True, timeout=300
    )
    if proc.returncode == -signal.SIGKILL:
        return mark.read_text().split()[-1]
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return None


def _run_killed_at_random(cmd: list[str], cwd: Path, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOOK, *cmd],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Interpreter start and imports take ~2-4 s; kill somewhere in the trials after that.
    time.sleep(rng.uniform(2.5, 6.0))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _age_temp_files(folder: Path) -> list[Path]:
    """Backdate the temp files a killed write left, as if the run had died long ago."""
    found = [p for p in folder.rglob(".*.tmp") if p.is_file()]
    old = time.time() - 7200.0  # older than growsearch's one hour (STALE_TEMP_AGE_S)
    for p in found:
        os.utime(p, (old, old))
    return found


def _check_after_kill(url: str) -> None:
    """What holds at any moment, even right after a kill: a finished row belongs to a COMPLETE
    trial and points at a whole checkpoint with its recorded sha256."""
    try:
        study = optuna.load_study(study_name="killed", storage=url)
    except KeyError:  # killed before the study existed
        return
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    with SQLLineageStore(url, create=False) as store:
        finished = store.models("killed", status="finished")
        assert {m.trial_number for m in finished} <= complete
        assert store.missing_checkpoints("killed", verify_sha256=True) == []


def _check_consistent(url: str, n_trials: int, ckpt: Path) -> None:
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
        assert sum(m.parent_id is None for m in finished) == 1  # one seed, trained once
        assert store.missing_checkpoints("killed", verify_sha256=True) == []
        # A parent is always a finished model of a COMPLETE trial, never a killed attempt.
        assert all(m.parent_id in ids for m in finished if m.parent_id is not None)
    # Temp files of killed checkpoint writes are gone once they are old (see docs/reliability.md).
    assert not [p for p in ckpt.rglob(".*.tmp")]


def _complete(url: str) -> int:
    try:
        study = optuna.load_study(study_name="killed", storage=url)
    except KeyError:
        return 0
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


def _kill_and_resume(tmp_path: Path, plan: list[tuple[str, int]], more: int, seed: int) -> None:
    """Run ``plan`` (each run killed at its point; runs aim at 1000 trials, so every point is
    reached), then resume to ``more`` COMPLETE trials beyond those done by then."""
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    ckpt = tmp_path / "ckpt"
    yaml_path = tmp_path / "study.yaml"
    yaml_path.write_text(STUDY.format(db=db, ckpt=ckpt, n_trials=1000))
    cmd = ["run", str(yaml_path), "--quiet"]
    mark = tmp_path / "killed-at.txt"
    rng = random.Random(seed)
    landed = []
    for point, nth in plan:
        if point == "random":
            _run_killed_at_random(cmd, tmp_path, rng)
        else:
            where = _run_killed(cmd, tmp_path, point, nth, mark)
            landed.append(where)
            if point == "ckpt_write":
                assert _age_temp_files(ckpt), "the half-written temp file should be there"
        _check_after_kill(url)
    # Every planned point was reached and killed the run there.
    assert landed == [p for p, _ in plan if p != "random"]
    _age_temp_files(ckpt)
    # A trial killed before its first heartbeat is found once it is grace + 2 intervals old.
    time.sleep(4.0)
    n_trials = _complete(url) + more
    assert main([*cmd, "--n-trials", str(n_trials)]) == 0
    _check_consistent(url, n_trials, ckpt)


def test_sigkill_once_at_each_point_then_resume(tmp_path: Path) -> None:
    # The seed (trial 0) dies in training and before its first heartbeat; later kills hit
    # children.
    plan = [("asked", 1), ("train", 1), ("ckpt_write", 2), ("ckpt_saved", 2), ("db_commit", 6),
            ("told", 2)]  # fmt: skip
    _kill_and_resume(tmp_path, plan, more=3, seed=1)


@pytest.mark.slow
def test_sigkill_twenty_times_then_resume(tmp_path: Path) -> None:
    rng = random.Random(2)
    plan = [(p, rng.randint(1, 12 if p == "db_commit" else 3)) for p in POINTS * 3]
    plan += [("random", 0)] * 2
    rng.shuffle(plan)
    assert len(plan) == 20
    _kill_and_resume(tmp_path, plan, more=4, seed=3)
