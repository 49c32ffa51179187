"""Shape inference, parameter and FLOP counts for a layer sequence.

Shapes exclude the batch axis: ``(C, H, W)`` for images and ``(D,)`` for features.
FLOPs count 2 x multiply-accumulates of dense, conv and projection layers (the usual convention);
elementwise work is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from growsearch.exceptions import SpecError
from growsearch.spec._layers import (
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
)

__all__ = ["LayerInfo", "infer_shapes"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    in_shape: Shape
    out_shape: Shape
    params: int
    flops: int


def _pool_out(size: int, k: int, stride: int, pad: int = 0) -> int:
    return (size + 2 * pad - k) // stride + 1


def _one(layer: Layer, shape: Shape, info: dict[str, LayerInfo]) -> Shape:
    n = layer.name
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise SpecError(
                f"layer '{n}' (dense) needs a 1-D input but gets {list(shape)}; "
                "put a 'flatten' or 'global_avgpool' layer before it"
            )
        d = shape[0]
        params = d * layer.out + (layer.out if layer.bias else 0)
        params += 2 * layer.out if layer.batchnorm else 0
        info[n] = LayerInfo(shape, (layer.out,), params, 2 * d * layer.out)
        return (layer.out,)
    if isinstance(layer, Conv):
        if len(shape) != 3:
            raise SpecError(f"layer '{n}' (conv) needs a (C, H, W) input but gets {list(shape)}")
        c, h, w = shape
        ho = _pool_out(h, layer.kernel, layer.stride, layer.pad)
        wo = _pool_out(w, layer.kernel, layer.stride, layer.pad)
        if ho < 1 or wo < 1:
            raise SpecError(
                f"layer '{n}' (conv, kernel {layer.kernel}) does not fit its {h}x{w} input; "
                "use a smaller kernel, more padding or fewer pooling layers before it"
            )
        params = c * layer.out * layer.kernel**2 + (layer.out if layer.bias else 0)
        params += 2 * layer.out if layer.batchnorm else 0
        out = (layer.out, ho, wo)
        info[n] = LayerInfo(shape, out, params, 2 * c * layer.kernel**2 * layer.out * ho * wo)
        return out
    if isinstance(layer, MaxPool | AvgPool):
        if len(shape) != 3:
            raise SpecError(
                f"layer '{n}' ({layer.kind}) needs a (C, H, W) input, gets {list(shape)}"
            )
        c, h, w = shape
        stride = layer.stride or layer.size
        ho, wo = _pool_out(h, layer.size, stride), _pool_out(w, layer.size, stride)
        if ho < 1 or wo < 1:
            raise SpecError(
                f"layer '{n}' ({layer.kind}, size {layer.size}) does not fit its {h}x{w} input; "
                "remove it or use a smaller size"
            )
        info[n] = LayerInfo(shape, (c, ho, wo), 0, 0)
        return (c, ho, wo)
    if isinstance(layer, Flatten | GlobalAvgPool):
        if len(shape) != 3:
            raise SpecError(
                f"layer '{n}' ({layer.kind}) needs a (C, H, W) input, gets {list(shape)}"
            )
        flat: Shape = (
            (shape[0] * shape[1] * shape[2],) if isinstance(layer, Flatten) else (shape[0],)
        )
        info[n] = LayerInfo(shape, flat, 0, 0)
        return flat
    if isinstance(layer, BatchNorm):
        info[n] = LayerInfo(shape, shape, 2 * shape[0], 0)
        return shape
    if isinstance(layer, LayerNorm):
        if len(shape) != 1:
            raise SpecError(f"layer '{n}' (layernorm) supports 1-D inputs only, gets {list(shape)}")
        info[n] = LayerInfo(shape, shape, 2 * shape[0], 0)
        return shape
    if isinstance(layer, Activation | Dropout):
        info[n] = LayerInfo(shape, shape, 0, 0)
        return shape
    if isinstance(layer, Residual):
        if not layer.layers:
            raise SpecError(f"residual block '{n}' has no layers")
        body_out = _seq(layer.layers, shape, info)
        if layer.skip == "identity":
            if body_out != shape:
                raise SpecError(
                    f"residual block '{n}' maps {list(shape)} to {list(body_out)}, but an identity "
                    "skip needs the same shape; use 'skip: projection' or keep the shape"
                )
            info[n] = LayerInfo(shape, shape, 0, 0)
            return shape
        if body_out[1:] != shape[1:]:
            raise SpecError(
                f"residual block '{n}' changes the spatial size {list(shape[1:])} -> "
                f"{list(body_out[1:])}; a projection skip (1x1, stride 1) needs it unchanged"
            )
        params = shape[0] * body_out[0]
        spatial = body_out[1] * body_out[2] if len(body_out) == 3 else 1
        info[n] = LayerInfo(shape, body_out, params, 2 * params * spatial)
        return body_out
    if isinstance(layer, Concat):
        if not layer.branches:
            raise SpecError(f"concat block '{n}' has no branches")
        outs = [_seq(branch, shape, info) for branch in layer.branches]
        if any(o[1:] != outs[0][1:] or len(o) != len(outs[0]) for o in outs):
            raise SpecError(
                f"concat block '{n}': branch outputs {[list(o) for o in outs]} differ in more "
                "than the channel axis"
            )
        joined: Shape = (sum(o[0] for o in outs), *outs[0][1:])
        info[n] = LayerInfo(shape, joined, 0, 0)
        return joined
    raise SpecError(
        f"layer '{n}': unsupported layer type {type(layer).__name__}"
    )  # pragma: no cover


def _seq(layers: tuple[Layer, ...], shape: Shape, info: dict[str, LayerInfo]) -> Shape:
    for layer in layers:
        shape = _one(layer, shape, info)
    return shape


def infer_shapes(
    layers: tuple[Layer, ...], input_shape: Shape
) -> tuple[Shape, dict[str, LayerInfo]]:
    """Output shape of the sequence and per-layer info (keyed by layer name); raises SpecError."""
    if len(input_shape) not in (1, 3) or any(int(s) < 1 for s in input_shape):
        raise SpecError(
            f"input_shape {list(input_shape)} must be [C, H, W] for images or [D] for features, "
            "all positive"
        )
    info: dict[str, LayerInfo] = {}
    out = _seq(layers, tuple(input_shape), info)
    return out, info
