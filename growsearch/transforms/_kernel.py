"""widen_kernel: a conv kernel k -> k' (k' - k even), the old kernel zero-padded at the centre.

With padding p -> p + (k' - k) / 2 every output position still reads the same input positions
through the old taps (``o*s - p + i`` is unchanged for each old tap ``i``) and the new taps are
zero, for any stride; zero padding means the extra taps only ever see zeros or carry weight zero.
So the only refusals are kernels that are not larger, or an odd difference (no symmetric pad).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from growsearch.exceptions import TransformError
from growsearch.spec import Conv, Spec
from growsearch.transforms._common import core_weight, find_layer, int_arg
from growsearch.transforms._registry import Prepared, register_operation
from growsearch.transforms._state import Draw, Edits, PadKernel

__all__ = ["prepare_widen_kernel"]


@register_operation(
    "widen_kernel",
    exact=True,
    description="a larger conv kernel (k -> k + 2n), the old one zero-padded at the centre and "
    "the padding increased by n so outputs are unchanged",
    args={
        "kernel": "the new kernel size, larger than the current one by an even number "
        "(default: current + 2)"
    },
    defaults={"kernel": None},
)
def prepare_widen_kernel(spec: Spec, target: str, args: dict[str, Any]) -> Prepared:
    layer = find_layer(spec, "widen the kernel of", target)
    if not isinstance(layer, Conv):
        raise TransformError(
            f"cannot widen the kernel of '{target}': widen_kernel applies to conv layers, not "
            f"to '{target}' ({layer.kind})"
        )
    old = layer.kernel
    args = {**args, "kernel": old + 2 if args.get("kernel") is None else args["kernel"]}
    new = int_arg(f"widen_kernel '{target}'", args, "kernel")
    if new <= old:
        raise TransformError(
            f"cannot widen the kernel of '{target}' to {new}: it is already {old}; give a "
            f"larger kernel such as {old + 2}"
        )
    if (new - old) % 2:
        raise TransformError(
            f"cannot widen the kernel of '{target}' from {old} to {new}: the difference must be "
            f"even so the old kernel sits at the centre of the new one; use {new + 1} or {new - 1}"
        )
    extra = (new - old) // 2
    # padding None means kernel // 2, which grows by exactly ``extra`` when the kernel grows by
    # 2 * extra, so it can stay None; an explicit padding grows explicitly.
    padding = None if layer.padding is None else layer.padding + extra
    child = spec.replace_layer(target, dataclasses.replace(layer, kernel=new, padding=padding))
    if child.info[target].out_shape != spec.info[target].out_shape:  # pragma: no cover - see above
        raise TransformError(f"cannot widen the kernel of '{target}': the output shape changes")

    def make_edits(init: str, draw: Draw) -> Edits:
        edits = Edits()
        edits.edit(core_weight(target, "conv"), PadKernel(extra))
        return edits

    info = {"old_kernel": old, "new_kernel": new, "padding": layer.pad + extra, "noise": 0.0}
    return Prepared(child, info, make_edits)
