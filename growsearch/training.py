"""Budgeted training: device choice, seeding, optimisers (with state keyed by parameter name),
the epoch loop and evaluation.

The loop costs what a hand-written PyTorch loop costs: the epoch's loss is summed on the device
and read once per epoch (one host sync), never per batch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from growsearch._stop import raise_if_requested
from growsearch.data import DeviceData
from growsearch.exceptions import ConfigError, TrainingDivergedError
from growsearch.spec._parse import did_you_mean

__all__ = [
    "AMP_MODES",
    "OPTIMIZERS",
    "EpochResult",
    "TrainConfig",
    "TrainResult",
    "check_train_config",
    "evaluate",
    "load_optimizer_state_by_name",
    "make_optimizer",
    "optimizer_state_by_name",
    "seed_everything",
    "select_device",
    "train",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
AMP_MODES = ("none", "bf16")


# ---- device and seeding -----------------------------------------------------------------


def _device_problem(preference: str) -> str | None:
    try:
        dev = torch.device(preference)
    except (RuntimeError, ValueError, TypeError):
        return f"train.device: unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps"
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "was built without CUDA" if torch.version.cuda is None else "finds no GPU"
            return (
                f"train.device: {preference!r} requested but this PyTorch ({torch.__version__}) "
                f"{why}; use device: auto or cpu"
            )
        count = torch.cuda.device_count()
        if (dev.index or 0) >= count:
            return (
                f"train.device: {preference!r} requested but only {count} CUDA device(s) exist "
                f"(cuda:0..cuda:{count - 1})"
            )
        return None
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            return f"train.device: {preference!r} requested but MPS is not available here; use auto"
        return None
    return f"train.device: unsupported device type {dev.type!r}; use auto, cpu, cuda, cuda:N or mps"


def select_device(preference: str = "auto") -> torch.device:
    """``auto``: the first of cuda, mps, cpu that is available; else exactly what was asked."""
    pref = str(preference).strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    problem = _device_problem(pref)
    if problem is not None:
        raise ConfigError(problem)
    dev = torch.device(pref)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- configuration and optimisers -------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    epochs_per_trial: int = 2
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.05
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    seed_epochs: int | None = None  # epochs for the seed model; None = epochs_per_trial
    amp: str = "none"  # none | bf16 (autocast on CUDA and CPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps

    @property
    def epochs_for_seed(self) -> int:
        return self.epochs_per_trial if self.seed_epochs is None else self.seed_epochs


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_train_config(cfg: TrainConfig) -> list[str]:
    """Every problem with ``cfg`` (empty if none), device availability included."""
    problems = []
    if not _positive_int(cfg.epochs_per_trial):
        problems.append(
            f"train.epochs_per_trial: must be a positive integer, got {cfg.epochs_per_trial!r}"
        )
    if cfg.seed_epochs is not None and not _positive_int(cfg.seed_epochs):
        problems.append(
            f"train.seed_epochs: must be a positive integer or null (= epochs_per_trial), got "
            f"{cfg.seed_epochs!r}"
        )
    if cfg.optimizer not in OPTIMIZERS:
        hint = did_you_mean(str(cfg.optimizer), OPTIMIZERS)
        problems.append(
            f"train.optimizer: unknown optimizer {cfg.optimizer!r}{hint}; choose one of "
            f"{', '.join(OPTIMIZERS)}"
        )
    if not _number(cfg.lr) or cfg.lr <= 0:
        problems.append(f"train.lr: must be a positive number, got {cfg.lr!r} (e.g. 0.05)")
    if not _number(cfg.momentum) or not 0 <= cfg.momentum < 1:
        problems.append(f"train.momentum: must be a number in [0, 1), got {cfg.momentum!r}")
    if not _number(cfg.weight_decay) or cfg.weight_decay < 0:
        problems.append(
            f"train.weight_decay: must be a non-negative number, got {cfg.weight_decay!r}"
        )
    if cfg.amp not in AMP_MODES:
        hint = did_you_mean(str(cfg.amp), AMP_MODES)
        problems.append(f"train.amp: must be one of {', '.join(AMP_MODES)}{hint}, got {cfg.amp!r}")
    if str(cfg.device).strip().lower() != "auto":
        problem = _device_problem(str(cfg.device).strip().lower())
        if problem is not None:
            problems.append(problem)
    return problems


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, lr: float | None = None
) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names over the trainable parameters; ``lr`` overrides ``cfg.lr``."""
    params = [p for p in model.parameters() if p.requires_grad]
    rate = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=rate, weight_decay=cfg.weight_decay)
    hint = did_you_mean(str(cfg.optimizer), OPTIMIZERS)
    raise ConfigError(
        f"train.optimizer: unknown optimizer {cfg.optimizer!r}{hint}; choose one of "
        f"{', '.join(OPTIMIZERS)}"
    )


def optimizer_state_by_name(
    opt: torch.optim.Optimizer, model: nn.Module
) -> dict[str, dict[str, Tensor]]:
    """The optimiser's per-parameter state (momentum, Adam moments, step) keyed by parameter
    name instead of position, so a grown child can map it onto its own parameters. Copies."""
    names = {id(p): name for name, p in model.named_parameters()}
    out: dict[str, dict[str, Tensor]] = {}
    for param, state in opt.state.items():
        name = names.get(id(param))
        if name is None or not state:
            continue
        out[name] = {
            key: value.detach().clone() if isinstance(value, Tensor) else torch.tensor(value)
            for key, value in state.items()
            if value is not None
        }
    return out


def load_optimizer_state_by_name(
    opt: torch.optim.Optimizer, model: nn.Module, state: dict[str, dict[str, Tensor]]
) -> None:
    """Install ``state`` (from ``optimizer_state_by_name``) into ``opt``. Parameters without an
    entry start fresh; entries for parameters the model lacks are ignored."""
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        entry = state.get(name)
        if entry is None or id(param) not in groups:
            continue
        group = groups[id(param)]
        on_device = bool(group.get("fused") or group.get("capturable"))
        restored: dict[str, Tensor] = {}
        for key, value in entry.items():
            if value.ndim > 0 and value.shape != param.shape:
                raise ValueError(
                    f"optimizer state '{key}' of parameter '{name}' has shape "
                    f"{tuple(value.shape)} but the parameter has {tuple(param.shape)}"
                )
            if key == "step":  # torch keeps the step count as a float32 CPU scalar by default
                restored[key] = value.to(
                    device=param.device if on_device else "cpu", dtype=torch.float32
                ).clone()
            else:
                restored[key] = value.to(device=param.device, dtype=param.dtype).clone()
        opt.state[param] = restored


# ---- the loop ---------------------------------------------------------------------------


@dataclass
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float  # training and validation of this epoch
    samples: int  # training samples seen this epoch


@dataclass
class TrainResult:
    epochs: list[EpochResult] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_second: float = 0.0  # training throughput (validation time excluded)

    @property
    def final(self) -> EpochResult:
        if not self.epochs:
            raise ValueError("no epoch was trained")
        return self.epochs[-1]


def _autocast(device: torch.device, amp: str) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def _generator(device: torch.device, seed: int) -> torch.Generator:
    try:
        gen = torch.Generator(device=device)
    except RuntimeError:  # a backend without device generators: DeviceData copies the permutation
        gen = torch.Generator()
    return gen.manual_seed(seed)


def _state_to_param_devices(opt: torch.optim.Optimizer) -> None:
    """State loaded before ``model.to(device)`` stays behind on the old device; follow the
    parameters (the step count stays where torch keeps it)."""
    for param, state in opt.state.items():
        for key, value in state.items():
            if key != "step" and isinstance(value, Tensor) and value.device != param.device:
                state[key] = value.to(param.device)


def _diverged(epoch: int, what: str, value: float, lr: float) -> TrainingDivergedError:
    err = TrainingDivergedError(
        f"training diverged in epoch {epoch}: the {what} became {value}; lower train.lr "
        f"(now {lr:g}) or use an adaptive optimizer (train.optimizer: adam)"
    )
    err.epoch = epoch  # type: ignore[attr-defined]
    return err


def train(
    model: nn.Module,
    data: DeviceData,
    cfg: TrainConfig,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    generator_seed: int = 0,
    on_epoch: Callable[[EpochResult], None] | None = None,
    lr: float | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` for ``epochs`` epochs with cross-entropy, validating after each.

    ``optimizer`` defaults to ``make_optimizer(model, cfg, lr)``; ``lr``, when given, also sets
    the learning rate of a given optimiser. ``on_epoch`` runs after each validation; whatever it
    raises (``optuna.TrialPruned``) ends training and propagates. A NaN/inf loss raises
    TrainingDivergedError naming the epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = data.device
    model.to(device)
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg, lr)
    if optimizer is not None and lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    _state_to_param_devices(opt)
    rate = float(opt.param_groups[0]["lr"])
    gen = _generator(device, generator_seed)
    result = TrainResult()
    train_seconds, samples_total = 0.0, 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        seen = 0
        for xb, yb in data.train_batches(gen):
            raise_if_requested()  # a Ctrl-C whose exception Python swallowed elsewhere
            with _autocast(device, cfg.amp):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum.add_(loss.detach(), alpha=xb.shape[0])
            seen += xb.shape[0]
        train_loss = float(loss_sum) / max(seen, 1)  # the epoch's one host sync
        t1 = time.perf_counter()
        if not math.isfinite(train_loss):
            raise _diverged(epoch, "training loss", train_loss, rate)
        val_acc, val_loss = evaluate(model, data.val_batches(), device, amp=cfg.amp)
        if not math.isfinite(val_loss):
            raise _diverged(epoch, "validation loss", val_loss, rate)
        train_seconds += t1 - t0
        samples_total += seen
        er = EpochResult(epoch, train_loss, val_loss, val_acc, time.perf_counter() - t0, seen)
        result.epochs.append(er)
        if on_epoch is not None:
            on_epoch(er)
    result.seconds = time.perf_counter() - start
    result.samples_per_second = samples_total / train_seconds if train_seconds > 0 else 0.0
    return result


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device,
    amp: str = "none",
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over ``batches`` in eval mode; the model's previous
    train/eval mode is restored. Sums stay on the device until the end (one host sync)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    sum_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    loss_sum = torch.zeros((), dtype=sum_dtype, device=device)
    count = 0
    try:
        with torch.inference_mode():
            for xb, yb in batches:
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True)
                with _autocast(device, amp):
                    logits = model(xb)
                loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
                correct += (logits.argmax(dim=1) == yb).sum()
                count += int(yb.shape[0])
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got no samples")
    return int(correct) / count, float(loss_sum) / count
