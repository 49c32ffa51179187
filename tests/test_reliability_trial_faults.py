"""Faults inside one trial: out of memory, weights that blew up, a full disk while writing the
checkpoint, another worker declaring a live trial dead. Each time the trial fails with the
reason recorded (lineage ``reason`` and Optuna ``fail_reason``), nothing partial is left or
referenced, and the worker goes on to finish the study. (NaN/inf losses:
tests/test_search_trials.py.)"""

from __future__ import annotations

import errno
import io
import os
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

import growsearch.checkpoints as checkpoints
import growsearch.search._objective as objective
from growsearch.checkpoints import STALE_TEMP_AGE_S, remove_stale_temp_files
from growsearch.cli import main
from growsearch.search import _faults
from growsearch.store import SQLLineageStore
from tests._searchkit import check_finished_study, tiny_study


def _run(path: Path, *extra: str) -> int:
    return main(["run", str(path), "--quiet", "--device", "cpu", *extra])


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=url).get_trials()


def _train_failing(monkeypatch: pytest.MonkeyPatch, failures: dict[int, Any]) -> list[int]:
    """Make the n-th call of the trial's training (0: the seed) do ``failures[n](model)``
    after (or instead of) training; returns the list of calls made."""
    real = objective.train
    calls: list[int] = []

    def train(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(calls))
        hook = failures.get(calls[-1])
        if hook is not None and hook.__name__.startswith("before"):
            hook(model)
        result = real(model, *args, **kwargs)
        if hook is not None and hook.__name__.startswith("after"):
            hook(model)
        return result

    monkeypatch.setattr(objective, "train", train)
    return calls


def test_out_of_memory_fails_the_trial_empties_the_cache_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def before_cuda_oom(model: torch.nn.Module) -> None:
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"
        )

    def before_runtime_oom(model: torch.nn.Module) -> None:
        raise RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)")

    _train_failing(monkeypatch, {1: before_cuda_oom, 2: before_runtime_oom})
    emptied: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    path, _ = tiny_study(tmp_path, url, n_trials=3)
    assert _run(path, "--quiet") == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err  # an expected failure: one line, no stack
    trials = _trials(url)
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    reasons = [t.user_attrs["fail_reason"] for t in trials[1:3]]
    assert reasons == [
        "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total "
        "capacity)",
        "out of memory: MPS backend out of memory (MPS allocated: 8.00 GB)",
    ]
    assert len(emptied) == 2  # once after each out-of-memory trial
    found = check_finished_study(url, "tiny", 3)
    rows = {m.trial_number: m for m in found["models"]}
    assert [(rows[n].status, rows[n].reason) for n in (1, 2)] == [("failed", r) for r in reasons]


def test_free_accelerator_memory_only_touches_cuda_when_there_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emptied: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _faults.free_accelerator_memory() is False and emptied == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _faults.free_accelerator_memory() is True and emptied == [1]


def _one_failed_trial(tmp_path: Path) -> tuple[str, Any]:
    """Run a 3-trial tiny study in which exactly one trial fails; its reason and lineage row.
    The study still finishes consistently (finished rows point at whole files only)."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    path, _ = tiny_study(tmp_path, url, n_trials=3)
    assert _run(path) == 0
    failed = [t for t in _trials(url) if t.state == TrialState.FAIL]
    assert len(failed) == 1
    found = check_finished_study(url, "tiny", 3)
    row = next(m for m in found["models"] if m.trial_number == failed[0].number)
    return failed[0].user_attrs["fail_reason"], row


def test_weights_that_blew_up_are_never_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def after_explode(model: torch.nn.Module) -> None:
        # The last optimizer step overflowed a weight after the last loss was computed.
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if n.endswith("weight")).fill_(float("inf"))

    _train_failing(monkeypatch, {1: after_explode})
    reason, row = _one_failed_trial(tmp_path)
    assert reason.startswith("TrainingDivergedError: training diverged: the weights became ")
    assert "layers.dense1.linear.weight" in reason and "lower train.lr" in reason
    assert row.status == "failed" and row.checkpoint is None
    # No file for it: the check runs before anything is written.
    assert not list((tmp_path / "ckpt").rglob(f"model-{row.model_id:06d}*"))


def test_a_full_disk_fails_the_trial_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = checkpoints._atomic_write
    writes: list[Path] = []

    def disk_fills_up(dest: Path, write: Any, **kw: Any) -> None:
        if dest.suffix != ".safetensors":
            return real(dest, write, **kw)
        writes.append(dest)
        if len(writes) != 2:  # the seed is written; the first child's write fills the disk
            return real(dest, write, **kw)

        def half_then_full(f: Any) -> None:
            buf = io.BytesIO()
            write(buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            temps = [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]
            assert len(temps) == 1 and temps[0].stat().st_size > 0  # the partial temp file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real(dest, half_then_full, **kw)

    monkeypatch.setattr(checkpoints, "_atomic_write", disk_fills_up)
    reason, row = _one_failed_trial(tmp_path)
    assert reason == (
        f"CheckpointWriteError: cannot write checkpoint {writes[1]}: the disk is full ([Errno 28] "
        f"No space left on device); free space (or fix permissions) under {writes[1].parent} and "
        "resume; no partial file was left"
    )
    assert not writes[1].exists()
    assert not list((tmp_path / "ckpt").rglob("*.tmp"))  # the temp file was removed
    assert (row.status, row.reason, row.checkpoint) == ("failed", reason, None)


def test_stale_temp_files_are_removed_and_young_ones_kept(tmp_path: Path) -> None:
    old = time.time() - STALE_TEMP_AGE_S - 60
    names = {
        ".model-000003.safetensors.0a1b2c3d4e5f.tmp": (old, True),  # a dead write
        ".model-000004.safetensors.ffeeddccbbaa.tmp": (time.time(), False),  # being written
        ".notes.tmp": (old, False),  # not one of our temp names
        "model-000002.safetensors": (old, False),
    }
    for name, (mtime, _) in names.items():
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (mtime, mtime))
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [n for n, (_, gone) in names.items() if gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for n, (_, gone) in names.items() if not gone
    )
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_live_trial_another_worker_declared_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its heartbeats did not reach the database for a while, and another worker failed it and
    queued its retry: this worker notices when Optuna refuses the result, and goes on."""
    url = f"sqlite:///{tmp_path / 'g.db'}"

    def after_failed_elsewhere(model: torch.nn.Module) -> None:
        other = optuna.load_study(study_name="tiny", storage=url)
        running = other.get_trials(states=(TrialState.RUNNING,))
        assert len(running) == 1
        other._storage.set_trial_state_values(running[0]._trial_id, TrialState.FAIL)

    _train_failing(monkeypatch, {1: after_failed_elsewhere})
    path, _ = tiny_study(tmp_path, url, n_trials=3)
    assert _run(path, "--quiet") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    trials = _trials(url)
    assert trials[1].state == TrialState.FAIL
    found = check_finished_study(url, "tiny", 3)
    row = next(m for m in found["models"] if m.trial_number == 1)
    assert row.status == "failed"
    assert (row.reason or "").startswith("declared dead by another worker while still running")
    assert trials[1].user_attrs.get("fail_reason") is None  # Optuna refused it: finished


@pytest.mark.parametrize(
    ("error", "oom"),
    [
        (RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate "
                      "memory: you tried to allocate 30000000000000 bytes."), True),
        (MemoryError(), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    ],
)  # fmt: skip
def test_the_cpu_allocator_running_out_is_out_of_memory(error: BaseException, oom: bool) -> None:
    assert _faults.is_out_of_memory(error) is oom


def test_two_databases_sharing_a_checkpoint_folder_never_overwrite_each_other(
    tmp_path: Path,
) -> None:
    """Model ids count per database, so a second database (or a fresh one after the first was
    deleted) writing into the same folder meets file names already taken: it keeps them and
    saves under a suffixed name, and every model of both databases still loads."""
    shared = tmp_path / "ckpt"
    urls = [f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db")]
    for i, url in enumerate(urls):
        folder = tmp_path / f"study{i}"
        folder.mkdir()
        path, _ = tiny_study(folder, url, n_trials=2, seed=i, checkpoint_dir=str(shared))
        assert _run(path) == 0
    paths = []
    for url in urls:
        check_finished_study(url, "tiny", 2)  # each checkpoint matches its recorded sha256
        with SQLLineageStore(url) as store:
            assert store.missing_checkpoints("tiny", verify_sha256=True) == []
            paths += [m.checkpoint for m in store.models("tiny", status="finished")]
    assert len(set(paths)) == len(paths) == 4
    first, second = paths[:2], paths[2:]
    assert all(Path(p).name.startswith("model-00000") for p in paths)
    assert all(Path(p).stem.count("-") == 1 for p in first)  # model-000001
    assert all(Path(p).stem.count("-") == 2 for p in second)  # model-000001-<8 hex>
