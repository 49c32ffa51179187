"""``growsearch lineage``: one record per model of a study (json, csv, table or a dot tree)."""

from __future__ import annotations

import argparse

from growsearch.cli._common import add_storage_args
from growsearch.cli._records import FORMATS, format_records
from growsearch.cli._study import open_store
from growsearch.store import STATUSES

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "lineage",
        help="print every model of a study with its parent, mutation and scores",
        description="Print one record per model: model_id, parent_id, trial_number, operation, "
        "params (the operation arguments), val_accuracy, preservation_error, checkpoint, sha256, "
        "spec. 'dot' draws the tree (pipe it to `dot -Tpng`).",
    )
    add_storage_args(p)
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--status", choices=STATUSES, help="only models with this status")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(args.storage, args.study)
    records = store.models(args.study, status=args.status)
    print(format_records(records, args.format, args.study))
    return 0
