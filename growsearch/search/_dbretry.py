"""Riding out a database outage (a PostgreSQL restart, a dropped connection, a locked SQLite).

One ``DbGuard`` per worker. In the worker's own thread a call that fails with a *transient*
database error (connection refused or closed, timeout, lock) is retried with exponential backoff
until it succeeds or the outage has lasted ``GROWSEARCH_DB_RETRY_S`` seconds (default 300); then
``DatabaseUnavailable`` ends the worker with exit code 3 and the command that resumes. Background
threads never wait: a heartbeat is skipped, the dead-worker check tries again next round.

Every write we retry is safe to repeat, or checked when its first attempt may have committed
before the connection dropped (``start_model``, ``set_trial_state_values``). Each retry is one
line, without the password.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from growsearch.exceptions import StorageError
from growsearch.storage_url import redact

__all__ = [
    "RETRY_ENV",
    "DatabaseUnavailable",
    "DbGuard",
    "RetryingLock",
    "RetryingStore",
    "is_transient",
]

T = TypeVar("T")
RETRY_ENV = "GROWSEARCH_DB_RETRY_S"
DEFAULT_RETRY_S = 300.0
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
# Driver messages that look like an outage but will not go away by waiting.
_PERMANENT = (
    "no such table",
    "no such column",
    "syntax error",
    "does not exist",
    "authentication failed",
    "password",
    "readonly database",
    "malformed",
)
# RDBStorage methods that talk to the database and are safe to repeat as they are. Methods that
# only call these (create_new_trial, set_trial_param, get_all_trials, get_best_trial) are left
# alone so a call is never retried twice over.
_REPEATABLE = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "_create_new_trial",  # a lost acknowledgement leaves an orphan; see _orphans
    "_set_trial_param",  # ignores the duplicate a repeated insert would make
    "get_trial_param",
    "set_trial_intermediate_value",  # an upsert
    "set_trial_user_attr",  # upserts
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "_get_trials",
    "_get_best_trial_id",
)


class DatabaseUnavailable(StorageError):
    """The database stayed unreachable longer than the retry budget. Not bad input: exit 3."""

    exit_code = 3


def retry_budget() -> float:
    raw = os.environ.get(RETRY_ENV, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_RETRY_S
    except ValueError:
        return DEFAULT_RETRY_S
    return max(0.0, value)


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its explicit causes (``raise ... from e``), innermost last."""
    out: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__
    return out


def is_transient(error: BaseException) -> bool:
    """Whether waiting may cure ``error``: a lost or refused connection, a timeout, a lock.
    Looks through our StorageError and Optuna's StorageInternalError to the driver's error."""
    for e in _chain(error):
        if isinstance(e, DatabaseUnavailable):
            return False
        if isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated:
            return True
        transient_kinds = (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            sa.exc.TimeoutError,
            sa.exc.DisconnectionError,
            # A session used again after its connection died (Optuna retries a failed read in
            # the same session); a new session, as the retry makes, works.
            sa.exc.PendingRollbackError,
        )
        if isinstance(e, transient_kinds):
            text = str(getattr(e, "orig", None) or e).lower()
            return not any(word in text for word in _PERMANENT)
    return False


class DbGuard:
    """Retries for one worker process; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        resume_hint: str,
        max_s: float | None = None,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shown = redact(url)
        try:
            self._password = make_url(url).password
        except Exception:  # pragma: no cover - the URL was checked before
            self._password = None
        self.resume_hint = resume_hint
        self.max_s = retry_budget() if max_s is None else max_s
        self._log = log or _stderr
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._owner = threading.current_thread()  # the worker's thread: the one that waits
        self.down_since: float | None = None  # first failure of the current outage
        self.last_error_at: float | None = None
        self.gave_up = False
        self.retries = 0
        self.outages = 0
        self.own_trials: set[int] = set()  # trial ids this process runs (they send heartbeats)
        self._last_error = ""

    # ---- bookkeeping -----------------------------------------------------------------------
    def describe(self, error: BaseException) -> str:
        """The driver's first line, password removed."""
        inner = _chain(error)[-1]
        text = str(getattr(inner, "orig", None) or inner).strip()
        line = text.splitlines()[0] if text else type(inner).__name__
        if self._password:
            line = line.replace(str(self._password), "***")
        return line

    def _failed(self, error: BaseException) -> bool:
        """Record a transient failure; True if it starts a new outage."""
        now = self._clock()
        with self._lock:
            self.last_error_at = now
            self._last_error = self.describe(error)
            if self.down_since is None:
                self.down_since = now
                self.outages += 1
                return True
            return False

    def _succeeded(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            self._log(f"database {self.shown} reachable again after {self._clock() - since:.1f}s")

    def recently_down(self, window_s: float) -> bool:
        """Whether this process saw the database fail within the last ``window_s`` seconds."""
        at = self.last_error_at
        return at is not None and self._clock() - at < window_s

    def unavailable(self, error: BaseException | None = None) -> DatabaseUnavailable:
        since = self.down_since
        lasted = f" for {self._clock() - since:.0f}s" if since is not None else ""
        last = self.describe(error) if error is not None else self._last_error
        return DatabaseUnavailable(
            f"database unavailable{lasted} ({self.shown}: {last}); gave up after "
            f"{self.max_s:.0f}s of retries ({RETRY_ENV} sets how long). Nothing was lost: "
            "finished trials are recorded and the interrupted trial is retried. Once the "
            f"database is back, resume with:\n  {self.resume_hint}"
        )

    def note_background(self, error: BaseException, what: str) -> None:
        """A background thread's transient failure: one line per outage, no waiting."""
        if self._failed(error):
            self._log(
                f"database unavailable ({what}): {self.describe(error)}; retrying with backoff "
                f"for up to {self.max_s:.0f}s"
            )

    # ---- calls -----------------------------------------------------------------------------
    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        what: str = "database call",
        after_lost_ack: Callable[[Exception], T] | None = None,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)``, retried on transient errors (in the worker's own thread;
        elsewhere the error is noted and raised).

        ``after_lost_ack(error)`` is asked when an attempt fails with a non-transient error
        after an earlier attempt failed transiently: that earlier attempt may have committed
        before the connection dropped. It returns the call's result, or raises.
        """
        attempt = 0
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                if not is_transient(e):
                    if attempt and after_lost_ack is not None:
                        return after_lost_ack(e)
                    raise
                self._wait_or_raise(e, what, attempt)
                attempt += 1
                continue
            self._succeeded()
            return result

    def _wait_or_raise(self, error: Exception, what: str, attempt: int) -> None:
        new = self._failed(error)
        if threading.current_thread() is not self._owner:
            if new:
                self._log(f"database unavailable ({what}): {self.describe(error)}")
            raise error
        if self.gave_up:
            raise self.unavailable(error) from error
        now = self._clock()
        since = self.down_since  # None if a heartbeat got through meanwhile
        down = 0.0 if since is None else now - since
        left = self.max_s - down
        if left <= 0:
            self.gave_up = True
            raise self.unavailable(error) from error
        delay = min(FIRST_DELAY_S * 2**attempt, MAX_DELAY_S, left)
        self.retries += 1
        self._log(
            f"database unavailable ({what}): {self.describe(error)}; retry {attempt + 1} in "
            f"{delay:.1f}s (down {down:.1f}s, giving up after {self.max_s:.0f}s)"
        )
        self._sleep(delay)

    def wrap(self, fn: Callable[..., T], what: str) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, what=what, **kwargs)

        return wrapped

    # ---- Optuna's storage --------------------------------------------------------------------
    def protect_storage(self, rdb: Any, grace_period: float) -> None:
        """Patch the database methods of this RDBStorage instance (it stays an RDBStorage, so
        Optuna's cache and heartbeats work as before)."""
        for name in _REPEATABLE:
            setattr(rdb, name, self.wrap(getattr(rdb, name), f"optuna {name.lstrip('_')}"))
        set_state = rdb.set_trial_state_values
        get_trial = rdb.get_trial  # the wrapped one

        def set_trial_state_values(trial_id: int, state: Any, values: Any = None) -> bool:
            def already(error: Exception) -> bool:
                # The first attempt committed, and its acknowledgement was lost.
                finished = isinstance(error, optuna.exceptions.UpdateFinishedTrialError)
                if finished and get_trial(trial_id).state == state:
                    return True
                raise error

            return self.call(
                set_state,
                trial_id,
                state,
                values,
                what="optuna set_trial_state_values",
                after_lost_ack=already,
            )

        rdb.set_trial_state_values = set_trial_state_values
        record = rdb.record_heartbeat

        def record_heartbeat(trial_id: int) -> None:
            # Runs in Optuna's heartbeat thread, which an exception would end for good.
            self.own_trials.add(trial_id)
            try:
                record(trial_id)
            except Exception as e:
                if is_transient(e):
                    self.note_background(e, "heartbeat")
                else:
                    self._log(f"note: heartbeat of trial id {trial_id} not recorded: {e}")
                return
            self._succeeded()

        rdb.record_heartbeat = record_heartbeat
        stale = self.wrap(rdb._get_stale_trial_ids, "optuna stale trials")

        def get_stale_trial_ids(study_id: int) -> list[int]:
            ids = stale(study_id)
            if self.recently_down(grace_period):
                # Cut off ourselves, we cannot tell a dead worker from one whose heartbeats
                # could not reach the database either; wait one grace period first.
                return []
            # A live trial of this process is never declared dead by this process.
            return [i for i in ids if i not in self.own_trials]

        rdb._get_stale_trial_ids = get_stale_trial_ids


class RetryingStore:
    """A lineage store whose calls go through the guard (duck-types ``LineageStore``)."""

    def __init__(self, store: Any, guard: DbGuard) -> None:
        self._store, self._guard = store, guard

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name.startswith("_") or not callable(attr):
            return attr
        if name == "start_model":
            return functools.partial(self._start_model, attr)
        return self._guard.wrap(attr, f"lineage {name}")

    def _start_model(self, start: Callable[..., int], study: str, trial_number: int,
                     *args: Any, **kwargs: Any) -> int:  # fmt: skip
        def already(error: Exception) -> int:
            # "trial N already has model M": our first attempt committed; the model is ours,
            # since a trial runs in one worker only.
            if isinstance(error, ValueError) and "already has model" in str(error):
                found = self._store.find_by_trial(study, trial_number)
                if found is not None:
                    return int(found.model_id)
            raise error

        return self._guard.call(
            start, study, trial_number, *args, what="lineage start_model",
            after_lost_ack=already, **kwargs,
        )  # fmt: skip

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> RetryingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RetryingLock:
    """The admission lock with a retried acquire. A release whose connection is already gone
    is fine: the server dropped the (session-level) lock with the session."""

    def __init__(self, lock: Any, guard: DbGuard) -> None:
        self._lock, self._guard = lock, guard

    @property
    def held(self) -> bool:
        return bool(self._lock.held)

    def acquire(self) -> None:
        self._guard.call(self._lock.acquire, what="admission lock")

    def release(self) -> None:
        self._quietly(self._lock.release)

    def close(self) -> None:
        self._quietly(self._lock.close)

    def _quietly(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:
            if not is_transient(e):
                raise
            self._guard.note_background(e, "admission lock release")


def _stderr(text: str) -> None:
    print(f"growsearch: {text}", file=sys.stderr, flush=True)
