"""add_skip: wrap consecutive layers into a residual block whose projection skip starts at zero,
so ``body(x) + 0 @ x == body(x)`` and training can then open the shortcut."""

from __future__ import annotations

from typing import Any

import torch

from growsearch.builder import param_prefix
from growsearch.exceptions import TransformError
from growsearch.spec import Conv, Dense, Layer, Residual, Spec
from growsearch.transforms._common import find_layer, fresh_names, int_arg
from growsearch.transforms._registry import Prepared, register_operation
from growsearch.transforms._state import Draw, Edits

__all__ = ["prepare_add_skip"]


def _has_weights(layers: tuple[Layer, ...]) -> bool:
    for layer in layers:
        if isinstance(layer, Dense | Conv | Residual) or any(
            _has_weights(child) for child in layer.children()
        ):
            return True
    return False


@register_operation(
    "add_skip",
    exact=True,
    description="wrap 'span' consecutive layers into a residual block with a zero-initialised "
    "projection skip (1x1 conv or linear)",
    args={
        "span": "how many consecutive layers, starting at the target, the block wraps (default 1)"
    },
    defaults={"span": 1},
)
def prepare_add_skip(spec: Spec, target: str, args: dict[str, Any]) -> Prepared:
    find_layer(spec, "add a skip at", target)
    span = int_arg(f"add_skip '{target}'", args, "span")
    seq = spec.sequence_of(target)
    start = next(i for i, layer in enumerate(seq) if layer.name == target)
    body = seq[start : start + span]
    where = f"cannot add a skip over {span} layer(s) from '{target}'"
    if start + span > len(seq):
        raise TransformError(
            f"{where}: only {len(seq) - start} layer(s) follow in its sequence; use a smaller span"
        )
    if seq is spec.layers and start + span == len(seq):
        raise TransformError(
            f"{where}: the span contains the network's last layer '{seq[-1].name}', whose "
            "output is the network's output; end the span earlier"
        )
    if not _has_weights(body):
        raise TransformError(
            f"{where}: the span has no dense, conv or residual layer, so a skip around it adds "
            "nothing; start the span at a layer with weights"
        )
    in_shape = spec.info[body[0].name].in_shape
    out_shape = spec.info[body[-1].name].out_shape
    if len(in_shape) != len(out_shape) or in_shape[1:] != out_shape[1:]:
        raise TransformError(
            f"{where}: the span maps {list(in_shape)} to {list(out_shape)}, and a projection "
            "skip (1x1 conv or linear, stride 1) needs the same spatial size; choose a span "
            "without pooling, strides or flattening"
        )
    (name,) = fresh_names(spec, ["residual"])
    block = Residual(name, layers=tuple(body), skip="projection", activation="identity")
    inside = {layer.name for layer in body}
    child = spec.map_layers(
        lambda x: block if x.name == target else (() if x.name in inside else x)
    )
    child.validate()
    shape = (out_shape[0], in_shape[0]) + ((1, 1) if len(in_shape) == 3 else ())

    def make_edits(init: str, draw: Draw) -> Edits:
        weight = torch.zeros(shape) if init == "net2net" else draw.normal(shape)
        return Edits(added={f"{param_prefix(name)}.skip.weight": weight})

    info = {"inserted": name, "new_layers": [name], "wrapped": [x.name for x in body], "noise": 0.0}
    return Prepared(child, info, make_edits)
