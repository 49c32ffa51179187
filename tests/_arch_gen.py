"""Random tiny architectures for property tests (seeded, reusable by other test modules).

``random_spec(rng)`` draws an MLP or a CNN from every supported layer type: dense/conv with and
without bias, batchnorm and dropout, several activations, kernels 1/3/5, explicit and 'same'
padding, strides, non-square inputs, max/avg pooling, flatten and global average pooling,
standalone batchnorm/activation/dropout/layernorm, residual blocks (identity and projection skip)
and concat blocks, nested now and then. ``prepare_model`` builds it and makes its BatchNorm
statistics non-trivial by a few training steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from growsearch.builder import GrowNet, build_model
from growsearch.spec import ACTIVATIONS, Spec
from growsearch.transforms import GrowResult, apply_operation

__all__ = [
    "IMAGE_INPUTS",
    "grow",
    "make",
    "max_error",
    "prepare_model",
    "random_spec",
    "train_steps",
]

IMAGE_INPUTS = ((1, 7, 5), (3, 9, 6), (2, 6, 8), (1, 5, 5), (2, 4, 7), (1, 8, 8))
Shape = tuple[int, ...]


class _Gen:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def pick(self, options: Any) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def act(self) -> str:
        # relu-family half the time so deepen takes the identity path as often as the residual one
        return self.pick(("relu", "relu", "relu6", "identity", *ACTIVATIONS))

    def width(self, lo: int = 2, hi: int = 5) -> int:
        return int(self.rng.integers(lo, hi + 1))

    # ---- layers that keep the spatial size unless told otherwise --------------------------
    def conv(self, c_out: int, shape: Shape, same: bool = True) -> tuple[dict, Shape]:
        _, h, w = shape
        layer: dict[str, Any] = {
            "type": "conv",
            "out": c_out,
            "kernel": self.pick((1, 3, 3, 5)),
            "bias": self.p(0.7),
            "batchnorm": self.p(0.4),
            "activation": self.act(),
        }
        if self.p(0.15):
            layer["dropout"] = 0.2
        if not same and min(h, w) >= 5 and self.p(0.3):
            layer.update(kernel=3, padding=0)
            return layer, (c_out, h - 2, w - 2)
        if not same and min(h, w) >= 4 and self.p(0.2):
            layer.update(kernel=3, stride=2)  # padding 1: ceil halves
            return layer, (c_out, (h - 1) // 2 + 1, (w - 1) // 2 + 1)
        return layer, (c_out, h, w)

    def dense(self, out: int) -> dict:
        layer: dict[str, Any] = {
            "type": "dense",
            "out": out,
            "bias": self.p(0.7),
            "batchnorm": self.p(0.3),
            "activation": self.act(),
        }
        if self.p(0.15):
            layer["dropout"] = 0.2
        return layer

    def affine(self, c_out: int, shape: Shape) -> dict:
        return self.conv(c_out, shape)[0] if len(shape) == 3 else self.dense(c_out)

    def residual(self, shape: Shape) -> tuple[dict, Shape]:
        c = shape[0]
        projection = self.p(0.4)
        c_out = self.width() if projection else c
        mid = self.width()
        body = [self.affine(mid, shape), self.affine(c_out, (mid, *shape[1:]))]
        if self.p(0.2):
            body.insert(1, {"type": "dropout", "p": 0.1})
        if not projection and c_out >= 2 and self.p(0.2):
            a = int(self.rng.integers(1, c_out))  # a body ending in a concat (same channels)
            body[-1] = {
                "type": "concat",
                "branches": [
                    [self.affine(a, (mid, *shape[1:]))],
                    [self.affine(c_out - a, (mid, *shape[1:]))],
                ],
            }
        layer = {
            "type": "residual",
            "layers": body,
            "skip": "projection" if projection else "identity",
            "activation": self.pick(("identity", "relu", "tanh")),
        }
        return layer, (c_out, *shape[1:])

    def concat(self, shape: Shape) -> tuple[dict, Shape]:
        branches, total = [], 0
        for _ in range(int(self.rng.integers(2, 4))):
            r = self.rng.random()
            if r < 0.25:
                branch: list[dict] = []  # passes the input through
                c = shape[0]
            elif r < 0.4:
                branch = [{"type": "activation", "fn": self.pick(("relu", "tanh"))}]
                c = shape[0]
            else:
                c = self.width(1, 4)
                branch = [self.affine(c, shape)]
                if self.p(0.3):
                    branch.append(self.affine(self.width(1, 3), (c, *shape[1:])))
                    c = branch[-1]["out"]
            branches.append(branch)
            total += c
        return {"type": "concat", "branches": branches}, (total, *shape[1:])

    def plain(self, shape: Shape) -> dict:
        kind = self.pick(("batchnorm", "activation", "dropout"))
        if kind == "activation":
            return {"type": "activation", "fn": self.act()}
        if kind == "dropout":
            return {"type": "dropout", "p": 0.3}
        return {"type": "batchnorm"}

    # ---- whole networks ----------------------------------------------------------------------
    def block(self, shape: Shape, first: bool) -> tuple[list[dict], Shape]:
        r = self.rng.random()
        if r < 0.15 and (not first or self.p(0.3)):
            layer, shape = self.residual(shape)  # a residual first ties its skip to the input
            return [layer], shape
        if r < 0.3:
            layer, shape = self.concat(shape)
            return [layer], shape
        if r < 0.4 and not first:
            return [self.plain(shape)], shape
        if len(shape) == 3:
            layer, out = self.conv(self.width(), shape, same=False)
            layers = [layer]
            if min(out[1:]) >= 2 and self.p(0.35):
                layers.append({"type": self.pick(("maxpool", "avgpool")), "size": 2})
                out = (out[0], out[1] // 2, out[2] // 2)
            return layers, out
        layers = [self.dense(self.width(2, 6))]
        if self.p(0.15):
            layers.append({"type": "layernorm"})
        return layers, (layers[0]["out"],)

    def network(self) -> dict:
        image = self.p(0.65)
        input_shape: Shape = self.pick(IMAGE_INPUTS) if image else (self.width(3, 6),)
        shape = input_shape
        layers: list[dict] = []
        if image:
            for i in range(int(self.rng.integers(1, 4))):
                new, shape = self.block(shape, first=i == 0)
                layers += new
            if self.p(0.6):
                layers.append({"type": "flatten"})
                shape = (shape[0] * shape[1] * shape[2],)
                if shape[0] <= 40 and self.p(0.15):
                    # a residual right after flatten: its group derives from the conv's map
                    body = [self.dense(self.width()), self.dense(shape[0])]
                    layers.append({"type": "residual", "layers": body})
            else:
                layers.append({"type": "global_avgpool"})
                shape = (shape[0],)
        for i in range(int(self.rng.integers(0 if image else 1, 3))):
            new, shape = self.block(shape, first=not image and i == 0)
            layers += new
        layers.append({"type": "dense", "out": self.width(2, 4), "bias": self.p(0.8)})
        return {"input_shape": list(input_shape), "layers": layers}


def random_spec(rng: np.random.Generator) -> Spec:
    """A random valid architecture (shapes checked by ``Spec.from_dict``)."""
    return Spec.from_dict(_Gen(rng).network())


def train_steps(
    model: nn.Module, steps: int, rng: np.random.Generator, batch: int = 16, lr: float = 0.05
) -> torch.optim.Optimizer:
    """A few SGD steps with momentum on random data (train mode), so BatchNorm running
    statistics, gammas and betas move away from their defaults; returns the optimiser."""
    spec: Spec = model.spec  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    classes = spec.output_shape[0]
    for _ in range(steps):
        x = torch.randn((batch, *spec.input_shape), generator=gen)
        y = torch.randint(0, classes, (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return opt


def prepare_model(spec: Spec, rng: np.random.Generator, steps: int = 3) -> tuple[GrowNet, dict]:
    """Build ``spec``, give its BatchNorms random statistics and train a few steps.
    Returns the model (eval mode) and its optimiser state keyed by parameter name."""
    model = build_model(spec, seed=int(rng.integers(2**31)))
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    opt = train_steps(model, steps, rng)
    names = {id(p): n for n, p in model.named_parameters()}
    opt_state = {
        names[id(p)]: {"momentum_buffer": s["momentum_buffer"].detach().clone()}
        for p, s in opt.state.items()
        if s.get("momentum_buffer") is not None
    }
    return model, opt_state


# ---- helpers for hand-written cases -----------------------------------------------------------
def make(layers: list[dict], input_shape: list[int], seed: int = 0) -> tuple[Spec, GrowNet]:
    """Build a spec from layer dicts with random, non-default BatchNorm statistics (eval mode)."""
    spec = Spec.from_dict({"input_shape": input_shape, "layers": layers})
    model = build_model(spec, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "bn.bias")):
                t.copy_(torch.rand(t.shape, generator=gen) * 2 - 1)
            elif name.endswith(("running_var", "bn.weight")):
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 + 0.5)
    return spec, model.eval()


def grow(
    spec: Spec, model: nn.Module, op: Any, seed: int = 0, **kw: Any
) -> tuple[GrowResult, GrowNet]:
    """Apply ``op`` and build the child from its own round-tripped spec, loaded strictly."""
    result = apply_operation(spec, model.state_dict(), op, seed, **kw)
    child = build_model(Spec.from_json(result.spec.to_json()))
    child.load_state_dict(result.state_dict, strict=True)
    return result, child.eval()


def max_error(parent: nn.Module, child: nn.Module, shape: Shape, n: int = 8) -> tuple[float, float]:
    """(max |child(x) - parent(x)|, 1e-5 * max(1, max |parent(x)|)) on a random probe batch."""
    x = torch.randn((n, *shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = parent(x)
        return (child(x) - ref).abs().max().item(), 1e-5 * max(1.0, ref.abs().max().item())
