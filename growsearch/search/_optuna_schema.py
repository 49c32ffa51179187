"""Is the database's Optuna schema the one this Optuna writes? Checked read-only before a worker
writes anything: Optuna's own check runs only after it has created any missing tables, so an
old database would be half-changed before the error."""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa

from growsearch.exceptions import StorageError
from growsearch.storage_url import make_engine_kwargs, redact, sqlite_path

__all__ = ["check_optuna_schema", "optuna_revisions"]

# Optuna keeps its schema version in Alembic's default table; ours has another name.
_VERSION_TABLE = "alembic_version"
_OPTUNA_TABLES = ("studies", "trials", "version_info")
_UNVERSIONED_CHECKS = 6
_UNVERSIONED_WAIT_S = 0.5


def optuna_revisions() -> tuple[str, list[str]]:
    """(head revision, every known revision) of the installed Optuna's migrations."""
    from alembic.script import ScriptDirectory
    from optuna.storages import _rdb

    script = ScriptDirectory(os.path.join(os.path.dirname(_rdb.__file__), "alembic"))
    head = script.get_current_head()
    assert head is not None
    return head, [r.revision for r in script.walk_revisions()]


def _read_only_engine(url: str) -> sa.Engine:
    path = sqlite_path(url)
    if path is None:
        kwargs: dict[str, Any] = make_engine_kwargs(url)
        return sa.create_engine(url, poolclass=sa.pool.NullPool, **kwargs)
    # A read-only SQLite connection: it writes nothing, and closing it never checkpoints or
    # removes the write-ahead log that other connections of the file may still be using.
    ro = sa.engine.URL.create(
        "sqlite", database=f"{path.absolute().as_uri()}?mode=ro", query={"uri": "true"}
    )
    return sa.create_engine(ro, poolclass=sa.pool.NullPool)


def _empty(conn: sa.Connection, table: str) -> bool:
    return conn.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is None


def _current(url: str) -> tuple[bool, str | None]:
    """(Optuna tables exist, the revision in their version table)."""
    engine = _read_only_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables = set(inspector.get_table_names())
            if not tables & set(_OPTUNA_TABLES):
                return False, None
            row = None
            if _VERSION_TABLE in tables:
                row = conn.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}")).first()
            # Tables without a version and without a study: a creation that was interrupted
            # (Ctrl-C between Optuna creating the tables and stamping them). Nothing can be
            # lost, and Optuna stamps the current version when it opens them: as new.
            no_study = "studies" in tables and _empty(conn, "studies")
            if row is None and no_study:
                return False, None
            return True, None if row is None else str(row[0])
    finally:
        engine.dispose()


def check_optuna_schema(url: str, *, strict: bool = True) -> None:
    """StorageError (exit 2) naming the upgrade command when the Optuna tables in ``url`` are of
    another version; a new database (or a SQLite file not created yet) passes.

    Not ``strict``: tables without a version also pass, since another worker may be creating
    them right now (Optuna stamps the version after creating the tables). Workers check that
    way before taking the admission lock, and strictly once they hold it."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return  # connecting would create the file
    exists, current = _current(url)
    for _ in range(_UNVERSIONED_CHECKS):
        if not (exists and current is None and strict):
            break
        # Any Optuna client opening an empty database (a dashboard, a script, another worker)
        # creates the tables and stamps their version a moment later: give it that moment.
        time.sleep(_UNVERSIONED_WAIT_S)
        exists, current = _current(url)
    if not exists or (current is None and not strict):
        return
    head, known = optuna_revisions()
    if current == head:
        return
    import optuna

    shown = redact(url)
    if current in known:
        raise StorageError(
            f"the Optuna tables in {shown} are of an older schema ({current}; Optuna "
            f"{optuna.__version__} needs {head}). Nothing was written. Back up the database, "
            f"then upgrade them with:\n  optuna storage upgrade --storage '{shown}'"
        )
    raise StorageError(
        f"the Optuna tables in {shown} have schema {current or 'without a version'}, which "
        f"Optuna {optuna.__version__} does not know (its newest is {head}): a newer Optuna "
        "wrote them. Nothing was written. Upgrade Optuna (pip install -U optuna) or use "
        f"another storage; if the schema is old, `optuna storage upgrade --storage '{shown}'` "
        "brings it up to date"
    )
