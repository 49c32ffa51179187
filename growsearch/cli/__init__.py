"""``growsearch`` command line: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from growsearch.cli import _common
from growsearch.cli import best as best_cmd
from growsearch.cli import dashboard as dashboard_cmd
from growsearch.cli import db as db_cmd
from growsearch.cli import evaluate as evaluate_cmd
from growsearch.cli import export as export_cmd
from growsearch.cli import lineage as lineage_cmd
from growsearch.cli import report as report_cmd
from growsearch.cli import resume as resume_cmd
from growsearch.cli import run as run_cmd
from growsearch.cli import validate as validate_cmd

__all__ = ["build_parser", "main"]

_COMMANDS = (
    run_cmd,
    resume_cmd,
    lineage_cmd,
    best_cmd,
    export_cmd,
    evaluate_cmd,
    report_cmd,
    validate_cmd,
    dashboard_cmd,
    db_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="growsearch",
        description="Search neural architectures by growing them with exact function-preserving "
        "transforms. See the README for a tour.",
    )
    parser.add_argument("--version", action="version", version=f"growsearch {_common.version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return _common.guarded(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
