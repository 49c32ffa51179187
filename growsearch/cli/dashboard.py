"""``growsearch dashboard``: optuna-dashboard on the study's storage and checkpoint artifacts."""

from __future__ import annotations

import argparse
from pathlib import Path

from growsearch.config import load_config
from growsearch.exceptions import UserError
from growsearch.storage_url import check_storage_url, redact

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "dashboard",
        help="start optuna-dashboard on a study's storage (127.0.0.1 unless --host says otherwise)",
    )
    p.add_argument(
        "study_yaml",
        nargs="?",
        metavar="STUDY.yaml",
        help="take storage and checkpoint_dir from this file",
    )
    p.add_argument("--storage", help="database URL (instead of STUDY.yaml)")
    p.add_argument("--checkpoint-dir", help="where the checkpoints (artifacts) are")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: only this machine can connect)",
    )
    p.add_argument("--port", type=int, default=8080, help="port to serve on (default 8080)")
    p.set_defaults(func=run)


def resolve(args: argparse.Namespace) -> tuple[str, Path | None]:
    ckpt: Path | None
    if args.study_yaml:
        cfg = load_config(args.study_yaml)
        storage = args.storage or cfg.storage
        ckpt = Path(args.checkpoint_dir or cfg.checkpoint_dir)
    elif args.storage:
        storage = args.storage
        ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else _stored_checkpoint_dir(storage)
    else:
        raise UserError(
            "give a STUDY.yaml or --storage URL, e.g. growsearch dashboard studies/digits.yaml"
        )
    check_storage_url(storage, must_exist=True)
    return storage, ckpt


def _stored_checkpoint_dir(storage: str) -> Path | None:
    """The checkpoint_dir recorded with the studies of this database, if they agree on one."""
    from growsearch.store import SQLLineageStore

    check_storage_url(storage, must_exist=True)
    store = SQLLineageStore(storage, create=False)
    dirs = set()
    for name in store.list_studies():
        record = store.get_study(name)
        if record is not None:
            dirs.add(record.config.get("checkpoint_dir", "checkpoints"))
    return Path(dirs.pop()) if len(dirs) == 1 else None


def run(args: argparse.Namespace) -> int:
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    storage, ckpt = resolve(args)
    # The folder may not exist yet (a dashboard started before the first trial finished); the
    # store only reads from it, so it serves the artifacts once workers have written them.
    artifact_store = None if ckpt is None else FileSystemArtifactStore(ckpt / "artifacts")
    print(
        f"optuna-dashboard on http://{args.host}:{args.port}/ for {redact(storage)} "
        "(Ctrl-C stops it)",
        flush=True,
    )
    run_server(storage, host=args.host, port=args.port, artifact_store=artifact_store)
    return 0
