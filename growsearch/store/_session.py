"""The one way the store talks to the database: a session that commits, rolls back and closes,
and turns SQLAlchemy errors into StorageError (with the URL redacted)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from growsearch.exceptions import StorageError

__all__ = ["describe_db_error", "session_scope"]


def describe_db_error(error: SQLAlchemyError) -> str:
    """First line of the driver's message, without the SQL statement and its parameters."""
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def session_scope(factory: sessionmaker[Session], shown_url: str) -> Iterator[Session]:
    """``shown_url`` must already be redacted."""
    session = factory()
    try:
        yield session
        session.commit()
    except SQLAlchemyError as e:
        session.rollback()
        raise StorageError(f"database error on '{shown_url}': {describe_db_error(e)}") from e
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
