"""Storage URLs: validate them before anything is written, redact them before they are shown.

One URL names the database that holds both Optuna's tables and the lineage tables. Every
message that shows a URL goes through ``redact`` so a password never reaches a log or a terminal.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from growsearch.exceptions import StorageError

__all__ = [
    "check_persistent_storage",
    "check_storage_url",
    "make_engine",
    "make_engine_kwargs",
    "redact",
    "sqlite_path",
]

_DIALECTS = ("sqlite", "postgresql", "mysql")
_EXAMPLES = "use sqlite:///path.db (one worker) or postgresql://user@host/db (many workers)"
# SQLite writes these 16 bytes at the start of every database file it creates.
_SQLITE_MAGIC = b"SQLite format 3\x00"
_CHECK_TIMEOUT_S = 5
_SQLITE_BUSY_TIMEOUT_S = 30
_PG_CONNECT_TIMEOUT_S = 10
# Query parameters that can carry a secret in some drivers' URLs.
_SECRET_KEYS = {"password", "passwd", "pass", "sslpassword", "secret", "token"}
_USERINFO_RE = re.compile(r"(?P<head>://[^:/@?#]*:)(?P<secret>[^@/?#]*)(?P<tail>@)")


def redact(url: str | URL) -> str:
    """``url`` with any password replaced by ``***``; never raises, whatever the input."""
    try:
        parsed = url if isinstance(url, URL) else make_url(str(url))
    except Exception:
        # Unparseable: still hide what looks like ``user:secret@``.
        return _USERINFO_RE.sub(r"\g<head>***\g<tail>", str(url))
    query = {k: ("***" if k.lower() in _SECRET_KEYS else v) for k, v in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***")  # the renderer escapes the stars in a query


def _parse(url: str | URL) -> URL:
    if isinstance(url, URL):
        return url
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage URL is empty; {_EXAMPLES}")
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - a port that is not a number raises only when read
        return parsed
    except (ArgumentError, ValueError) as e:
        raise StorageError(f"storage URL '{redact(url)}' cannot be parsed; {_EXAMPLES}") from e


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL (relative to the working folder as given), or None for
    an in-memory database or a non-SQLite URL."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or (db.startswith("file:") and "mode=memory" in db):
        return None
    if db.startswith("file:"):  # sqlite URI filename (``?uri=true``)
        db = db[len("file:") :].split("?", 1)[0]
    return Path(db)


def check_persistent_storage(url: str) -> None:
    """StorageError for an in-memory SQLite URL: a study stored there is lost when the run ends.
    (Read-only commands accept it and say it holds no studies.)"""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite" and sqlite_path(parsed) is None:
        raise StorageError(
            f"storage: '{redact(parsed)}' is an in-memory SQLite database: the study would be "
            "lost when the run ends. Use a file, e.g. sqlite:///growsearch.db"
        )


def check_storage_url(url: str, *, must_exist: bool = False) -> str:
    """Validate ``url`` without writing anything and return it unchanged.

    Raises StorageError naming the problem and its fix: unparseable URL, unknown dialect or
    missing driver, SQLite folder that does not exist, SQLite file missing (``must_exist``) or
    not a database, PostgreSQL server unreachable, credentials refused, database missing.
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend not in _DIALECTS:
        raise StorageError(
            f"unknown dialect '{backend}' in storage URL '{redact(url)}'; {_EXAMPLES}"
        )
    try:
        dialect_cls = parsed.get_dialect()
        dialect_cls.import_dbapi()
    except (NoSuchModuleError, ImportError) as e:
        raise StorageError(
            f"the database driver for '{parsed.drivername}' in '{redact(url)}' is not installed "
            f"({e}); install it or {_EXAMPLES}"
        ) from e
    if getattr(dialect_cls, "is_async", False):
        raise StorageError(
            f"'{parsed.drivername}' is an asyncio driver; growsearch needs a regular one, e.g. "
            f"{backend}://... without '+{parsed.get_driver_name()}'"
        )
    if backend == "sqlite":
        _check_sqlite(parsed, must_exist)
    else:
        _check_server(parsed)
    return url


def _check_sqlite(parsed: URL, must_exist: bool) -> None:
    path = sqlite_path(parsed)
    if path is None:
        if must_exist:
            raise StorageError(
                f"'{redact(parsed)}' is an in-memory SQLite database and holds no studies; "
                "point --storage at the database file of the study, e.g. sqlite:///growsearch.db"
            )
        return
    folder = path.parent.absolute()
    if not folder.is_dir():
        raise StorageError(
            f"storage '{redact(parsed)}': folder '{folder}' does not exist; create it first or "
            "fix the path (sqlite:///relative/path.db or sqlite:////absolute/path.db)"
        )
    if path.is_dir():
        raise StorageError(
            f"storage '{redact(parsed)}': '{path.absolute()}' is a folder, not a database file"
        )
    if not path.exists():
        if must_exist:
            raise StorageError(
                f"no database at '{path.absolute()}' (from '{redact(parsed)}'); check the path, "
                "or run `growsearch run STUDY.yaml` first to create it"
            )
        if not os.access(folder, os.W_OK):
            raise StorageError(
                f"storage '{redact(parsed)}': cannot create a database in '{folder}' "
                "(no write permission)"
            )
        return
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:
        raise StorageError(
            f"'{path.absolute()}' (from '{redact(parsed)}') exists but is not a SQLite database; "
            "point --storage at a .db file created by growsearch or Optuna, or at a new path"
        )


def _check_server(parsed: URL) -> None:
    """Open (and close) one connection so each way it can fail gets its own message."""
    where = f"{parsed.host or 'localhost'}:{parsed.port or _default_port(parsed)}"
    engine = sa.create_engine(
        parsed, poolclass=sa.pool.NullPool, connect_args=_connect_timeout(parsed, _CHECK_TIMEOUT_S)
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as e:
        raise StorageError(_explain_connect_error(parsed, where, e)) from None
    finally:
        engine.dispose()


def _default_port(parsed: URL) -> int:
    return 3306 if parsed.get_backend_name() == "mysql" else 5432


def _explain_connect_error(parsed: URL, where: str, error: sa.exc.DBAPIError) -> str:
    detail = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
    if parsed.password:
        detail = detail.replace(str(parsed.password), "***")
    low = detail.lower()
    shown = redact(parsed)
    if "database" in low and ("does not exist" in low or "unknown database" in low):
        user = parsed.username or "postgres"
        return (
            f"database '{parsed.database}' does not exist on {where} ('{shown}'); create it "
            f"(PostgreSQL: `createdb -h {parsed.host or 'localhost'} -U {user} "
            f"{parsed.database}`) or fix the name in the URL"
        )
    auth_words = ("password", "authentication", "access denied", "role", "no pg_hba.conf")
    if any(w in low for w in auth_words):
        return (
            f"the server at {where} refused the credentials of '{shown}' ({detail}); fix the user "
            "name or password in the URL (or in ~/.pgpass)"
        )
    return (
        f"cannot reach the database server at {where} for '{shown}' ({detail or 'no answer'}); "
        "check that the server is running and the host and port are right"
    )


def _connect_timeout(parsed: URL, seconds: int) -> dict[str, Any]:
    # libpq and the MySQL drivers all take ``connect_timeout``; a URL's own value wins.
    if "connect_timeout" in parsed.query:
        return {}
    return {"connect_timeout": seconds}


def make_engine_kwargs(url: str | URL) -> dict[str, Any]:
    """``create_engine`` keyword arguments for ``url`` (also for Optuna's ``RDBStorage``):
    pre-ping and a connect timeout on servers, a 30 s busy timeout on SQLite."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": _SQLITE_BUSY_TIMEOUT_S}}
    return {
        "pool_pre_ping": True,
        "connect_args": _connect_timeout(parsed, _PG_CONNECT_TIMEOUT_S),
    }


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url``: pre-ping on servers (connections die), a 30 s busy timeout,
    enforced foreign keys and real transactions on SQLite.

    SQLite transactions begin with ``BEGIN`` (or ``BEGIN IMMEDIATE`` on an engine derived with
    ``execution_options(sqlite_begin="IMMEDIATE")``) emitted by us rather than by the driver, so
    schema changes are transactional and writers queue on the busy timeout instead of failing.
    """
    parsed = _parse(url)
    engine = sa.create_engine(parsed, **make_engine_kwargs(parsed))
    if parsed.get_backend_name() != "sqlite":
        return engine

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver (it skips BEGIN before DDL).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL (a property of the file, so Optuna's connections use it too) lets readers work
        # during a write, and with synchronous=NORMAL a commit costs about half as much; a
        # crashed or killed process still loses no committed transaction (only a power cut could).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine
