"""``growsearch`` command line: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["build_parser", "main"]


def _commands() -> tuple[ModuleType, ...]:
    # Imported when a command runs, not with the package: the subcommands import torch and
    # optuna (seconds), and a Ctrl-C during that import must end as a clean interrupt.
    from growsearch.cli import (
        best,
        dashboard,
        db,
        evaluate,
        export,
        lineage,
        report,
        resume,
        run,
        validate,
    )

    return (run, resume, lineage, best, export, evaluate, report, validate, dashboard, db)


def build_parser() -> argparse.ArgumentParser:
    from growsearch.cli import _common

    parser = argparse.ArgumentParser(
        prog="growsearch",
        description="Search neural architectures by growing them with exact function-preserving "
        "transforms. See the README for a tour.",
    )
    parser.add_argument("--version", action="version", version=f"growsearch {_common.version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _commands():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        from growsearch.cli import _common
    except KeyboardInterrupt:
        # Before `guarded` installs the signal handlers: nothing has been opened or written.
        print("\ngrowsearch: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
    return _common.guarded(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
