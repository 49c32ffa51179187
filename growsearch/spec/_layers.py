"""Layer and network descriptions: frozen, JSON-serialisable, hashable.

Every layer has a ``name`` that is unique in its network. Parameter names of the built module are
derived from it (``layers.<name>.<part>.<tensor>``), so inserting a layer never renames the
tensors of the others, and transforms can address tensors by layer name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "ACTIVATIONS",
    "IDEMPOTENT_ACTIVATIONS",
    "Activation",
    "AvgPool",
    "BatchNorm",
    "Concat",
    "Conv",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LayerNorm",
    "MaxPool",
    "Residual",
]

ACTIVATIONS = ("identity", "relu", "relu6", "tanh", "sigmoid", "gelu", "silu", "leaky_relu", "elu")
# act(act(x)) == act(x): an identity layer inserted after these (with the same activation) is exact.
IDEMPOTENT_ACTIVATIONS = ("identity", "relu", "relu6")


@dataclass(frozen=True)
class _Base:
    kind: ClassVar[str] = ""
    name: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and f.name == "layers":
                value = [layer.to_dict() for layer in value]
            elif isinstance(value, tuple) and f.name == "branches":
                value = [[layer.to_dict() for layer in branch] for branch in value]
            out[f.name] = value
        return out

    def children(self) -> Iterator[tuple[Layer, ...]]:
        """The nested layer sequences of a container layer (none for plain layers)."""
        return iter(())


@dataclass(frozen=True)
class Dense(_Base):
    """Linear layer, optionally followed by batchnorm, activation and dropout (in that order)."""

    kind: ClassVar[str] = "dense"
    out: int = 0
    bias: bool = True
    batchnorm: bool = False
    activation: str = "identity"
    dropout: float = 0.0


@dataclass(frozen=True)
class Conv(_Base):
    """2-D convolution + optional batchnorm, activation, dropout. ``padding`` None means 'same'."""

    kind: ClassVar[str] = "conv"
    out: int = 0
    kernel: int = 3
    stride: int = 1
    padding: int | None = None
    bias: bool = True
    batchnorm: bool = False
    activation: str = "identity"
    dropout: float = 0.0

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding


@dataclass(frozen=True)
class MaxPool(_Base):
    kind: ClassVar[str] = "maxpool"
    size: int = 2
    stride: int | None = None  # None: same as size


@dataclass(frozen=True)
class AvgPool(_Base):
    kind: ClassVar[str] = "avgpool"
    size: int = 2
    stride: int | None = None


@dataclass(frozen=True)
class Flatten(_Base):
    """(C, H, W) -> (C*H*W,): channel c owns features c*H*W ... (c+1)*H*W - 1."""

    kind: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class GlobalAvgPool(_Base):
    kind: ClassVar[str] = "global_avgpool"


@dataclass(frozen=True)
class BatchNorm(_Base):
    kind: ClassVar[str] = "batchnorm"


@dataclass(frozen=True)
class Activation(_Base):
    kind: ClassVar[str] = "activation"
    fn: str = "relu"


@dataclass(frozen=True)
class Dropout(_Base):
    kind: ClassVar[str] = "dropout"
    p: float = 0.5


@dataclass(frozen=True)
class LayerNorm(_Base):
    """LayerNorm over the features of a 1-D input (it normalises across the widened dimension)."""

    kind: ClassVar[str] = "layernorm"


@dataclass(frozen=True)
class Residual(_Base):
    """``act(body(x) + skip(x))``; skip is the identity or a bias-free 1x1 conv / linear."""

    kind: ClassVar[str] = "residual"
    layers: tuple[Layer, ...] = field(default_factory=tuple)
    skip: str = "identity"  # identity | projection
    activation: str = "identity"

    def children(self) -> Iterator[tuple[Layer, ...]]:
        yield self.layers


@dataclass(frozen=True)
class Concat(_Base):
    """Runs each branch on the same input and concatenates the outputs along the channel axis."""

    kind: ClassVar[str] = "concat"
    branches: tuple[tuple[Layer, ...], ...] = field(default_factory=tuple)

    def children(self) -> Iterator[tuple[Layer, ...]]:
        yield from self.branches


Layer = (
    Dense
    | Conv
    | MaxPool
    | AvgPool
    | Flatten
    | GlobalAvgPool
    | BatchNorm
    | Activation
    | Dropout
    | LayerNorm
    | Residual
    | Concat
)

LAYER_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (
        Dense,
        Conv,
        MaxPool,
        AvgPool,
        Flatten,
        GlobalAvgPool,
        BatchNorm,
        Activation,
        Dropout,
        LayerNorm,
        Residual,
        Concat,
    )
}
