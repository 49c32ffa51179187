"""What can go wrong inside one trial, said plainly: a lost or damaged parent checkpoint, a full
disk, weights that blew up, an exhausted accelerator. The trial fails with the reason recorded
(lineage ``reason``, Optuna ``fail_reason``) and the worker goes on with the next one."""

from __future__ import annotations

import errno
import gc
import signal
import traceback
from collections.abc import Callable
from pathlib import Path

import optuna
import torch

from growsearch.checkpoints import Checkpoint
from growsearch.exceptions import (
    CheckpointError,
    GrowsearchError,
    TrainingDivergedError,
)
from growsearch.search._space import NoPlaceError
from growsearch.store import LineageStore, ModelRecord

__all__ = [
    "CheckpointWriteError",
    "check_finite_weights",
    "check_parent_checkpoint",
    "checkpoint_write_error",
    "expected_failure",
    "failure_reason",
    "free_accelerator_memory",
    "is_out_of_memory",
    "parent_lost",
    "record_failure",
]

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class CheckpointWriteError(GrowsearchError):
    """A checkpoint could not be written (disk full, no permission); nothing partial is left."""


def check_parent_checkpoint(ckpt: Checkpoint, parent: ModelRecord) -> None:
    """A whole, valid file can still hold another architecture than the lineage records (a
    file copied over another): CheckpointError."""
    if ckpt.spec.hash != parent.spec_hash:
        raise CheckpointError(
            f"checkpoint {ckpt.path} holds architecture {ckpt.spec.hash[:12]} but the lineage "
            f"records {parent.spec_hash[:12]} for model {parent.model_id}"
        )


def parent_lost(
    store: LineageStore, parent: ModelRecord, error: CheckpointError
) -> CheckpointError:
    """Mark a parent whose checkpoint is missing, damaged or of another architecture ``lost``
    (never chosen again) and return the error its child fails with: the path and the hash the
    lineage recorded, so the file can be found and checked."""
    text = str(error)
    if parent.sha256 and parent.sha256 not in text:
        text += f" (recorded sha256 {parent.sha256})"
    store.mark_checkpoint_lost(parent.model_id, text)
    return CheckpointError(
        f"parent model {parent.model_id} (trial {parent.trial_number}) lost its checkpoint and "
        f"is no longer a parent: {text}"
    )


def checkpoint_write_error(path: Path, error: OSError) -> CheckpointWriteError:
    """What a failed checkpoint write (a full disk, no permission) tells the user. The atomic
    write has already removed its temp file, so no partial checkpoint exists under any name."""
    what = "the disk is full" if error.errno in _DISK_FULL else (error.strerror or str(error))
    return CheckpointWriteError(
        f"cannot write checkpoint {path}: {what} ([Errno {error.errno}] {error.strerror}); free "
        f"space (or fix permissions) under {path.parent} and resume; no partial file was left"
    )


def check_finite_weights(model: torch.nn.Module) -> None:
    """Refuse to save weights that blew up (inf/NaN) even if the last loss looked finite; a
    child grown from them would inherit the damage."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if not tensors:
        return
    if bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):  # one host sync
        return
    bad = [n for n, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]  # fmt: skip
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    raise TrainingDivergedError(
        f"training diverged: the weights became infinite or NaN ({', '.join(bad[:4])}{more}); "
        "lower train.lr or use an adaptive optimizer (train.optimizer: adam)"
    )


def record_failure(
    trial: optuna.Trial,
    store: LineageStore,
    model_id: int | None,
    error: BaseException,
    reason: str,
    note: Callable[[str], None],
) -> None:
    """Both records of a failed trial (Optuna's ``fail_reason``, the lineage row), each tried
    even if the other cannot be written (a database that is down, a trial another worker
    finished): the original error is what propagates, and ``reconcile`` repairs whatever is
    left running."""
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    writes: list[Callable[[], object]] = [lambda: trial.set_user_attr("fail_reason", reason[:2000])]
    if model_id is not None:
        writes.append(lambda: store.fail_model(model_id, status, reason))
    for write in writes:
        try:
            write()
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            note(f"[trial {trial.number}] note: failure not recorded: {first}")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    # CUDA/MPS say "out of memory"; the CPU allocator says "can't allocate memory".
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def free_accelerator_memory() -> bool:
    """After an out-of-memory trial: drop the dead trial's tensors and return the cached blocks
    to the device, so the next (maybe smaller) child gets the memory. True if CUDA was freed."""
    gc.collect()
    if not torch.cuda.is_available():
        return False
    torch.cuda.empty_cache()
    return True


# Our own errors (preservation, divergence, checkpoints, transforms, ...) all derive from
# GrowsearchError.
_EXPECTED = (
    GrowsearchError,
    NoPlaceError,
    KeyboardInterrupt,
    optuna.exceptions.UpdateFinishedTrialError,
)


def expected_failure(error: BaseException) -> bool:
    """A failure we explain in one line; anything else is a bug and keeps its traceback."""
    return isinstance(error, _EXPECTED) or is_out_of_memory(error)


def failure_reason(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        signum = getattr(error, "signum", signal.SIGINT)
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        return f"interrupted ({name})"
    if isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
        return (
            "declared dead by another worker while still running (its heartbeats did not reach "
            f"the database in time); its retry runs instead: {error}"
        )
    if is_out_of_memory(error):
        # The message itself: str() of torch's OutOfMemoryError quotes it.
        text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
        first = text.strip().splitlines()[0] if text.strip() else repr(error)
        return f"out of memory: {first}"
    if expected_failure(error):
        return f"{type(error).__name__}: {error}"
    return "".join(traceback.format_exception(error)).strip()
