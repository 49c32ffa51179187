"""Spec -> ``nn.Module`` with stable parameter names.

Every layer of the spec, nested ones included, is a module in one flat ``ModuleDict`` keyed by
its unique name, so tensor names are ``layers.<layer name>.<part>.<tensor>`` whatever the nesting
and whatever is inserted elsewhere:

- dense: ``linear.weight``, ``linear.bias``, ``bn.{weight,bias,running_mean,running_var,...}``
- conv: ``conv.weight``, ``conv.bias``, ``bn.*``
- batchnorm: ``bn.*``;  layernorm: ``ln.weight``, ``ln.bias``
- residual with a projection skip: ``skip.weight`` (1x1 conv or linear, no bias)
"""

from __future__ import annotations

import torch
from torch import nn

from growsearch.spec import (
    Activation,
    AvgPool,
    BatchNorm,
    Concat,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    MaxPool,
    Residual,
    Spec,
)

__all__ = ["GrowNet", "build_model", "make_activation", "param_prefix"]


def param_prefix(layer_name: str) -> str:
    """Prefix of every tensor of layer ``layer_name`` in the built module's state dict."""
    return f"layers.{layer_name}"


def make_activation(name: str) -> nn.Module:
    table: dict[str, type[nn.Module]] = {
        "identity": nn.Identity,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "leaky_relu": nn.LeakyReLU,
        "elu": nn.ELU,
    }
    return table[name]()


class _Affine(nn.Module):
    """linear/conv -> batchnorm -> activation -> dropout; absent parts are skipped."""

    def __init__(
        self, core: str, op: nn.Module, bn: nn.Module | None, act: str, dropout: float
    ) -> None:
        super().__init__()
        self._core = core
        self.add_module(core, op)
        self.bn = bn
        self.act = make_activation(act)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, self._core)(x)
        if self.bn is not None:
            x = self.bn(x)
        x = self.act(x)
        if self.drop is not None:
            x = self.drop(x)
        return x


class _Norm(nn.Module):
    def __init__(self, attr: str, norm: nn.Module) -> None:
        super().__init__()
        self._attr = attr
        self.add_module(attr, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self._attr)(x)


class _ResidualJoin(nn.Module):
    """The skip path and the activation after the add; the body lives in the flat ModuleDict."""

    def __init__(self, skip: nn.Module | None, act: str) -> None:
        super().__init__()
        self.skip = skip
        self.act = make_activation(act)


def _make(layer: Layer, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
    if isinstance(layer, Dense):
        bn = nn.BatchNorm1d(layer.out) if layer.batchnorm else None
        return _Affine(
            "linear",
            nn.Linear(in_shape[0], layer.out, bias=layer.bias),
            bn,
            layer.activation,
            layer.dropout,
        )
    if isinstance(layer, Conv):
        conv = nn.Conv2d(
            in_shape[0],
            layer.out,
            layer.kernel,
            stride=layer.stride,
            padding=layer.pad,
            bias=layer.bias,
        )
        bn2d = nn.BatchNorm2d(layer.out) if layer.batchnorm else None
        return _Affine("conv", conv, bn2d, layer.activation, layer.dropout)
    if isinstance(layer, MaxPool):
        return nn.MaxPool2d(layer.size, stride=layer.stride or layer.size)
    if isinstance(layer, AvgPool):
        return nn.AvgPool2d(layer.size, stride=layer.stride or layer.size)
    if isinstance(layer, Flatten):
        return nn.Flatten(1)
    if isinstance(layer, GlobalAvgPool):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    if isinstance(layer, BatchNorm):
        bn_cls = nn.BatchNorm1d if len(in_shape) == 1 else nn.BatchNorm2d
        return _Norm("bn", bn_cls(in_shape[0]))
    if isinstance(layer, LayerNorm):
        return _Norm("ln", nn.LayerNorm(in_shape[0]))
    if isinstance(layer, Activation):
        return make_activation(layer.fn)
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, Residual):
        skip: nn.Module | None = None
        if layer.skip == "projection":
            if len(in_shape) == 3:
                skip = nn.Conv2d(in_shape[0], out_shape[0], 1, bias=False)
            else:
                skip = nn.Linear(in_shape[0], out_shape[0], bias=False)
        return _ResidualJoin(skip, layer.activation)
    if isinstance(layer, Concat):
        return nn.Identity()
    raise TypeError(f"unsupported layer {layer!r}")  # pragma: no cover


class GrowNet(nn.Module):
    """The network a spec describes. ``forward`` follows the spec's layer tree."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        spec.validate()
        self.spec = spec
        self.layers = nn.ModuleDict()
        for _, layer in spec.walk():
            info = spec.info[layer.name]
            self.layers[layer.name] = _make(layer, info.in_shape, info.out_shape)

    def _run(self, seq: tuple[Layer, ...], x: torch.Tensor) -> torch.Tensor:
        for layer in seq:
            module = self.layers[layer.name]
            if isinstance(layer, Residual):
                assert isinstance(module, _ResidualJoin)
                y = self._run(layer.layers, x)
                s = x if module.skip is None else module.skip(x)
                x = module.act(y + s)
            elif isinstance(layer, Concat):
                x = torch.cat([self._run(b, x) for b in layer.branches], dim=1)
            else:
                x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.spec.layers, x)


def build_model(spec: Spec, seed: int | None = None) -> GrowNet:
    """Build the module; with ``seed`` the initial weights are reproducible without touching the
    global RNG state."""
    if seed is None:
        return GrowNet(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GrowNet(spec)
