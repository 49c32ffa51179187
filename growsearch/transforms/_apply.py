"""Applying operations: the public entry points around the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from growsearch.builder import GrowNet, build_model
from growsearch.exceptions import TransformError
from growsearch.spec import Spec
from growsearch.transforms._registry import get_operation
from growsearch.transforms._state import Draw, Edits

__all__ = [
    "INIT_MODES",
    "GrowResult",
    "Operation",
    "OptimizerState",
    "apply_operation",
    "apply_operations",
    "child_spec",
    "places",
]

# net2net: exact (function-preserving). random-pad: new units/layers drawn from N(0, 0.1^2),
# biases 0.1, old weights untouched. random-init: the whole child freshly initialised.
INIT_MODES = ("net2net", "random-pad", "random-init")

OptimizerState = dict[str, dict[str, Any]]  # parameter name -> {"exp_avg": Tensor, ...}


@dataclass(frozen=True)
class Operation:
    name: str  # "widen" | "deepen" | "widen_kernel" | "add_skip"
    target: str  # layer name in the parent spec
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "args": dict(self.args)}

    @classmethod
    def from_dict(cls, raw: Any) -> Operation:
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("name"), str)
            or not isinstance(raw.get("target"), str)
            or not isinstance(raw.get("args", {}), dict)
            or set(raw) - {"name", "target", "args"}
        ):
            raise TransformError(
                f"an operation must look like {{'name': 'widen', 'target': 'dense1', 'args': "
                f"{{'factor': 2}}}}, got {raw!r}"
            )
        return cls(raw["name"], raw["target"], dict(raw.get("args", {})))

    def __hash__(self) -> int:  # args is a dict, so hash the canonical JSON
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in sorted(self.args.items()))
        return f"{self.name}({self.target}{', ' + args if args else ''})"


@dataclass
class GrowResult:
    spec: Spec
    state_dict: dict[str, Tensor]
    optimizer_state: OptimizerState | None
    exact: bool  # the child computes the parent's function (net2net and an exact operation)
    info: dict[str, Any]  # JSON-safe facts for the lineage


@lru_cache(maxsize=128)
def _expected(spec: Spec) -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    """Tensor shapes and parameter names of the built module, without allocating any memory."""
    with torch.device("meta"):
        model = GrowNet(spec)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return shapes, frozenset(n for n, _ in model.named_parameters())


def _check_state(spec: Spec, state: dict[str, Tensor], what: str) -> None:
    shapes, _ = _expected(spec)
    missing = sorted(set(shapes) - set(state))
    extra = sorted(set(state) - set(shapes))
    wrong = [k for k in shapes if k in state and tuple(state[k].shape) != shapes[k]]
    if missing or extra or wrong:
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unexpected {extra}"] if extra else []
        parts += [
            f"{k} has shape {list(state[k].shape)}, expected {list(shapes[k])}" for k in wrong
        ]
        raise TransformError(
            f"the {what} does not match its spec: {'; '.join(parts)}; pass the weights of the "
            "model built from this spec"
        )


def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TransformError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def apply_operation(
    spec: Spec,
    state_dict: dict[str, Tensor],
    op: Operation | dict[str, Any],
    rng: np.random.Generator | int,
    *,
    init: str = "net2net",
    optimizer_state: OptimizerState | None = None,
) -> GrowResult:
    """Grow ``spec``/``state_dict`` by one operation; the parent's tensors are never modified."""
    op = op if isinstance(op, Operation) else Operation.from_dict(op)
    if init not in INIT_MODES:
        raise TransformError(f"unknown init mode '{init}'; choose one of {', '.join(INIT_MODES)}")
    gen = _rng(rng)
    definition = get_operation(op.name)
    _check_state(spec, state_dict, "parent state dict")
    _, parent_params = _expected(spec)
    if optimizer_state is not None and set(optimizer_state) - parent_params:
        raise TransformError(
            "optimizer state has entries for "
            f"{sorted(set(optimizer_state) - parent_params)}, which are not parameters of the "
            "parent; key the optimizer state by parameter name"
        )
    prepared = definition.check(spec, op.target, op.args)
    child = prepared.child
    shapes, params = _expected(child)
    exact = definition.exact and init == "net2net"
    grown_opt: OptimizerState | None = None
    if init == "random-init":  # a fresh model has no optimiser history either
        fresh = build_model(child, seed=int(gen.integers(2**31))).state_dict()
        state = Edits(added=fresh).apply_state({}, init, Draw(gen), like=state_dict)
    else:
        draw = Draw(gen)
        edits = prepared.make_edits(init, draw)
        state = edits.apply_state(state_dict, init, draw)
        if optimizer_state is not None:
            grown_opt = edits.apply_optimizer(optimizer_state, {k: shapes[k] for k in params}, init)
    _check_state(child, state, f"child state dict from {op}")  # guards against a bug here
    info = {
        "operation": op.name,
        "target": op.target,
        "args": dict(op.args),
        "init": init,
        "exact": exact,
        **prepared.info,
    }
    return GrowResult(child, state, grown_opt, exact, info)


def apply_operations(
    spec: Spec,
    state_dict: dict[str, Tensor],
    ops: list[Operation] | list[dict[str, Any]],
    rng: np.random.Generator | int,
    *,
    init: str = "net2net",
    optimizer_state: OptimizerState | None = None,
) -> GrowResult:
    """Apply ``ops`` in order (each target names a layer of the spec it is applied to)."""
    gen = _rng(rng)
    result = GrowResult(spec, state_dict, optimizer_state, True, {})
    steps = []
    for op in ops:
        step = apply_operation(
            result.spec,
            result.state_dict,
            op,
            gen,
            init=init,
            optimizer_state=result.optimizer_state,
        )
        result = GrowResult(
            step.spec, step.state_dict, step.optimizer_state, result.exact and step.exact, {}
        )
        steps.append(step.info)
    if not steps:
        result = _copy(spec, state_dict, optimizer_state)
    result.info = {"steps": steps, "exact": result.exact, "init": init}
    return result


def _copy(
    spec: Spec, state_dict: dict[str, Tensor], optimizer_state: OptimizerState | None
) -> GrowResult:
    """No operation: copies, so the caller may train the result without touching the parent."""
    state = {k: v.detach().clone() for k, v in state_dict.items()}
    opt = None
    if optimizer_state is not None:
        opt = {
            k: {kk: vv.detach().clone() if isinstance(vv, Tensor) else vv for kk, vv in e.items()}
            for k, e in optimizer_state.items()
        }
    return GrowResult(spec, state, opt, True, {})


def child_spec(spec: Spec, op: Operation | dict[str, Any]) -> Spec:
    """The spec ``op`` would produce, without any tensors (to place the next operation of a
    sequence); raises like ``apply_operation``."""
    op = op if isinstance(op, Operation) else Operation.from_dict(op)
    return get_operation(op.name).check(spec, op.target, op.args).child


def places(spec: Spec, op_name: str, args: dict[str, Any] | None = None) -> list[str]:
    """Layers where ``op_name`` (with ``args``, default: its defaults) applies exactly; every
    name listed succeeds in ``apply_operation``, every other layer is refused with a reason."""
    definition = get_operation(op_name)
    found = []
    for name in spec.names():
        try:
            definition.check(spec, name, args)
        except TransformError:
            continue
        found.append(name)
    return found
