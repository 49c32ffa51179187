"""``growsearch resume`` / ``growsearch worker``: continue a study from the database alone."""

from __future__ import annotations

import argparse
import time

from growsearch.cli._common import add_storage_args
from growsearch.cli.run import add_run_options, execute
from growsearch.config import parse_config
from growsearch.exceptions import StorageError
from growsearch.storage_url import check_storage_url, redact

__all__ = ["add_parser"]

POLL_S = 1.0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, text in (
        ("resume", "continue a study using only its database (the config snapshot is stored)"),
        ("worker", "join a running study from this machine (many workers need PostgreSQL)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        add_storage_args(p)
        p.add_argument(
            "--n-trials",
            type=int,
            help="finished trials to reach in total in this run (the stored n_trials stays)",
        )
        p.add_argument(
            "--checkpoint-dir",
            help="override the stored checkpoint_dir (a shared "
            "folder when workers run on several machines)",
        )
        if name == "worker":
            p.add_argument(
                "--wait",
                type=float,
                default=0.0,
                metavar="SECONDS",
                help="wait up to this long for the study to be created (by `growsearch run "
                "STUDY.yaml` elsewhere) instead of failing at once",
            )
        add_run_options(p)
        p.set_defaults(func=run)


def _wait_for_study(url: str, study: str, seconds: float) -> None:
    """Poll until the database answers and holds the study, or ``seconds`` have passed."""
    from growsearch.store import SQLLineageStore

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            check_storage_url(url, must_exist=True)  # a SQLite file is never created here
            with SQLLineageStore(url, create=False) as store:
                if store.get_study(study) is not None:
                    return
        except Exception:  # not up yet: database starting, tables missing
            pass
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def run(args: argparse.Namespace) -> int:
    from growsearch.store import SQLLineageStore

    if getattr(args, "wait", 0) > 0:
        _wait_for_study(args.storage, args.study, args.wait)
    check_storage_url(args.storage, must_exist=True)
    # create=False: a database without lineage tables (a mistyped URL, an Optuna-only one)
    # is bad input, and bad input writes nothing.
    store = SQLLineageStore(args.storage, create=False)
    record = store.get_study(args.study)
    if record is None:
        names = store.list_studies()
        listed = ", ".join(names) if names else "none"
        raise StorageError(
            f"no growsearch study named '{args.study}' in {redact(args.storage)} "
            f"(studies there: {listed})"
        )
    raw = dict(record.config)
    raw["storage"] = args.storage  # the URL that reached it, not the one stored at creation
    if args.n_trials is not None:
        raw["n_trials"] = args.n_trials
    if args.checkpoint_dir is not None:
        raw["checkpoint_dir"] = args.checkpoint_dir
    cfg = parse_config(raw, source=f"study '{args.study}' (stored config)")
    hint = f"growsearch {args.command} --storage {redact(args.storage)} --study {args.study}"
    return execute(cfg, args.workers, args.device, args.quiet, hint, create=False)
