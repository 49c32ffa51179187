"""``growsearch db upgrade|current``: the lineage tables' schema version (Alembic)."""

from __future__ import annotations

import argparse

from growsearch.storage_url import check_storage_url, redact

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("db", help="show or upgrade the lineage tables' schema version")
    p.add_argument("action", choices=("upgrade", "current"))
    p.add_argument("--storage", required=True, help="database URL")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from growsearch.store import current_revision, head_revision, upgrade

    check_storage_url(args.storage, must_exist=True)
    if args.action == "current":
        print(
            f"{redact(args.storage)}: lineage schema {current_revision(args.storage)} "
            f"(this growsearch: {head_revision()})"
        )
        return 0
    before = current_revision(args.storage)
    upgrade(args.storage)
    after = current_revision(args.storage)
    if before == after:
        print(f"{redact(args.storage)}: lineage schema {after} is up to date; nothing to do")
    else:
        print(f"{redact(args.storage)}: lineage schema {before} -> {after}")
    return 0
