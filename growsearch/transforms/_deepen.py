"""deepen: insert an identity layer after a dense/conv layer (Net2DeeperNet).

``act(I @ act(x)) == act(x)`` only when ``act`` is idempotent (relu, relu6, identity); after any
other activation the inserted block is ``x + f(x)`` with the last layer of ``f`` zero, which is
exact for every activation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from growsearch.builder import param_prefix
from growsearch.exceptions import NotExactError, TransformError
from growsearch.spec import IDEMPOTENT_ACTIVATIONS, Conv, Dense, Layer, Residual, Spec
from growsearch.transforms._common import find_layer, fresh_names, is_network_output
from growsearch.transforms._registry import Prepared, register_operation
from growsearch.transforms._state import Draw, Edits, identity_bn

__all__ = ["prepare_deepen"]

KERNELS = (1, 3, 5, 7)


def _new_layer(
    kind: str, name: str, width: int, kernel: int, act: str, bn: bool, bias: bool
) -> Dense | Conv:
    if kind == "conv":
        return Conv(
            name,
            out=width,
            kernel=kernel,
            stride=1,
            padding=None,
            bias=bias,
            batchnorm=bn,
            activation=act,
        )
    return Dense(name, out=width, bias=bias, batchnorm=bn, activation=act)


def _tensors(layer: Dense | Conv, init: str, draw: Draw, zero: bool) -> dict[str, Tensor]:
    """Weights of an inserted layer: the identity (1 at the kernel centre), zeros, or random."""
    w = layer.out
    core = "linear" if isinstance(layer, Dense) else "conv"
    k = layer.kernel if isinstance(layer, Conv) else 1
    shape = (w, w) if isinstance(layer, Dense) else (w, w, k, k)
    if init != "net2net":
        weight, bias_value = draw.normal(shape), 0.1
    else:
        weight, bias_value = torch.zeros(shape), 0.0
        if not zero:
            idx = torch.arange(w)
            if isinstance(layer, Dense):
                weight[idx, idx] = 1.0
            else:
                weight[idx, idx, k // 2, k // 2] = 1.0
    prefix = param_prefix(layer.name)
    out = {f"{prefix}.{core}.weight": weight}
    if layer.bias:
        out[f"{prefix}.{core}.bias"] = torch.full((w,), bias_value)
    if layer.batchnorm:
        out.update({f"{prefix}.bn.{part}": v for part, v in identity_bn(w, init).items()})
    return out


def _kernel(target: str, args: dict[str, Any]) -> int:
    kernel = args.get("kernel")
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel not in KERNELS:
        even = isinstance(kernel, int) and kernel % 2 == 0
        why = "is even, so an identity kernel has no centre tap" if even else "is not supported"
        raise TransformError(
            f"cannot deepen after '{target}' with kernel {kernel!r}: the kernel {why}; "
            f"use one of {', '.join(map(str, KERNELS))}"
        )
    return kernel


@register_operation(
    "deepen",
    exact=True,
    description="insert an identity layer after a dense/conv layer (Net2DeeperNet); after a "
    "non-idempotent activation a residual block with a zero last layer instead",
    args={
        "kernel": "kernel of an inserted conv: 1, 3, 5 or 7 (odd, identity at the centre); "
        "ignored after a dense layer",
        "batchnorm": "give the inserted layer a BatchNorm set to the identity (eval mode)",
        "allow_residual": "after tanh/sigmoid/gelu/silu/leaky_relu/elu insert a residual block "
        "(true, default) or refuse (false)",
    },
    defaults={"kernel": 3, "batchnorm": False, "allow_residual": True},
)
def prepare_deepen(spec: Spec, target: str, args: dict[str, Any]) -> Prepared:
    layer = find_layer(spec, "deepen after", target)
    if not isinstance(layer, Dense | Conv):
        raise TransformError(
            f"cannot deepen after '{target}': deepen inserts after a dense or conv layer, "
            f"not after '{target}' ({layer.kind})"
        )
    kernel = _kernel(target, args)
    bn, allow_residual = args.get("batchnorm"), args.get("allow_residual")
    if not isinstance(bn, bool) or not isinstance(allow_residual, bool):
        raise TransformError(
            f"deepen '{target}': 'batchnorm' and 'allow_residual' must be true or false"
        )
    if is_network_output(spec, target):
        raise TransformError(
            f"cannot deepen after '{target}': it is the network's output layer, and a layer after "
            "it would only add a linear map on the outputs; deepen after an earlier layer"
        )
    kind = layer.kind
    width = spec.info[target].out_shape[0]
    act = layer.activation
    if kind == "dense":
        kernel = 1
    new: Layer
    if act in IDEMPOTENT_ACTIVATIONS:
        (name,) = fresh_names(spec, [kind])
        inserted = _new_layer(kind, name, width, kernel, act, bn, bias=not bn)
        new, parts, zero_last = inserted, [inserted], False
        how = "identity"
    else:
        if not allow_residual:
            raise NotExactError(
                f"cannot deepen after layer '{target}': its activation '{act}' is not "
                f"idempotent ({act}({act}(x)) != {act}(x)), so an identity layer after it would "
                "change the function; allow a residual insertion (allow_residual: true) or pick "
                f"a layer with activation {', '.join(IDEMPOTENT_ACTIVATIONS)}"
            )
        rname, first, last = fresh_names(spec, ["residual", kind, kind])
        parts = [
            _new_layer(kind, first, width, kernel, act, bn, bias=not bn),
            _new_layer(kind, last, width, kernel, "identity", False, bias=True),
        ]
        new = Residual(rname, layers=tuple(parts), skip="identity", activation="identity")
        zero_last = True
        how = "residual"
    child = spec.insert_after(target, new)

    def make_edits(init: str, draw: Draw) -> Edits:
        edits = Edits()
        for i, part in enumerate(parts):
            edits.added.update(_tensors(part, init, draw, zero=zero_last and i == len(parts) - 1))
        return edits

    info = {
        "inserted": new.name,
        "new_layers": [p.name for p in parts]
        if how == "identity"
        else [new.name, *(p.name for p in parts)],
        "how": how,
        "width": width,
        "activation": act,
        "batchnorm": bn,
        "noise": 0.0,
    }
    if kind == "conv":
        info["kernel"] = kernel
    return Prepared(child, info, make_edits)
