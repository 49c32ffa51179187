"""Storage URL checks: one clear message per problem, nothing written, no password shown."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from growsearch.exceptions import StorageError, UserError
from growsearch.storage_url import (
    check_storage_url,
    make_engine,
    make_engine_kwargs,
    redact,
    sqlite_path,
)


# ---- redact ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:s3cret@db.example:5432/gs", "postgresql://bob:***@db.example:5432/gs"),
        ("postgresql+psycopg://bob:p%40ss@h/gs", "postgresql+psycopg://bob:***@h/gs"),
        ("postgresql://bob@h/gs?password=s3cret&sslmode=require",
         "postgresql://bob@h/gs?password=***&sslmode=require"),
        ("mysql://root:s3cret@localhost/gs", "mysql://root:***@localhost/gs"),
        ("sqlite:///growsearch.db", "sqlite:///growsearch.db"),
        ("sqlite:////abs/path/lineage.db", "sqlite:////abs/path/lineage.db"),
        ("postgresql://bob@h/gs", "postgresql://bob@h/gs"),
        ("not a url: bob:s3cret@", "not a url: bob:s3cret@"),  # nothing URL-like to hide
        ("weird://bob:s3cret@host/db", "weird://bob:***@host/db"),
        ("bad scheme!://bob:s3cret@host/db", "bad scheme!://bob:***@host/db"),  # unparseable
    ],
)  # fmt: skip
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_redact_never_raises_and_accepts_url_objects() -> None:
    assert redact(sa.make_url("postgresql://u:pw@h/d")) == "postgresql://u:***@h/d"
    assert redact("") == ""


# ---- dialects and parsing --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "storage URL is empty"),
        ("growsearch.db", "cannot be parsed; use sqlite:///path.db"),
        ("oracle://scott:tiger@h/db", "unknown dialect 'oracle'"),
        ("mongodb://u:pw@h/db", "unknown dialect 'mongodb'"),
        ("postgresql+nosuchdriver://u@h/db", "database driver for 'postgresql+nosuchdriver'"),
    ],
)
def test_bad_urls_are_refused_with_the_fix(url: str, expected: str) -> None:
    with pytest.raises(StorageError, match=re.escape(expected)) as info:
        check_storage_url(url)
    assert isinstance(info.value, UserError)
    assert "pw" not in str(info.value) and "tiger" not in str(info.value)
    assert "sqlite:///" in str(info.value)  # every message shows a URL that works


# ---- SQLite ----------------------------------------------------------------------------------
def test_sqlite_url_is_returned_unchanged_and_nothing_is_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert check_storage_url(url) == url
    assert list(tmp_path.iterdir()) == []


def test_relative_sqlite_paths_are_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert check_storage_url("sqlite:///growsearch.db") == "sqlite:///growsearch.db"
    assert check_storage_url("sqlite:///sub/lineage.db") == "sqlite:///sub/lineage.db"
    assert sqlite_path("sqlite:///sub/lineage.db") == Path("sub/lineage.db")
    assert list((tmp_path / "sub").iterdir()) == []


def test_sqlite_missing_folder_is_named_and_not_created(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such"
    with pytest.raises(StorageError, match=f"folder '{folder}' does not exist"):
        check_storage_url(f"sqlite:///{folder / 'x.db'}")
    assert not (tmp_path / "no").exists()


def test_sqlite_must_exist_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(StorageError, match=f"no database at '{path}'"):
        check_storage_url(f"sqlite:///{path}", must_exist=True)
    assert not path.exists()
    sqlite3.connect(path).close()  # an empty SQLite database is a database
    assert check_storage_url(f"sqlite:///{path}", must_exist=True)


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: digits\n")
    with pytest.raises(StorageError, match="exists but is not a SQLite database"):
        check_storage_url(f"sqlite:///{path}")
    assert path.read_text() == "name: digits\n"
    with pytest.raises(StorageError, match="is a folder"):
        check_storage_url(f"sqlite:///{tmp_path}")


def test_sqlite_in_memory(tmp_path: Path) -> None:
    assert check_storage_url("sqlite://") == "sqlite://"
    assert sqlite_path("sqlite:///:memory:") is None
    with pytest.raises(StorageError, match="in-memory SQLite database and holds no studies"):
        check_storage_url("sqlite://", must_exist=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_sqlite_read_only_folder(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="no write permission"):
            check_storage_url(f"sqlite:///{tmp_path / 'x.db'}")
    finally:
        tmp_path.chmod(0o700)


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    assert make_engine_kwargs(url) == {"connect_args": {"timeout": 30}}
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            conn.exec_driver_sql("CREATE TABLE p (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql("CREATE TABLE c (p_id INTEGER REFERENCES p(id))")
        # DDL is transactional: a rolled-back CREATE leaves nothing behind.
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO c VALUES (42)")  # no such parent
        assert "t" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# ---- PostgreSQL ------------------------------------------------------------------------------
def _pg(admin: sa.Engine, **parts: object) -> str:
    """A URL on the test server with some parts changed."""
    return admin.url.set(**parts).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_postgres_reachable_database_is_accepted(postgresql_url: str) -> None:
    assert check_storage_url(postgresql_url, must_exist=True) == postgresql_url
    kwargs = make_engine_kwargs(postgresql_url)
    assert kwargs["pool_pre_ping"] is True and kwargs["connect_args"]["connect_timeout"] > 0
    assert make_engine_kwargs(postgresql_url + "?connect_timeout=2")["connect_args"] == {}


@pytest.mark.postgres
def test_postgres_missing_database(postgres_admin: sa.Engine) -> None:
    url = _pg(postgres_admin, database="gs_no_such_db", password="s3cret")
    with pytest.raises(StorageError) as info:
        check_storage_url(url)
    message = str(info.value)
    assert "database 'gs_no_such_db' does not exist" in message and "createdb" in message
    assert "s3cret" not in message and "***" in message


@pytest.mark.postgres
def test_postgres_unknown_user(postgres_admin: sa.Engine) -> None:
    url = _pg(postgres_admin, username="gs_nobody", password="s3cret")
    with pytest.raises(StorageError) as info:
        check_storage_url(url)
    message = str(info.value)
    assert "refused the credentials" in message and "gs_nobody" in message
    assert "s3cret" not in message


def test_postgres_unreachable_server() -> None:
    # Port 1 on the loopback interface: refused at once, no server needed for this test.
    url = "postgresql://bob:s3cret@127.0.0.1:1/gs"
    with pytest.raises(StorageError) as info:
        check_storage_url(url)
    message = str(info.value)
    assert "cannot reach the database server at 127.0.0.1:1" in message
    assert "s3cret" not in message and "bob:***@" in message
