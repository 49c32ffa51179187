"""Tensor edits shared by the weights and the optimiser state.

An operation describes what happens to each parent tensor (a list of edits) and which tensors it
adds. The same edits then grow the weights and, gradient-consistently, the optimiser state.

Why the optimiser rule below is right: at the exact-copy point a new channel ``j`` copies old
channel ``u = src[j]`` and carries the share ``frac[j]`` of its outgoing weight. The child's
gradient w.r.t. anything that *computes* channel j (a producer row, its bias, its BatchNorm
scale/shift) is then ``frac[j]`` times the parent's for channel u, because the loss sees channel j
only through consumer columns scaled by ``frac[j]``. The gradient w.r.t. a consumer column j is the
parent's column u unscaled, because the activation it multiplies equals the parent's. So
first moments (``momentum_buffer``, ``exp_avg``) of producer-side entries are gathered and scaled
by ``frac``, second moments (``exp_avg_sq``) by ``frac**2``, consumer columns are gathered only,
``step`` is copied, and everything new (added layers, kernel padding) starts at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from growsearch.exceptions import TransformError
from growsearch.transforms._channel_map import ChannelMap

__all__ = ["RANDOM_STD", "Draw", "Edit", "Edits", "Gather", "PadKernel", "identity_bn"]

RANDOM_STD = 0.1  # random-pad / random insertions: N(0, 0.1^2), as in the seed article's baseline
_MOMENT_POWER = {"momentum_buffer": 1, "exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 2}


class Draw:
    """The one random source of an operation: numpy, so a seed reproduces the child exactly."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def normal(self, shape: tuple[int, ...] | torch.Size) -> Tensor:
        return torch.from_numpy(self.rng.normal(0.0, RANDOM_STD, size=tuple(shape))).float()


class Edit(Protocol):
    def value(self, t: Tensor, init: str, draw: Draw) -> Tensor: ...

    def moment(self, t: Tensor, power: int, init: str) -> Tensor: ...


def _along(v: Tensor, dim: int, ndim: int) -> Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return v.reshape(shape)


@dataclass(frozen=True)
class Gather:
    """One axis of a tensor follows a channel map.

    ``role`` "out": the tensor holds per-channel values of the widened tensor (producer rows,
    biases, BatchNorm tensors), copied. "in": it reads the widened tensor (consumer columns),
    copied and scaled by ``frac`` so the sum over copies is unchanged.
    ``fill``: random-pad value of added entries (None: N(0, 0.1^2)).
    """

    dim: int
    map: ChannelMap
    role: Literal["out", "in"]
    fill: float | None = None

    def _gather(self, t: Tensor) -> Tensor:
        return t.index_select(self.dim, self.map.src.to(t.device))

    def _copies(self, t: Tensor) -> Tensor:
        return _along(self.map.copy.to(t.device), self.dim, t.dim())

    def value(self, t: Tensor, init: str, draw: Draw) -> Tensor:
        g = self._gather(t)
        if init == "net2net":
            if self.role == "in":
                g = g * _along(self.map.frac.to(t.device, t.dtype), self.dim, t.dim())
            return g
        # random-pad: the original entries stay as they were (no division), added ones are drawn.
        if self.fill is None:
            fresh = draw.normal(g.shape).to(g.device, g.dtype)
        else:
            fresh = torch.full_like(g, self.fill)
        return torch.where(self._copies(g), fresh, g)

    def moment(self, t: Tensor, power: int, init: str) -> Tensor:
        g = self._gather(t)
        if init != "net2net":
            return torch.where(self._copies(g), torch.zeros_like(g), g)
        if self.role == "out":
            g = g * _along(self.map.frac.to(t.device, t.dtype) ** power, self.dim, t.dim())
        return g


@dataclass(frozen=True)
class PadKernel:
    """Pad the two kernel axes of a conv weight by ``extra`` on every side."""

    extra: int

    def value(self, t: Tensor, init: str, draw: Draw) -> Tensor:
        padded = F.pad(t, [self.extra] * 4)  # zeros around the old kernel, which stays centred
        if init == "net2net":
            return padded
        keep = F.pad(torch.ones_like(t, dtype=torch.bool), [self.extra] * 4)
        fresh = draw.normal(padded.shape).to(t.device, t.dtype)
        return torch.where(keep, padded, fresh)

    def moment(self, t: Tensor, power: int, init: str) -> Tensor:
        return F.pad(t, [self.extra] * 4)


@dataclass
class Edits:
    """What an operation does to the tensors: edits of parent tensors and brand-new tensors."""

    changed: dict[str, list[Edit]] = field(default_factory=dict)
    added: dict[str, Tensor] = field(default_factory=dict)

    def edit(self, name: str, edit: Edit) -> None:
        self.changed.setdefault(name, []).append(edit)

    def apply_state(
        self,
        state: dict[str, Tensor],
        init: str,
        draw: Draw,
        like: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """New tensors for the child; the parent's are only read (never modified, never shared).
        Added tensors take the device and float dtype of ``like`` (default: ``state``)."""
        ref = next((t for t in (like or state).values() if t.is_floating_point()), None)
        out: dict[str, Tensor] = {}
        for name, t in state.items():
            v = t.detach()
            for e in self.changed.get(name, []):
                v = e.value(v, init, draw)
            out[name] = v if name in self.changed else v.clone()  # edits return new tensors
        for name, t in self.added.items():
            if ref is not None and t.is_floating_point():
                t = t.to(ref.device, ref.dtype)
            elif ref is not None:
                t = t.to(ref.device)
            out[name] = t
        return out

    def apply_optimizer(
        self,
        opt_state: dict[str, dict[str, Any]],
        params: dict[str, tuple[int, ...]],
        init: str,
    ) -> dict[str, dict[str, Any]]:
        """Grow optimiser state keyed by parameter name (``params``: the child's parameters)."""
        out: dict[str, dict[str, Any]] = {}
        for name, entry in opt_state.items():
            grown: dict[str, Any] = {}
            for key, val in entry.items():
                if not isinstance(val, Tensor) or key == "step":
                    grown[key] = val.detach().clone() if isinstance(val, Tensor) else val
                    continue
                if key not in _MOMENT_POWER:
                    raise TransformError(
                        f"optimizer state of '{name}' has an entry '{key}' that growsearch does "
                        f"not know how to grow; supported: step, {', '.join(_MOMENT_POWER)}"
                    )
                v = val.detach()
                for e in self.changed.get(name, []):
                    v = e.moment(v, _MOMENT_POWER[key], init)
                grown[key] = v if name in self.changed else v.clone()
            out[name] = grown
        template = next(iter(opt_state.values()), None)
        if template is None:
            return out
        ref = next((v for v in template.values() if isinstance(v, Tensor) and v.dim() > 0), None)
        for name in self.added:
            if name not in params:
                continue  # buffers (BatchNorm running statistics) have no optimiser state
            new: dict[str, Any] = {}
            for key, val in template.items():
                if key == "step":
                    new[key] = torch.zeros_like(val) if isinstance(val, Tensor) else 0
                elif isinstance(val, Tensor):
                    like = val if ref is None else ref
                    new[key] = torch.zeros(params[name], device=like.device, dtype=like.dtype)
                else:
                    new[key] = val
            out[name] = new
        return out


def identity_bn(width: int, init: str, eps: float = 1e-5) -> dict[str, Tensor]:
    """BatchNorm tensors that are the identity in eval mode: (x - 0) / sqrt(1 + eps) * gamma + 0
    with gamma = sqrt(1 + eps). random modes keep PyTorch's defaults (near-identity)."""
    gamma = math.sqrt(1.0 + eps) if init == "net2net" else 1.0
    return {
        "weight": torch.full((width,), gamma),
        "bias": torch.zeros(width),
        "running_mean": torch.zeros(width),
        "running_var": torch.ones(width),
        "num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }
