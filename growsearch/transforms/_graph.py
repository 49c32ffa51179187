"""Which tensors of a network share a channel axis, and which layers write and read them.

Widening changes the channel count of a whole *group* of tensors at once: elementwise and
per-channel layers (activation, dropout, pooling, BatchNorm, global pooling) pass the channel axis
through, and a residual block's identity skip ties its input, its body's output and its own output
together (both sides of an add need the same mapping). Flatten and concat create new groups whose
maps are derived from their inputs'. Tensors are numbered; groups are union-find classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from growsearch.spec import (
    BatchNorm,
    Concat,
    Conv,
    Dense,
    Flatten,
    Layer,
    LayerNorm,
    Residual,
    Spec,
)

__all__ = ["Affine", "Derivation", "FlowGraph", "flow_graph"]

# What creates a tensor: ("input", ""), ("layer", dense/conv name), ("flatten", name),
# ("concat", name) or ("layernorm", name).
Origin = tuple[str, str]


@dataclass(frozen=True)
class Affine:
    """A dense/conv layer or a projection skip: reads tensor ``inp``, writes tensor ``out``."""

    name: str
    kind: str  # "dense" | "conv" | "skip"
    inp: int
    out: int


@dataclass(frozen=True)
class Derivation:
    """A flatten (one input) or concat (one input per branch) that makes a new channel group."""

    kind: str  # "flatten" | "concat"
    name: str
    inputs: tuple[int, ...]
    out: int
    hw: int = 1  # flatten: features per channel (H * W of its input)


@dataclass
class FlowGraph:
    spec: Spec
    channels: list[int] = field(default_factory=list)
    origin: list[Origin] = field(default_factory=list)
    affines: list[Affine] = field(default_factory=list)
    batchnorms: list[tuple[str, int]] = field(default_factory=list)
    layernorms: list[tuple[str, int]] = field(default_factory=list)
    derivations: list[Derivation] = field(default_factory=list)  # post-order (inputs first)
    ties: list[tuple[str, int]] = field(default_factory=list)  # (residual name, tied tensor)
    output: int = 0
    _up: list[int] = field(default_factory=list)

    # ---- union-find ---------------------------------------------------------------------
    def group(self, t: int) -> int:
        while self._up[t] != t:
            self._up[t] = self._up[self._up[t]]
            t = self._up[t]
        return t

    def _tie(self, a: int, b: int) -> None:
        self._up[self.group(a)] = self.group(b)

    def _new(self, channels: int, origin: Origin) -> int:
        self.channels.append(channels)
        self.origin.append(origin)
        self._up.append(len(self._up))
        return len(self._up) - 1

    # ---- construction -------------------------------------------------------------------
    def _seq(self, layers: tuple[Layer, ...], t: int) -> int:
        for layer in layers:
            t = self._layer(layer, t)
        return t

    def _layer(self, layer: Layer, t: int) -> int:
        info = self.spec.info[layer.name]
        if isinstance(layer, Dense | Conv):
            out = self._new(info.out_shape[0], ("layer", layer.name))
            self.affines.append(Affine(layer.name, layer.kind, t, out))
            return out
        if isinstance(layer, BatchNorm):
            self.batchnorms.append((layer.name, t))
            return t
        if isinstance(layer, LayerNorm):
            self.layernorms.append((layer.name, t))
            return self._new(info.out_shape[0], ("layernorm", layer.name))
        if isinstance(layer, Flatten):
            out = self._new(info.out_shape[0], ("flatten", layer.name))
            _, h, w = info.in_shape
            self.derivations.append(Derivation("flatten", layer.name, (t,), out, h * w))
            return out
        if isinstance(layer, Concat):
            outs = tuple(self._seq(branch, t) for branch in layer.branches)
            out = self._new(info.out_shape[0], ("concat", layer.name))
            self.derivations.append(Derivation("concat", layer.name, outs, out))
            return out
        if isinstance(layer, Residual):
            y = self._seq(layer.layers, t)
            if layer.skip == "identity":
                self._tie(t, y)
                self.ties.append((layer.name, y))
            else:
                self.affines.append(Affine(layer.name, "skip", t, y))
            return y
        return t  # activation, dropout, pooling, global pooling: channels pass through

    @classmethod
    def build(cls, spec: Spec) -> FlowGraph:
        g = cls(spec)
        first = g._new(spec.input_shape[0], ("input", ""))
        g.output = g._seq(spec.layers, first)
        return g

    # ---- queries --------------------------------------------------------------------------
    def members(self, group: int) -> list[int]:
        return [t for t in range(len(self._up)) if self.group(t) == group]

    def tied_by(self, group: int) -> list[str]:
        """Residual blocks whose identity skip ties tensors of this group together."""
        return [name for name, t in self.ties if self.group(t) == group]


@lru_cache(maxsize=64)
def flow_graph(spec: Spec) -> FlowGraph:
    return FlowGraph.build(spec)
