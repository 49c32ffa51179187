"""Formatting lineage records for the terminal: json, csv, table, dot."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from growsearch.spec import Spec
from growsearch.store import ModelRecord

__all__ = ["FORMATS", "format_records"]

FORMATS = ("table", "json", "csv", "dot")

# The record fields every format carries (DESIGN.md, lineage contract) plus useful extras.
FIELDS = (
    "model_id",
    "parent_id",
    "trial_number",
    "operation",
    "params",
    "val_accuracy",
    "preservation_error",
    "checkpoint",
    "sha256",
    "spec",
    "spec_hash",
    "num_params",
    "flops",
    "generation",
    "status",
    "reason",
    "info",  # the preservation tolerance, init, learning rate, worker, retry of ...
)


def _row(record: ModelRecord) -> dict[str, Any]:
    d = record.to_json_dict()
    return {key: d.get(key) for key in FIELDS}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _fmt_float(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(records: Sequence[ModelRecord]) -> str:
    head = (
        "model",
        "parent",
        "trial",
        "gen",
        "operation",
        "val_acc",
        "pres_err",
        "params",
        "status",
        "architecture",
    )
    rows = [head]
    for r in records:
        rows.append(
            (
                str(r.model_id),
                "-" if r.parent_id is None else str(r.parent_id),
                str(r.trial_number),
                str(r.generation),
                _op_text(r),
                _fmt_float(r.val_accuracy, ".4f"),
                _fmt_float(r.preservation_error, ".1e"),
                f"{r.num_params:,}",
                r.status,
                Spec.from_dict(r.spec).summary(),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _op_text(r: ModelRecord) -> str:
    if not r.params:
        return r.operation
    parts = []
    for op in r.params:
        args = ",".join(f"{k}={v}" for k, v in (op.get("args") or {}).items())
        parts.append(f"{op.get('name')}:{op.get('target')}" + (f"({args})" if args else ""))
    return "+".join(parts)


def _dot(records: Sequence[ModelRecord], study: str) -> str:
    lines = [f'digraph "{study}" {{', "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    for r in records:
        acc = _fmt_float(r.val_accuracy, ".4f")
        style = "" if r.status == "finished" else ", style=dashed"
        label = f"#{r.trial_number} {r.operation}\\nacc {acc}\\n{r.num_params:,} params"
        lines.append(f'  m{r.model_id} [label="{label}"{style}];')
    for r in records:
        if r.parent_id is not None:
            lines.append(f'  m{r.parent_id} -> m{r.model_id} [label="{_op_text(r)}"];')
    lines.append("}")
    return "\n".join(lines)


def format_records(records: Sequence[ModelRecord], fmt: str, study: str = "lineage") -> str:
    if fmt == "json":
        return json.dumps([_row(r) for r in records], indent=2, allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({k: _cell(v) for k, v in _row(r).items()})
        return buf.getvalue().rstrip("\n")
    if fmt == "dot":
        return _dot(records, study)
    return _table(records)
