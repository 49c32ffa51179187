"""``growsearch report``: an HTML page and PNGs of a study (lineage tree, progress, generations)."""

from __future__ import annotations

import argparse

from growsearch.cli._common import add_storage_args
from growsearch.cli._study import open_store
from growsearch.exceptions import UserError
from growsearch.storage_url import redact

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "report",
        help="write an HTML report with PNG figures of a study (lineage tree, progress, ...)",
        description="Write DIR/index.html with three figures: the lineage tree (colour = "
        "validation accuracy, branches labelled with the operation), the best accuracy against "
        "cumulative training time, and the accuracy per generation (DIR/lineage.png, "
        "DIR/progress.png, DIR/generations.png). Reads the database only; safe to run while the "
        "study is running.",
    )
    add_storage_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created)")
    p.add_argument(
        "--embed",
        action="store_true",
        help="put the figures inside index.html (one file to send around) instead of PNGs",
    )
    p.add_argument("--dpi", type=int, default=110, help="resolution of the PNGs (default 110)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from growsearch.report import build_report, check_out_dir, collect, write_report

    if not 30 <= args.dpi <= 600:
        raise UserError(f"--dpi must be between 30 and 600, got {args.dpi}")
    check_out_dir(args.out)  # a bad --out fails before the database is even opened
    store = open_store(args.storage, args.study)
    history = collect(store, args.study)
    files = build_report(history, embed=args.embed, storage=redact(args.storage), dpi=args.dpi)
    written = write_report(files, args.out)
    best = history.best
    found = (
        f"best model {best.model_id} (trial {best.trial_number}): val_accuracy "
        f"{best.val_accuracy:.4f}"
        if best is not None
        else "no finished model yet"
    )
    print(f"growsearch: report of study '{args.study}' ({len(history.models)} models; {found})")
    for path in written:
        print(f"  {path}")
    return 0
