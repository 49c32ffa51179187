"""A lock that serialises "may I start another trial?" across the workers of one study.

Optuna's ``MaxTrialsCallback`` lets concurrent workers overshoot ``n_trials``. We hold this lock
from counting the trials until the new trial exists in the storage (the objective releases it on
its first line), so workers never start more trials than the study still needs.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

__all__ = ["AdmissionLock"]


class AdmissionLock:
    def __init__(self, url: str, study_name: str) -> None:
        self._url = make_url(url)
        self._key = zlib.crc32(f"growsearch:{study_name}".encode())
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._file: Any = None
        self.held = False

    def acquire(self) -> None:
        if self.held:
            return
        backend = self._url.get_backend_name()
        if backend == "postgresql":
            if self._engine is None:
                self._engine = sa.create_engine(self._url, poolclass=sa.pool.NullPool)
            self._conn = self._engine.connect()
            self._conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
            self._conn.commit()
        elif backend == "sqlite" and self._url.database not in (None, "", ":memory:"):
            import fcntl

            self._file = open(f"{os.path.abspath(self._url.database)}.lock", "a")  # noqa: SIM115
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                self._conn.commit()
            finally:
                self._conn.close()  # closing the session frees the lock even if unlock failed
                self._conn = None
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def close(self) -> None:
        self.release()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
