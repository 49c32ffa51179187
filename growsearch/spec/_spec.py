"""The network description: input shape + ordered layers, with JSON round-trip and a stable hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from growsearch.exceptions import SpecError
from growsearch.spec._layers import Concat, Dense, Layer, Residual
from growsearch.spec._parse import did_you_mean, parse_layers
from growsearch.spec._shapes import LayerInfo, infer_shapes

__all__ = ["LayerPath", "Spec"]

# Where a layer sits: the chain of (container name or None for the top level, branch index,
# position in that sequence).
LayerPath = tuple[tuple[str | None, int, int], ...]


@dataclass(frozen=True)
class Spec:
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Any, where: str = "model") -> Spec:
        """Parse and validate (shapes included); raises SpecError listing every problem."""
        problems: list[str] = []
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: must be a mapping with 'input_shape' and 'layers'")
        for key in raw:
            if key not in ("input_shape", "layers"):
                hint = did_you_mean(str(key), ("input_shape", "layers"))
                problems.append(f"{where}: unknown key '{key}'{hint}")
        shape = raw.get("input_shape")
        if (
            not isinstance(shape, list | tuple)
            or len(shape) not in (1, 3)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
        ):
            problems.append(
                f"{where}.input_shape: must be [C, H, W] for images or [D] for tabular data "
                f"(positive integers), got {shape!r}"
            )
            shape = None
        if "layers" not in raw or not raw.get("layers"):
            problems.append(f"{where}.layers: needs at least one layer")
            layers: tuple[Layer, ...] = ()
        else:
            layers = parse_layers(raw["layers"], f"{where}.layers", problems)
        if problems:
            raise SpecError(_join(problems))
        spec = cls(tuple(int(s) for s in shape), layers)  # type: ignore[union-attr]
        spec.validate()
        return spec

    @classmethod
    def from_json(cls, text: str) -> Spec:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec JSON is not valid JSON: {e}") from e
        return cls.from_dict(raw, where="spec")

    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "layers": [x.to_dict() for x in self.layers]}

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON: sorted keys, so equal specs give equal text (and hash)."""
        sep = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_dict(), sort_keys=True, separators=sep, indent=indent)

    @cached_property
    def hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    # ---- validation and derived numbers -------------------------------------------------
    def validate(self) -> None:
        _ = self._shapes  # raises SpecError

    @cached_property
    def _shapes(self) -> tuple[tuple[int, ...], dict[str, LayerInfo]]:
        return infer_shapes(self.layers, self.input_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._shapes[0]

    @property
    def info(self) -> dict[str, LayerInfo]:
        """Per-layer in/out shape, parameter and FLOP count, keyed by layer name."""
        return self._shapes[1]

    @property
    def num_params(self) -> int:
        return sum(i.params for i in self.info.values())

    @property
    def flops(self) -> int:
        """FLOPs of one forward pass of one sample (2 x multiply-accumulates)."""
        return sum(i.flops for i in self.info.values())

    @property
    def num_classes(self) -> int | None:
        out = self.output_shape
        return out[0] if len(out) == 1 else None

    @property
    def depth(self) -> int:
        """Number of dense and conv layers (nested ones included)."""
        return sum(1 for _, x in self.walk() if x.kind in ("dense", "conv"))

    # ---- navigation ----------------------------------------------------------------------
    def walk(self) -> Iterator[tuple[LayerPath, Layer]]:
        """Every layer, containers before their contents, in forward order."""
        yield from _walk(self.layers, (), None, 0)

    @cached_property
    def _by_name(self) -> dict[str, tuple[LayerPath, Layer]]:
        return {layer.name: (path, layer) for path, layer in self.walk()}

    def names(self) -> list[str]:
        return list(self._by_name)

    def find(self, name: str) -> Layer:
        try:
            return self._by_name[name][1]
        except KeyError:
            raise SpecError(
                f"no layer named '{name}'{did_you_mean(name, self.names())}; layers are: "
                f"{', '.join(self.names())}"
            ) from None

    def path(self, name: str) -> LayerPath:
        self.find(name)
        return self._by_name[name][0]

    def parent_of(self, name: str) -> Layer | None:
        """The container (residual/concat) directly holding ``name``, or None at the top level."""
        owner = self.path(name)[-1][0]
        return None if owner is None else self.find(owner)

    def sequence_of(self, name: str) -> tuple[Layer, ...]:
        """The layer sequence that holds ``name``."""
        owner, branch, _ = self.path(name)[-1]
        if owner is None:
            return self.layers
        container = self.find(owner)
        return list(container.children())[branch]

    def fresh_name(self, kind: str) -> str:
        """A new layer name ``<kind><n>`` not used in this spec (deterministic)."""
        taken = set(self.names())
        numbers = [int(m.group(1)) for n in taken if (m := re.search(r"(\d+)$", n))]
        n = max(numbers, default=-1) + 1
        while f"{kind}{n}" in taken:
            n += 1
        return f"{kind}{n}"

    # ---- editing (returns new specs; the original never changes) ------------------------
    def map_layers(self, fn: Callable[[Layer], tuple[Layer, ...] | Layer]) -> Spec:
        """Apply ``fn`` bottom-up to every layer; it may return one layer or several."""
        return dataclasses.replace(self, layers=_map_seq(self.layers, fn))

    def replace_layer(self, name: str, *new: Layer) -> Spec:
        """Replace layer ``name`` by ``new`` (zero, one or several layers); validates shapes."""
        self.find(name)
        spec = self.map_layers(lambda x: tuple(new) if x.name == name else x)
        spec.validate()
        return spec

    def insert_after(self, name: str, *new: Layer) -> Spec:
        layer = self.find(name)
        return self.replace_layer(name, layer, *new)

    def summary(self) -> str:
        """One line per top-level layer, for logs and dashboard notes."""
        parts = []
        for layer in self.layers:
            parts.append(_describe(layer))
        return " -> ".join(parts)


def _describe(layer: Layer) -> str:
    if isinstance(layer, Dense):
        return f"dense{layer.out}"
    if layer.kind == "conv":
        return f"conv{layer.out}k{layer.kernel}"  # type: ignore[union-attr]
    if isinstance(layer, Residual):
        return "res[" + " ".join(_describe(x) for x in layer.layers) + "]"
    if isinstance(layer, Concat):
        return "cat[" + " | ".join(" ".join(_describe(x) for x in b) for b in layer.branches) + "]"
    return layer.kind


def _walk(
    layers: tuple[Layer, ...], prefix: LayerPath, owner: str | None, branch: int
) -> Iterator[tuple[LayerPath, Layer]]:
    for i, layer in enumerate(layers):
        path = (*prefix, (owner, branch, i))
        yield path, layer
        for b, child in enumerate(layer.children()):
            yield from _walk(child, path, layer.name, b)


def _map_seq(
    layers: tuple[Layer, ...], fn: Callable[[Layer], tuple[Layer, ...] | Layer]
) -> tuple[Layer, ...]:
    out: list[Layer] = []
    for layer in layers:
        if isinstance(layer, Residual):
            layer = dataclasses.replace(layer, layers=_map_seq(layer.layers, fn))
        elif isinstance(layer, Concat):
            layer = dataclasses.replace(
                layer, branches=tuple(_map_seq(b, fn) for b in layer.branches)
            )
        result = fn(layer)
        out.extend(result if isinstance(result, tuple) else (result,))
    return tuple(out)


def _join(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the architecture:\n" + "\n".join(
        f"  - {p}" for p in problems
    )
