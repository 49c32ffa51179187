"""Human-readable parent -> child differences, for logs and dashboard notes."""

from __future__ import annotations

import dataclasses

from growsearch.spec._spec import Spec

__all__ = ["spec_diff"]


def spec_diff(parent: Spec, child: Spec) -> list[str]:
    """One line per added, removed or changed layer (nested layers included)."""
    before = {layer.name: layer for _, layer in parent.walk()}
    after = {layer.name: layer for _, layer in child.walk()}
    lines = []
    for name, layer in after.items():
        old = before.get(name)
        if old is None:
            lines.append(f"+ {name}: {layer.kind} {_fields(layer)}")
        elif type(old) is type(layer):
            changed = [
                f"{f.name} {getattr(old, f.name)} -> {getattr(layer, f.name)}"
                for f in dataclasses.fields(layer)
                if f.name not in ("layers", "branches")
                and getattr(old, f.name) != getattr(layer, f.name)
            ]
            if changed:
                lines.append(f"~ {name}: " + ", ".join(changed))
        else:
            lines.append(f"~ {name}: {old.kind} -> {layer.kind}")
    lines.extend(f"- {name}" for name in before if name not in after)
    return lines


def _fields(layer: object) -> str:
    parts = []
    for f in dataclasses.fields(layer):  # type: ignore[arg-type]
        if f.name in ("name", "layers", "branches"):
            continue
        parts.append(f"{f.name}={getattr(layer, f.name)}")
    return "(" + ", ".join(parts) + ")"
