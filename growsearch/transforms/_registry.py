"""The operation registry: each growth operation registers itself with a decorator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from growsearch.exceptions import TransformError
from growsearch.spec import Spec
from growsearch.spec._parse import did_you_mean
from growsearch.transforms._state import Draw, Edits

__all__ = ["OperationDef", "Prepared", "get_operation", "list_operations", "register_operation"]


@dataclass
class Prepared:
    """An operation checked at one place: the child spec, JSON-safe facts, and how to make the
    tensor edits once randomness is available (checking needs no tensors and no RNG)."""

    child: Spec
    info: dict[str, Any]
    make_edits: Callable[[str, Draw], Edits]  # (init mode, random source) -> edits


Prepare = Callable[[Spec, str, dict[str, Any]], Prepared]


@dataclass(frozen=True)
class OperationDef:
    name: str
    exact: bool  # function-preserving under init="net2net"
    description: str
    args: dict[str, str]  # argument name -> what it means
    defaults: dict[str, Any] = field(default_factory=dict)
    prepare: Prepare | None = field(default=None, repr=False, compare=False)

    def check(self, spec: Spec, target: str, args: dict[str, Any] | None = None) -> Prepared:
        """Check the operation at ``target``; raises TransformError/NotExactError saying why."""
        unknown = sorted(set(args or {}) - set(self.args))
        if unknown:
            raise TransformError(
                f"operation '{self.name}' has no argument(s) {', '.join(map(repr, unknown))}; "
                f"its arguments are: {', '.join(self.args) or 'none'}"
            )
        assert self.prepare is not None
        return self.prepare(spec, target, {**self.defaults, **(args or {})})


_REGISTRY: dict[str, OperationDef] = {}


def register_operation(
    name: str,
    *,
    exact: bool,
    description: str,
    args: dict[str, str],
    defaults: dict[str, Any] | None = None,
) -> Callable[[Prepare], Prepare]:
    def decorator(fn: Prepare) -> Prepare:
        if name in _REGISTRY:
            raise ValueError(f"operation '{name}' is registered twice")
        _REGISTRY[name] = OperationDef(name, exact, description, args, dict(defaults or {}), fn)
        return fn

    return decorator


def list_operations() -> list[OperationDef]:
    return list(_REGISTRY.values())


def get_operation(name: str) -> OperationDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TransformError(
            f"unknown operation '{name}'{did_you_mean(str(name), tuple(_REGISTRY))}; "
            f"choose one of {', '.join(_REGISTRY)}"
        ) from None
