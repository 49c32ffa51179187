"""Small helpers the operations share: finding layers, naming tensors and new layers."""

from __future__ import annotations

import re
from typing import Any

from growsearch.builder import param_prefix
from growsearch.exceptions import SpecError, TransformError
from growsearch.spec import Conv, Dense, Layer, Spec

__all__ = [
    "affine_tensors",
    "batchnorm_tensors",
    "core_weight",
    "find_layer",
    "fresh_names",
    "int_arg",
    "is_network_output",
]


def find_layer(spec: Spec, op: str, target: str) -> Layer:
    try:
        return spec.find(target)
    except SpecError as e:
        raise TransformError(f"cannot {op} '{target}': {e}") from None


def core_weight(name: str, kind: str) -> str:
    """Name of the weight of a dense/conv layer or of a residual block's projection skip."""
    part = {"dense": "linear", "conv": "conv", "skip": "skip"}[kind]
    return f"{param_prefix(name)}.{part}.weight"


def affine_tensors(layer: Dense | Conv) -> list[tuple[str, float | None]]:
    """Per-output-channel tensors of a dense/conv layer, with their random-pad fill value
    (None: N(0, 0.1^2)); the weight comes first."""
    prefix = param_prefix(layer.name)
    out: list[tuple[str, float | None]] = [(core_weight(layer.name, layer.kind), None)]
    if layer.bias:
        core = "linear" if isinstance(layer, Dense) else "conv"
        out.append((f"{prefix}.{core}.bias", 0.1))
    if layer.batchnorm:
        out.extend(batchnorm_tensors(f"{prefix}.bn"))
    return out


def batchnorm_tensors(prefix: str) -> list[tuple[str, float | None]]:
    # num_batches_tracked is a scalar count and is copied unchanged.
    return [
        (f"{prefix}.weight", 1.0),
        (f"{prefix}.bias", 0.0),
        (f"{prefix}.running_mean", 0.0),
        (f"{prefix}.running_var", 1.0),
    ]


def is_network_output(spec: Spec, name: str) -> bool:
    return spec.layers[-1].name == name


def fresh_names(spec: Spec, kinds: list[str]) -> list[str]:
    """New layer names, one per kind: the first from ``spec.fresh_name``, the next ones continue
    its numbering so they never collide with each other."""
    names = [spec.fresh_name(kinds[0])]
    taken = set(spec.names()) | set(names)
    n = int(re.search(r"(\d+)$", names[0]).group(1))  # type: ignore[union-attr]
    for kind in kinds[1:]:
        n += 1
        while f"{kind}{n}" in taken:
            n += 1
        names.append(f"{kind}{n}")
        taken.add(names[-1])
    return names


def int_arg(op: str, args: dict[str, Any], key: str, *, minimum: int = 1) -> int:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TransformError(
            f"{op}: argument '{key}' must be an integer >= {minimum}, got {value!r}"
        )
    return value
