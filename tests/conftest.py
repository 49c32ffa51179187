"""Shared database fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL tests get a fresh database per test on the server named by
``GROWSEARCH_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``, used
only to create and drop the test databases). They are skipped, with the reason, only when that
server cannot be reached; set ``GROWSEARCH_REQUIRE_POSTGRES=1`` (CI does) to make that a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from growsearch.storage_url import redact
from growsearch.store import SQLLineageStore

PG_ADMIN_URL = os.environ.get(
    "GROWSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("GROWSEARCH_REQUIRE_POSTGRES", "") not in ("", "0")


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    """An autocommit engine on the server's maintenance database (CREATE/DROP DATABASE)."""
    engine = sa.create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": 3},
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", e)).strip().splitlines()[0]
        message = (
            f"PostgreSQL server at {redact(PG_ADMIN_URL)} cannot be reached ({reason}); start it "
            "or point GROWSEARCH_TEST_POSTGRES at one"
        )
        if REQUIRE_PG:
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture
def postgresql_url(postgres_admin: sa.Engine) -> Iterator[str]:
    """URL of a new, empty database, dropped after the test (open connections included)."""
    name = f"gs_test_{uuid.uuid4().hex[:16]}"
    with postgres_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with postgres_admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    """URL of a SQLite file that does not exist yet, in the test's own folder."""
    return f"sqlite:///{os.path.join(tmp_path, 'lineage.db')}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest) -> str:
    """An empty database, once per backend."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(storage_url: str) -> Iterator[SQLLineageStore]:
    """A lineage store on an empty database, once per backend."""
    s = SQLLineageStore(storage_url)
    yield s
    s.close()
