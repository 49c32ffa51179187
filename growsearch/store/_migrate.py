"""Schema versions of the lineage tables, kept by Alembic in ``growsearch_alembic_version``
(Optuna keeps its own in ``alembic_version`` in the same database).

Opening a store creates the tables on first use; any other difference between the database and
this code is an error that names the fix. Nothing is migrated silently: upgrades run only through
``upgrade`` (``growsearch db upgrade``).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from growsearch.exceptions import StorageError
from growsearch.storage_url import check_storage_url, make_engine, redact
from growsearch.store._session import describe_db_error

__all__ = [
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "current_revision",
    "ensure_schema",
    "head_revision",
    "upgrade",
]

VERSION_TABLE = "growsearch_alembic_version"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key ("gs" + "schema" in ASCII-ish): serialises first-use table creation
# between workers that start at the same moment.
_PG_LOCK_KEY = 0x6773_5343_4845


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini on disk."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        # configparser interpolates '%' (URL-escaped passwords contain it).
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def known_revisions() -> list[str]:
    return [r.revision for r in _script().walk_revisions()]


def _read_revision(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def _gs_tables(conn: Connection) -> list[str]:
    return sorted(t for t in sa.inspect(conn).get_table_names() if t.startswith("gs_"))


def _mismatch(current: str, shown_url: str) -> StorageError:
    head = head_revision()
    if current in known_revisions():
        return StorageError(
            f"the lineage tables in '{shown_url}' use schema revision {current}, older than this "
            f"growsearch ({head}); back up the database, then run: "
            f"growsearch db upgrade --storage {shown_url}"
        )
    return StorageError(
        f"the lineage tables in '{shown_url}' use schema revision {current}, written by a newer "
        f"growsearch (this one knows revisions up to {head}); upgrade growsearch "
        "(pip install -U growsearch)"
    )


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Return if the tables match this code; create them if absent and ``create``; raise
    StorageError otherwise."""
    shown = redact(engine.url)
    try:
        with engine.connect() as conn:
            current = _read_revision(conn)
        if current == head_revision():
            return
        if current is not None:
            raise _mismatch(current, shown)
        if not create:
            raise StorageError(
                f"'{shown}' holds no growsearch lineage tables; check the storage URL, or run "
                "`growsearch run STUDY.yaml` to start a study there"
            )
        _migrate(engine, first_use=True)
    except SQLAlchemyError as e:
        raise StorageError(f"cannot read the schema of '{shown}': {describe_db_error(e)}") from e


def _migrate(engine: Engine, *, first_use: bool) -> str:
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild a SQLite table (copy, DROP, RENAME); with foreign keys on,
            # the DROP would cascade-delete every row that refers to it. The pragma is ignored
            # inside a transaction, hence before BEGIN, on the driver connection.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            # SQLite: take the write lock up front, so two first users queue instead of racing.
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                return _migrate_locked(conn, first_use=first_use)
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def _migrate_locked(conn: Connection, *, first_use: bool) -> str:
    shown = redact(conn.engine.url)
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    current = _read_revision(conn)
    head = head_revision()
    if current is None and _gs_tables(conn):
        raise StorageError(
            f"'{shown}' has lineage tables ({', '.join(_gs_tables(conn))}) but no "
            f"'{VERSION_TABLE}' table, so their schema is unknown; restore the database "
            "from a backup or drop those tables"
        )
    if current == head:
        return head  # another process created or upgraded them meanwhile
    if current is not None and (first_use or current not in known_revisions()):
        raise _mismatch(current, shown)
    command.upgrade(alembic_config(conn), "head")
    if conn.dialect.name == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise StorageError(
                f"upgrading '{shown}' would leave {len(broken)} broken references "
                f"(first: {tuple(broken[0])}); nothing was changed"
            )
    return head


def upgrade(url: str) -> str:
    """Bring the lineage tables of ``url`` to this code's schema (creating them if absent);
    return the revision now in the database."""
    check_storage_url(url, must_exist=True)
    engine = make_engine(url)
    try:
        return _migrate(engine, first_use=False)
    except SQLAlchemyError as e:
        raise StorageError(f"upgrade of '{redact(url)}' failed: {describe_db_error(e)}") from e
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """Schema revision of the lineage tables in ``url``; None if they were never created."""
    check_storage_url(url, must_exist=True)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _read_revision(conn)
    except SQLAlchemyError as e:
        raise StorageError(
            f"cannot read the schema of '{redact(url)}': {describe_db_error(e)}"
        ) from e
    finally:
        engine.dispose()
