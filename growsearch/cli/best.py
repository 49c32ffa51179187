"""``growsearch best``: the best model with its ancestry (or the Pareto front)."""

from __future__ import annotations

import argparse
import json

from growsearch.cli._common import add_storage_args
from growsearch.cli._records import format_records
from growsearch.cli._study import open_store
from growsearch.exceptions import StorageError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "best",
        help="show the best model and its ancestry (the Pareto front for multi-objective studies)",
    )
    add_storage_args(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(args.storage, args.study)
    config = store.get_study(args.study).config  # type: ignore[union-attr]
    objectives = list(config.get("search", {}).get("objectives", ["val_accuracy"]))
    if len(objectives) > 1:
        directions = ["maximize"] + ["minimize"] * (len(objectives) - 1)
        front = store.pareto(args.study, directions)
        if args.format == "json":
            print(
                json.dumps(
                    {"objectives": objectives, "pareto_front": [r.to_json_dict() for r in front]},
                    indent=2,
                )
            )
        else:
            print(
                f"Pareto front of '{args.study}' ({' vs '.join(objectives)}): {len(front)} model(s)"
            )
            print(format_records(front, "table"))
        return 0
    best = store.best(args.study)
    if best is None:
        raise StorageError(f"study '{args.study}' has no finished model yet")
    ancestry = store.ancestry(best.model_id)
    if args.format == "json":
        print(
            json.dumps(
                {"best": best.to_json_dict(), "ancestry": [r.to_json_dict() for r in ancestry]},
                indent=2,
            )
        )
        return 0
    print(
        f"best model {best.model_id} (trial {best.trial_number}): val_accuracy "
        f"{best.val_accuracy:.4f}, {best.num_params:,} parameters"
    )
    print(f"checkpoint: {best.checkpoint} (sha256 {best.sha256})")
    print(f"ancestry, seed first ({len(ancestry)} models, generations 0-{best.generation}):")
    print(format_records(ancestry, "table"))
    return 0
