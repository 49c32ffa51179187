"""Schema versions: first use, Optuna in the same database, older and newer schemas, upgrade."""

from __future__ import annotations

import shutil
import textwrap
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from growsearch.exceptions import StorageError
from growsearch.storage_url import make_engine, sqlite_path
from growsearch.store import (
    VERSION_TABLE,
    SQLLineageStore,
    _migrate,
    current_revision,
    head_revision,
    upgrade,
)
from growsearch.store._models import Base

SPEC = {"input_shape": [2], "layers": [{"type": "dense", "out": 2, "name": "dense0"}]}

# A later schema, as a future growsearch would ship it. On SQLite ``recreate="always"`` rebuilds
# gs_models (copy, drop, rename): the case that must not cascade-delete the edges.
_REVISION_2 = """
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _recreate():
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade():
    with op.batch_alter_table("gs_models", recreate=_recreate()) as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("gs_models", recreate=_recreate()) as batch:
        batch.drop_column("note")
"""


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _scalar(url: str, sql: str) -> object:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def _execute(url: str, sql: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def _with_password(url: str) -> str:
    """The same database with a password in the URL (the test servers trust local users, so
    it is ignored by the server, yet it must never appear in a message)."""
    if url.startswith("sqlite"):
        return url
    return sa.make_url(url).set(password="hunter2").render_as_string(hide_password=False)


@pytest.fixture
def future_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process believe it is a newer growsearch, whose head is revision 0002."""
    folder = tmp_path / "migrations"
    shutil.copytree(_migrate.MIGRATIONS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "0002_note.py").write_text(textwrap.dedent(_REVISION_2))
    monkeypatch.setattr(_migrate, "MIGRATIONS_DIR", folder)


def test_first_use_creates_the_tables_under_our_own_version_table(storage_url: str) -> None:
    SQLLineageStore(storage_url).close()
    tables = _tables(storage_url)
    assert {"gs_studies", "gs_models", "gs_edges", "gs_evaluations", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # Optuna's name stays Optuna's
    assert _scalar(storage_url, f"SELECT version_num FROM {VERSION_TABLE}") == head_revision()
    assert current_revision(storage_url) == head_revision() == "0001"
    SQLLineageStore(storage_url).close()  # opening again changes nothing
    assert current_revision(storage_url) == head_revision()


def test_optuna_and_growsearch_share_one_database(storage_url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = optuna.storages.RDBStorage(storage_url)
        before = optuna.create_study(study_name="opt", storage=first)
        before.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        first.engine.dispose()
        optuna_rev = _scalar(storage_url, "SELECT version_num FROM alembic_version")
        store = SQLLineageStore(storage_url)
        store.create_study("opt", {"n_trials": 2})
        seed = store.start_model("opt", 0, None, "seed", [], SPEC, "h", 6, 12, 0)
        store.finish_model(seed, val_accuracy=0.5)
        store.close()
        second = optuna.storages.RDBStorage(storage_url)  # checks its own schema version
        after = optuna.load_study(study_name="opt", storage=second)
        after.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        assert len(after.trials) == 3
        second.engine.dispose()
    assert _scalar(storage_url, "SELECT version_num FROM alembic_version") == optuna_rev
    assert _scalar(storage_url, f"SELECT count(*) FROM {VERSION_TABLE}") == 1
    reopened = SQLLineageStore(storage_url)
    assert reopened.best("opt").model_id == seed  # type: ignore[union-attr]
    reopened.close()


def test_models_match_the_migrations(storage_url: str) -> None:
    """The ORM models and the migration files describe the same tables (no drift)."""
    SQLLineageStore(storage_url).close()
    engine = make_engine(storage_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "version_table": VERSION_TABLE,
                    "include_object": lambda obj, name, type_, *_: (
                        type_ != "table" or name.startswith("gs_")
                    ),
                    "compare_type": True,
                },
            )
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_only_our_tables(storage_url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(storage_url)
        optuna.create_study(study_name="opt", storage=storage)
        storage.engine.dispose()
    SQLLineageStore(storage_url).close()
    engine = make_engine(storage_url)
    try:
        with engine.begin() as conn:
            command.downgrade(_migrate.alembic_config(conn), "base")
    finally:
        engine.dispose()
    tables = _tables(storage_url)
    assert not {t for t in tables if t.startswith("gs_")}
    assert {"studies", "trials", "alembic_version"} <= tables


def test_older_schema_asks_for_the_upgrade_command(
    storage_url: str, future_migrations: None
) -> None:
    url = _with_password(storage_url)
    engine = make_engine(url)
    with engine.begin() as conn:  # a database written by the previous growsearch: 0001
        command.upgrade(_migrate.alembic_config(conn), "0001")
    engine.dispose()
    seed, child = _small_lineage_at(url)
    with pytest.raises(StorageError) as info:
        SQLLineageStore(url)
    message = str(info.value)
    assert "revision 0001, older than this growsearch (0002)" in message
    shown = url.replace("hunter2", "***")
    assert f"growsearch db upgrade --storage {shown}" in message
    assert "hunter2" not in message
    assert current_revision(url) == "0001"  # nothing was migrated silently
    assert upgrade(url) == "0002"
    assert current_revision(url) == "0002"
    store = SQLLineageStore(url)
    try:
        # The rebuilt gs_models kept its rows, and the rows pointing at it survived.
        assert [r.model_id for r in store.ancestry(child)] == [seed, child]
        assert [e.val_accuracy for e in store.evaluations(child)] == [0.5]
    finally:
        store.close()
    assert upgrade(url) == "0002"  # idempotent


def _small_lineage_at(url: str) -> tuple[int, int]:
    """Write a lineage through SQL-level access while the code believes in a newer head."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO gs_studies (id, name, config, created_at) "
                "VALUES (1, 's', '{}', CURRENT_TIMESTAMP)"
            ))  # fmt: skip
            for mid in (1, 2):
                conn.execute(sa.text(
                    "INSERT INTO gs_models (id, study_id, trial_number, status, spec, spec_hash, "
                    "num_params, flops, generation, info, created_at) VALUES "
                    f"({mid}, 1, {mid - 1}, 'running', '{{}}', 'h', 1, 1, {mid - 1}, '{{}}', "
                    "CURRENT_TIMESTAMP)"
                ))  # fmt: skip
            conn.execute(sa.text(
                "INSERT INTO gs_edges (child_id, parent_id, operation, args) "
                "VALUES (2, 1, 'widen', '[]')"
            ))  # fmt: skip
            conn.execute(sa.text(
                "INSERT INTO gs_evaluations (model_id, epoch, val_accuracy) VALUES (2, 0, 0.5)"
            ))  # fmt: skip
    finally:
        engine.dispose()
    return 1, 2


def test_newer_schema_asks_to_upgrade_growsearch(storage_url: str) -> None:
    SQLLineageStore(storage_url).close()
    _execute(storage_url, f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(StorageError, match=r"revision 9999, written by a newer growsearch.*"
                       r"upgrade growsearch"):  # fmt: skip
        SQLLineageStore(storage_url)
    with pytest.raises(StorageError, match="upgrade growsearch"):
        upgrade(storage_url)
    assert current_revision(storage_url) == "9999"


def test_a_real_newer_schema_from_a_future_growsearch(
    storage_url: str, future_migrations: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    SQLLineageStore(storage_url).close()  # created by the "future" code at 0002
    assert current_revision(storage_url) == "0002"
    monkeypatch.undo()  # back to this growsearch, which knows only 0001
    with pytest.raises(StorageError, match=r"revision 0002, written by a newer growsearch"):
        SQLLineageStore(storage_url)


def test_create_false_never_creates_tables(storage_url: str) -> None:
    if storage_url.startswith("sqlite"):
        with pytest.raises(StorageError, match="no database at"):
            SQLLineageStore(storage_url, create=False)
        path = sqlite_path(storage_url)
        assert path is not None and not path.exists()
        return
    with pytest.raises(StorageError, match="holds no growsearch lineage tables"):
        SQLLineageStore(storage_url, create=False)
    assert _tables(storage_url) == set()


def test_lineage_tables_without_a_version_are_refused(storage_url: str) -> None:
    SQLLineageStore(storage_url).close()
    _execute(storage_url, f"DROP TABLE {VERSION_TABLE}")
    with pytest.raises(StorageError, match=f"no '{VERSION_TABLE}' table"):
        SQLLineageStore(storage_url)


@pytest.mark.postgres
def test_upgrade_creates_the_tables_of_an_empty_server_database(postgresql_url: str) -> None:
    assert current_revision(postgresql_url) is None
    assert upgrade(postgresql_url) == head_revision()
    assert "gs_models" in _tables(postgresql_url)
