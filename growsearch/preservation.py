"""The preservation check: does a grown child still compute its parent's function?

Both networks run in eval mode (dropout off, BatchNorm on running statistics) under no_grad with
TF32 off, so a difference means the transform is wrong, not that the hardware rounded coarsely.
Each module's train/eval mode and the global TF32 settings are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["PreservationResult", "check_preservation", "tolerance_for"]


@dataclass(frozen=True)
class PreservationResult:
    max_abs_error: float  # max |child(x) - parent(x)| over the probe batch
    max_parent_output: float  # max |parent(x)|
    tolerance: float
    ok: bool


def tolerance_for(max_parent_output: float, rtol: float = 1e-5) -> float:
    """``rtol * max(1, max|parent(x)|)``: relative for large outputs, absolute near zero."""
    return rtol * max(1.0, float(max_parent_output))


@contextmanager
def _ieee_float32() -> Iterator[None]:
    """Full float32 precision for matmul and convolutions (no TF32), restored on exit.

    Newer PyTorch has ``fp32_precision`` settings and complains when the legacy ``allow_tf32``
    flags are mixed with them, so use the new ones where they exist.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        saved = (matmul.fp32_precision, conv.fp32_precision)  # type: ignore[union-attr]
        matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"  # type: ignore[union-attr]
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved  # type: ignore[union-attr]
    else:  # pragma: no cover - older PyTorch
        saved_legacy = (matmul.allow_tf32, cudnn.allow_tf32)
        matmul.allow_tf32, cudnn.allow_tf32 = False, False
        try:
            yield
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = saved_legacy


def _modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def _run(model: nn.Module, probe: Tensor) -> Tensor:
    # float32 for float32 models (the usual case); a float64 model runs in float64.
    param = next(model.parameters(), None)
    if param is None:
        return model(probe.float()).float()
    return model(probe.to(param.device, param.dtype)).double()


def check_preservation(
    parent: nn.Module, child: nn.Module, probe: Tensor, rtol: float = 1e-5
) -> PreservationResult:
    """Compare parent and child outputs on ``probe`` (eval mode, no_grad, TF32 off)."""
    saved = _modes(parent) + _modes(child)  # per module: a model may mix train and eval parts
    try:
        parent.eval()
        child.eval()
        with torch.no_grad(), _ieee_float32():
            expected = _run(parent, probe)
            got = _run(child, probe).to(expected.device)
    finally:
        for module, training in saved:
            module.train(training)
    if got.shape != expected.shape:
        raise ValueError(
            f"child output shape {list(got.shape)} differs from the parent's "
            f"{list(expected.shape)}; the child is not a function-preserving transform"
        )
    max_parent = expected.abs().max().item() if expected.numel() else 0.0
    error = (got - expected).abs().max().item() if expected.numel() else 0.0
    tol = tolerance_for(max_parent, rtol)
    ok = bool(error <= tol)  # NaN compares False, so a NaN output is never ok
    return PreservationResult(float(error), float(max_parent), tol, ok)
