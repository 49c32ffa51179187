"""Shared CLI plumbing: error handling (UserError -> one message, exit 2) and storage options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib import metadata

from growsearch.exceptions import UserError

__all__ = ["add_storage_args", "fail", "guarded", "version"]


def version() -> str:
    try:
        return metadata.version("growsearch")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def fail(message: str) -> int:
    print(f"growsearch: error: {message}", file=sys.stderr, flush=True)
    return 2


def guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return func(args)
    except UserError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print("\ngrowsearch: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # `growsearch lineage ... | head` closed the pipe: not an error. Point stdout at devnull
        # so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def add_storage_args(p: argparse.ArgumentParser, study_required: bool = True) -> None:
    p.add_argument(
        "--storage",
        required=True,
        help="database URL of the study, e.g. sqlite:///growsearch.db or postgresql://user@host/db",
    )
    p.add_argument("--study", required=study_required, help="study name")
