"""Alembic environment for the lineage tables.

growsearch configures Alembic in code (``growsearch.store._migrate.alembic_config``) and passes
an open connection in ``config.attributes["connection"]``; no alembic.ini is needed. Only the
``gs_`` tables are ours: Optuna's tables in the same database are never compared or touched.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from growsearch.storage_url import make_engine
from growsearch.store._migrate import VERSION_TABLE
from growsearch.store._models import Base

config = context.config
target_metadata = Base.metadata


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    if type_ == "table":
        return bool(name and name.startswith("gs_"))
    return True


_OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "version_table": VERSION_TABLE,
    "include_object": include_object,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    "render_as_batch": True,
}


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **_OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, **_OPTIONS)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
