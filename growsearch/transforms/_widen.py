"""widen: more units in a dense layer or more channels in a conv layer (Net2WiderNet).

The widened layer's channel group (see ``_graph``) gets a channel map; every producer writing into
the group copies rows by ``src``, every consumer reading it copies columns by ``src`` scaled by
``frac``, and standalone BatchNorms in the group copy their four tensors. Flatten and concat pass
the map on to the groups they create (expanded per channel, or sliced into the concatenation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from growsearch.builder import param_prefix
from growsearch.exceptions import NotExactError, TransformError
from growsearch.spec import Conv, Dense, Layer, Spec
from growsearch.transforms._channel_map import ChannelMap, widen_map
from growsearch.transforms._common import (
    affine_tensors,
    batchnorm_tensors,
    core_weight,
    find_layer,
    int_arg,
)
from growsearch.transforms._graph import Derivation, FlowGraph, flow_graph
from growsearch.transforms._registry import Prepared, register_operation
from growsearch.transforms._state import Draw, Edits, Gather

__all__ = ["prepare_widen"]

# group -> how its map arises: None for the widened layer's own group, else the flatten/concat
# that derives it. Insertion order is derivation order, so inputs come before what they derive.
Plan = dict[int, Derivation | None]


def _new_width(target: str, old: int, args: dict[str, Any]) -> int:
    if "factor" in args and "width" in args:
        raise TransformError(f"widen '{target}': give either 'factor' or 'width', not both")
    if "width" in args:
        width = int_arg(f"widen '{target}'", args, "width")
        if width <= old:
            raise TransformError(
                f"cannot widen '{target}' to {width}: it already has {old} units; "
                f"give a width above {old}"
            )
        return width
    factor = args.get("factor", 2.0)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 1:
        raise TransformError(f"widen '{target}': 'factor' must be a number > 1, got {factor!r}")
    return max(old + 1, round(old * factor))


def _via(graph: FlowGraph, group: int) -> str:
    tied = graph.tied_by(group)
    if not tied:
        return ""
    names = ", ".join(f"'{n}'" for n in tied)
    return f" (through the identity skip of residual block {names})"


def _check_group(graph: FlowGraph, target: str, group: int, how: Derivation | None) -> None:
    via = _via(graph, group)
    for t in graph.members(group):
        kind, name = graph.origin[t]
        if kind == "layer" or (how is not None and (kind, name) == (how.kind, how.name)):
            continue
        if kind == "input":
            raise NotExactError(
                f"cannot widen '{target}': its channels are tied to the network input{via}, "
                "which cannot be widened; widen a layer inside the block or before it instead"
            )
        raise NotExactError(
            f"cannot widen '{target}': its channels are tied to the output of {kind} '{name}'"
            f"{via}, which cannot take the same channel mapping; widen the layers that feed "
            f"'{name}' instead"
        )
    for ln, t in graph.layernorms:
        if graph.group(t) == group:
            raise NotExactError(
                f"cannot widen '{target}': layernorm '{ln}' normalises across the widened "
                "channels, so copied units would change its mean and variance and the function "
                f"would not be preserved; widen a layer after '{ln}' instead"
            )
    if graph.group(graph.output) == group:
        raise TransformError(
            f"cannot widen '{target}': its channels are the network's output "
            f"({graph.channels[graph.output]} values, e.g. the classes){via}; widening them "
            "would change the output size; widen an earlier layer"
        )


def _plan(graph: FlowGraph, target: str) -> Plan:
    out = next(a.out for a in graph.affines if a.name == target and a.kind != "skip")
    plan: Plan = {graph.group(out): None}
    hits: dict[str, tuple[bool, ...]] = {}
    changed = True
    while changed:  # a fixpoint: a derived group can feed further flattens and concats
        changed = False
        for d in graph.derivations:
            hit = tuple(graph.group(t) in plan for t in d.inputs)
            if not any(hit):
                continue
            group = graph.group(d.out)
            if group not in plan:
                plan[group], hits[d.name] = d, hit
                changed = True
            elif plan[group] is not d or hits[d.name] != hit:
                raise NotExactError(
                    f"cannot widen '{target}': the output of {d.kind} '{d.name}' would need two "
                    f"different channel mappings at once{_via(graph, group)}; widen another layer"
                )
    for group, how in plan.items():
        _check_group(graph, target, group, how)
    return plan


def _sizes(graph: FlowGraph, plan: Plan, new: int) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for group, how in plan.items():
        if how is None:
            sizes[group] = new
        elif how.kind == "flatten":
            sizes[group] = sizes[graph.group(how.inputs[0])] * how.hw
        else:
            sizes[group] = sum(sizes.get(graph.group(t), graph.channels[t]) for t in how.inputs)
    return sizes


def _maps(
    graph: FlowGraph, plan: Plan, old: int, new: int, rng: np.random.Generator
) -> dict[int, ChannelMap]:
    maps: dict[int, ChannelMap] = {}
    for group, how in plan.items():
        if how is None:
            maps[group] = widen_map(old, new, rng)
        elif how.kind == "flatten":
            maps[group] = maps[graph.group(how.inputs[0])].expand(how.hw)
        else:
            parts = [
                maps[graph.group(t)]
                if graph.group(t) in maps
                else ChannelMap.identity(graph.channels[t])
                for t in how.inputs
            ]
            maps[group] = ChannelMap.cat(parts)
    return maps


def _edits(spec: Spec, graph: FlowGraph, maps: dict[int, ChannelMap]) -> Edits:
    edits = Edits()
    for a in graph.affines:
        out_map, in_map = maps.get(graph.group(a.out)), maps.get(graph.group(a.inp))
        if a.kind == "skip":
            tensors: list[tuple[str, float | None]] = [(core_weight(a.name, "skip"), None)]
        else:
            tensors = affine_tensors(spec.find(a.name))  # type: ignore[arg-type]
        if out_map is not None:
            for name, fill in tensors:
                edits.edit(name, Gather(0, out_map, "out", fill))
        if in_map is not None:
            edits.edit(tensors[0][0], Gather(1, in_map, "in"))
    for bn, t in graph.batchnorms:
        m = maps.get(graph.group(t))
        if m is not None:
            for name, fill in batchnorm_tensors(f"{param_prefix(bn)}.bn"):
                edits.edit(name, Gather(0, m, "out", fill))
    return edits


@register_operation(
    "widen",
    exact=True,
    description="more units/channels in a dense or conv layer (Net2WiderNet, unequal random "
    "split of the outgoing weights so copies diverge under training)",
    args={
        "factor": "new width = round(old * factor), factor > 1 (default 2: every unit copied once)",
        "width": "the new number of units/channels (> the current one); instead of factor",
    },
)
def prepare_widen(spec: Spec, target: str, args: dict[str, Any]) -> Prepared:
    layer = find_layer(spec, "widen", target)
    if not isinstance(layer, Dense | Conv):
        raise TransformError(
            f"cannot widen '{target}': widen applies to dense and conv layers, not to "
            f"'{target}' ({layer.kind})"
        )
    graph = flow_graph(spec)
    old = spec.info[target].out_shape[0]
    new = _new_width(target, old, args)
    plan = _plan(graph, target)
    sizes = _sizes(graph, plan, new)
    widths = {
        a.name: sizes[graph.group(a.out)]
        for a in graph.affines
        if a.kind != "skip" and graph.group(a.out) in plan
    }
    readers = [a.name for a in graph.affines if graph.group(a.inp) in plan]

    def grow(layer: Layer) -> Layer:
        if layer.name in widths:
            return dataclasses.replace(layer, out=widths[layer.name])  # type: ignore[arg-type]
        return layer

    child = spec.map_layers(grow)
    child.validate()

    def make_edits(init: str, draw: Draw) -> Edits:
        maps = _maps(graph, plan, old, new, draw.rng)
        return _edits(spec, graph, maps)

    info = {
        "old_width": old,
        "new_width": new,
        "widened": list(widths),
        "widths": widths,
        "consumers": readers,
        "noise": 0.0,
    }
    return Prepared(child, info, make_edits)
