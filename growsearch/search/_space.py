"""The mutation space: the Optuna sampler chooses the operation, where, and how much.

Parameter names and distributions never change between trials (Optuna requires that), so a
relative ``position`` in [0, 1) picks among the places where the chosen operation is exact in
this parent: the sampler learns "early vs late" without a study ever proposing a refused place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna

from growsearch.config import SearchSection
from growsearch.spec import Conv, Spec
from growsearch.transforms import Operation, child_spec, places

__all__ = ["NoPlaceError", "Proposal", "propose"]


class NoPlaceError(Exception):
    """The sampled operation has no valid place in this parent (the trial is pruned)."""


@dataclass(frozen=True)
class Proposal:
    operations: list[Operation]
    lr: float | None
    epochs: int | None  # None: train.epochs_per_trial
    spec: Spec  # the child's spec, known before any tensor is touched (constraints, duplicates)


def _name(base: str, i: int) -> str:
    return base if i == 0 else f"{base}_{i + 1}"


def _one(trial: optuna.Trial, spec: Spec, search: SearchSection, i: int) -> Operation:
    op = trial.suggest_categorical(_name("operation", i), list(search.operations))
    position = trial.suggest_float(_name("position", i), 0.0, 1.0)
    candidates = places(spec, op)
    if not candidates:
        raise NoPlaceError(f"operation '{op}' has no valid place in this parent")
    target = candidates[min(int(position * len(candidates)), len(candidates) - 1)]
    if op == "widen":
        lo, hi = search.widen_factor
        factor = trial.suggest_float(_name("widen_factor", i), lo, hi)
        layer = spec.find(target)
        width = max(layer.out + 1, math.ceil(layer.out * factor))  # type: ignore[union-attr]
        return Operation("widen", target, {"width": width})
    if op == "deepen":
        kernel = trial.suggest_categorical(_name("deepen_kernel", i), list(search.deepen_kernels))
        args: dict[str, object] = {}
        if isinstance(spec.find(target), Conv):
            args["kernel"] = kernel
        return Operation("deepen", target, args)
    if op == "widen_kernel":
        layer = spec.find(target)
        return Operation("widen_kernel", target, {"kernel": layer.kernel + 2})  # type: ignore[union-attr]
    return Operation(op, target, {})


def propose(trial: optuna.Trial, spec: Spec, search: SearchSection) -> Proposal:
    """Sample up to ``max_ops_per_child`` operations, each placed on the spec the previous one
    produced (so positions refer to the growing child), and optionally lr and epochs."""
    n_ops = 1
    if search.max_ops_per_child > 1:
        n_ops = trial.suggest_int("n_operations", 1, search.max_ops_per_child)
    ops: list[Operation] = []
    current = spec
    for i in range(n_ops):
        op = _one(trial, current, search, i)
        ops.append(op)
        # Specs only, no weights: cheap, and it places the next operation on the grown child.
        current = child_spec(current, op)
    lr = None
    if search.search_lr is not None:
        lr = trial.suggest_float("lr", search.search_lr[0], search.search_lr[1], log=True)
    epochs = None
    if search.search_epochs is not None:
        epochs = trial.suggest_int("epochs", search.search_epochs[0], search.search_epochs[1])
    return Proposal(ops, lr, epochs, current)
