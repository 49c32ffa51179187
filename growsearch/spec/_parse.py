"""Layer dictionaries (from study.yaml or JSON) -> layer dataclasses, reporting every problem."""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any

from growsearch.spec._layers import ACTIVATIONS, LAYER_TYPES, Layer

__all__ = ["did_you_mean", "parse_layers"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POSITIVE_INT = {"out", "kernel", "stride", "size"}


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_value(where: str, key: str, value: Any, problems: list[str]) -> Any:
    if key in _POSITIVE_INT:
        if key == "stride" and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{where}.{key}: must be a positive integer, got {value!r}")
    elif key == "padding":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            problems.append(
                f"{where}.padding: must be a non-negative integer or null, got {value!r}"
            )
    elif key in ("bias", "batchnorm"):
        if not isinstance(value, bool):
            problems.append(f"{where}.{key}: must be true or false, got {value!r}")
    elif key in ("activation", "fn"):
        if value is None:
            return "identity"
        if value not in ACTIVATIONS:
            hint = did_you_mean(str(value), ACTIVATIONS)
            problems.append(
                f"{where}.{key}: unknown activation {value!r}{hint}; choose one of "
                f"{', '.join(ACTIVATIONS)}"
            )
    elif key in ("dropout", "p"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            problems.append(f"{where}.{key}: must be a number in [0, 1), got {value!r}")
        else:
            return float(value)
    elif key == "skip" and value not in ("identity", "projection"):
        problems.append(f"{where}.skip: must be 'identity' or 'projection', got {value!r}")
    return value


def _parse_one(
    raw: Any,
    where: str,
    problems: list[str],
    names: dict[str, str],
    counter: list[int],
    reserved: set[str],
) -> Layer | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: a layer must be a mapping like {{type: dense, out: 10}}")
        return None
    kind = raw.get("type")
    if kind not in LAYER_TYPES:
        hint = did_you_mean(str(kind), tuple(LAYER_TYPES))
        problems.append(
            f"{where}.type: unknown layer type {kind!r}{hint}; choose one of "
            f"{', '.join(LAYER_TYPES)}"
        )
        return None
    cls = LAYER_TYPES[kind]
    index = counter[0]  # pre-order numbering: a container is numbered before its contents
    counter[0] += 1
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "type":
            continue
        if key not in fields:
            hint = did_you_mean(key, sorted(fields))
            problems.append(f"{where}: unknown key '{key}' for a {kind} layer{hint}")
            continue
        if key == "layers":
            kwargs[key] = _parse_seq(value, f"{where}.layers", problems, names, counter, reserved)
        elif key == "branches":
            if not isinstance(value, list) or not value:
                problems.append(f"{where}.branches: must be a non-empty list of layer lists")
                kwargs[key] = ()
            else:
                kwargs[key] = tuple(
                    _parse_seq(b, f"{where}.branches[{i}]", problems, names, counter, reserved)
                    for i, b in enumerate(value)
                )
        elif key == "name":
            kwargs[key] = value
        else:
            kwargs[key] = _check_value(where, key, value, problems)
    if kind in ("dense", "conv") and "out" not in raw:
        problems.append(f"{where}: a {kind} layer needs 'out' (its number of units/channels)")
    name = kwargs.get("name")
    if name is None:
        name = f"{kind}{index}"
        while name in names or name in reserved:
            index += 1
            name = f"{kind}{index}"
    elif not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(f"{where}.name: {name!r} is not a valid name (letters, digits, '_')")
        return None
    if name in names:
        problems.append(f"{where}.name: '{name}' is used twice (also at {names[name]})")
        return None
    names[name] = where
    kwargs["name"] = name
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the key checks above
        problems.append(f"{where}: {e}")
        return None


def _parse_seq(
    raw: Any,
    where: str,
    problems: list[str],
    names: dict[str, str],
    counter: list[int],
    reserved: set[str],
) -> tuple[Layer, ...]:
    if not isinstance(raw, list):
        problems.append(f"{where}: must be a list of layers")
        return ()
    out = []
    for i, item in enumerate(raw):
        layer = _parse_one(item, f"{where}[{i}]", problems, names, counter, reserved)
        if layer is not None:
            out.append(layer)
    return tuple(out)


def _reserve_explicit_names(raw: Any, names: set[str]) -> None:
    # Explicit names are claimed first so that an auto-name never takes one a user chose later on.
    if isinstance(raw, list):
        for item in raw:
            _reserve_explicit_names(item, names)
    elif isinstance(raw, dict):
        if isinstance(raw.get("name"), str):
            names.add(raw["name"])
        _reserve_explicit_names(raw.get("layers"), names)
        for branch in raw.get("branches") or []:
            _reserve_explicit_names(branch, names)


def parse_layers(raw: Any, where: str, problems: list[str]) -> tuple[Layer, ...]:
    """Parse a list of layer mappings; problems are appended, never raised."""
    reserved: set[str] = set()
    _reserve_explicit_names(raw, reserved)
    return _parse_seq(raw, where, problems, {}, [0], reserved)
