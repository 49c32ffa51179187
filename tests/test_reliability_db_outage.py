"""The database goes away during a run: the worker retries with backoff and carries on, or, when
it stays away too long, exits with code 3 and the command that resumes; nothing is corrupted
either way. The PostgreSQL tests put a TCP proxy (a thread here) between the worker and the
server and cut it, which is what a server restart looks like to a client: every connection
drops and new ones fail until it is back. The shared server itself is never stopped."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from growsearch.cli import main
from growsearch.data import DeviceData
from growsearch.exceptions import StorageError
from growsearch.search._dbretry import (
    RETRY_ENV,
    DatabaseUnavailable,
    DbGuard,
    RetryingLock,
    RetryingStore,
    is_transient,
)
from growsearch.storage_url import redact
from growsearch.store import SQLLineageStore
from tests._searchkit import check_finished_study, tiny_study

SECRET = "s3cr3t-pw"


# ---- the guard on its own ---------------------------------------------------------------------
def _operational(
    text: str = "server closed the connection unexpectedly",
) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, Exception(text))


def _wrapped(error: Exception) -> StorageError:
    """What the lineage store raises: StorageError from the driver's error."""
    try:
        raise StorageError("database error on 'postgresql://u:***@h/db'") from error
    except StorageError as e:
        return e


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _guard(max_s: float = 30.0) -> tuple[DbGuard, _Clock, list[str]]:
    clock, lines = _Clock(), []
    guard = DbGuard(
        f"postgresql://u:{SECRET}@db.example/x",
        resume_hint="growsearch resume --storage postgresql://u:***@db.example/x --study s",
        max_s=max_s,
        log=lines.append,
        sleep=clock.sleep,
        clock=clock,
    )
    return guard, clock, lines


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_operational(), True),
        (_wrapped(_operational("could not connect to server: Connection refused")), True),
        (optuna.exceptions.StorageInternalError("commit failed"), False),
        (_wrapped(_operational("no such table: models")), False),
        (_operational('FATAL: password authentication failed for user "u"'), False),
        (sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (sa.exc.PendingRollbackError("Can't reconnect until the transaction is rolled back"), True),
        (ValueError("trial 3 already has model 4"), False),
        (DatabaseUnavailable("gave up"), False),
    ],
)
def test_which_errors_are_worth_waiting_for(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_retries_with_exponential_backoff_then_carries_on() -> None:
    guard, clock, lines = _guard()
    failures = [_wrapped(_operational(f"connection to server failed: {SECRET}"))] * 4
    calls = []

    def flaky() -> str:
        calls.append(clock.now)
        if failures:
            raise failures.pop()
        return "done"

    assert guard.call(flaky, what="lineage best") == "done"
    assert clock.slept == [0.5, 1.0, 2.0, 4.0]
    assert len(calls) == 5 and guard.retries == 4 and guard.outages == 1
    assert len(lines) == 5  # one line per retry, one when the database is back
    assert all(SECRET not in line for line in lines)
    assert lines[0].startswith("database unavailable (lineage best): connection to server")
    assert "retry 1 in 0.5s" in lines[0] and "retry 4 in 4.0s" in lines[3]
    assert lines[-1] == "database postgresql://u:***@db.example/x reachable again after 7.5s"
    assert guard.down_since is None and not guard.gave_up


def test_gives_up_after_the_budget_with_the_resume_command() -> None:
    guard, clock, _ = _guard(max_s=10.0)

    def down() -> None:
        raise _operational("Connection refused")

    with pytest.raises(DatabaseUnavailable) as info:
        guard.call(down)
    message = str(info.value)
    assert info.value.exit_code == 3
    assert sum(clock.slept) == pytest.approx(10.0)  # the last wait is cut to the budget
    assert "database unavailable for 10s" in message and "Connection refused" in message
    assert "growsearch resume --storage postgresql://u:***@db.example/x --study s" in message
    assert SECRET not in message
    # Given up: later calls fail at once instead of waiting again.
    slept = len(clock.slept)
    with pytest.raises(DatabaseUnavailable):
        guard.call(down)
    assert len(clock.slept) == slept


def test_errors_that_waiting_cannot_cure_are_not_retried() -> None:
    guard, clock, _ = _guard()

    def broken() -> None:
        raise _wrapped(_operational("no such table: models"))

    with pytest.raises(StorageError):
        guard.call(broken)
    assert clock.slept == []


def test_background_threads_never_wait() -> None:
    guard, clock, lines = _guard()
    raised = []

    def down() -> None:
        raise _operational()

    def in_thread() -> None:
        try:
            guard.call(down, what="heartbeat")
        except sa.exc.OperationalError as e:
            raised.append(e)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert raised and clock.slept == [] and guard.down_since is not None
    assert len(lines) == 1  # the outage is reported once


def test_a_start_model_whose_commit_was_acknowledged_too_late_is_not_repeated(
    tmp_path: Path,
) -> None:
    guard, _, _ = _guard()
    store = SQLLineageStore(f"sqlite:///{tmp_path / 'g.db'}")
    store.create_study("s", {})
    real = store.start_model
    attempts = []

    def commits_then_loses_the_answer(*args: Any, **kwargs: Any) -> int:
        model_id = real(*args, **kwargs)
        attempts.append(model_id)
        if len(attempts) == 1:
            raise _wrapped(_operational("server closed the connection unexpectedly"))
        return model_id  # pragma: no cover - the second attempt finds the first row

    store.start_model = commits_then_loses_the_answer  # type: ignore[method-assign]
    retrying: Any = RetryingStore(store, guard)
    spec = {"input_shape": [4], "layers": [{"type": "dense", "out": 2, "name": "d"}]}
    model_id = retrying.start_model("s", 0, None, "seed", [], spec, "h", 10, 10, 0)
    assert attempts == [model_id]
    assert [m.model_id for m in store.models("s")] == [model_id]  # one row, not two


def test_a_trial_state_committed_before_the_connection_dropped(tmp_path: Path) -> None:
    guard, _, _ = _guard()
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    real = storage.set_trial_state_values
    calls = []

    def commits_then_drops(trial_id: int, state: TrialState, values: Any = None) -> bool:
        calls.append(state)
        result = real(trial_id, state, values)
        if len(calls) == 1:
            raise optuna.exceptions.StorageInternalError("commit") from _operational()
        return result  # pragma: no cover - the retry meets a finished trial

    storage.set_trial_state_values = commits_then_drops  # type: ignore[method-assign]
    guard.protect_storage(storage, grace_period=60)
    assert storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5]) is True
    assert len(calls) == 2 and storage.get_trial(trial._trial_id).values == [0.5]


def test_a_lock_whose_connection_died_releases_quietly() -> None:
    guard, _, lines = _guard()

    class DeadLock:
        held = True

        def release(self) -> None:
            raise _operational("terminating connection due to administrator command")

        close = release

    lock = RetryingLock(DeadLock(), guard)
    lock.release()
    lock.close()
    assert len(lines) == 1 and "admission lock" in lines[0]


# ---- a real outage: PostgreSQL behind a proxy that is cut ------------------------------------
class _Proxy:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server until ``cut``: then every open
    connection drops and new ones are closed at once, until ``restore``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.closed = False
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:  # a connection made while ``cut`` ran must not survive it
                if not self.up:
                    client.close()
                    server.close()
                    continue
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self.up = False
            dropped, self._open = self._open, []
        for s in dropped:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


def _complete(url: str) -> int:
    """COMPLETE trials, read with plain SQL: ``optuna.load_study`` would create Optuna's tables
    in a database the worker is about to set up."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("trials"):
                return 0
            return int(conn.scalar(sa.text("SELECT count(*) FROM trials WHERE state = 'COMPLETE'")))
    finally:
        engine.dispose()


class _Trigger:
    """Runs ``then()`` once, inside a training epoch (so mid-trial, with the trial's heartbeat
    thread running), as soon as the study has ``complete`` COMPLETE trials. Polling from a
    thread instead would race with a run that finishes its tiny trials in a second."""

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self.armed: tuple[int, Callable[[], None]] | None = None
        self.fired = 0
        batches = DeviceData.train_batches
        trigger = self

        def train_batches(data: DeviceData, *a: Any, **k: Any) -> Iterator[Any]:
            trigger.check()
            yield from batches(data, *a, **k)

        monkeypatch.setattr(DeviceData, "train_batches", train_batches)

    def arm(self, complete: int, then: Callable[[], None]) -> None:
        self.armed = (complete, then)

    def check(self) -> None:
        if self.armed is not None and _complete(self.url) >= self.armed[0]:
            then, self.armed = self.armed[1], None
            self.fired += 1
            then()


@pytest.mark.postgres
def test_postgres_outage_mid_run(
    postgresql_url: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct = sa.make_url(postgresql_url)
    proxy = _Proxy((direct.host or "127.0.0.1", direct.port or 5432))
    via_proxy = direct.set(port=proxy.port, password=SECRET).render_as_string(hide_password=False)
    shown = redact(via_proxy)
    try:
        # Grace period 3 s: the 4 s outage outlasts it, and the worker still must not declare
        # its own live trial dead once the database is back.
        path, _ = tiny_study(
            tmp_path,
            via_proxy,
            n_trials=5,
            train={"epochs_per_trial": 3},
            workers={"heartbeat_interval": 1, "grace_period": 3},
        )

        def outage() -> None:
            proxy.cut()
            restore = threading.Timer(4.0, proxy.restore)
            restore.daemon = True
            restore.start()

        trigger = _Trigger(postgresql_url, monkeypatch)
        trigger.arm(2, outage)
        assert main(["run", str(path), "--quiet"]) == 0
        assert trigger.fired == 1
        out, err = capfd.readouterr()
        assert "database unavailable (" in err and "; retry 1 in 0.5s" in err
        assert "reachable again after" in err
        assert SECRET not in out + err
        found = check_finished_study(postgresql_url, "tiny", 5)
        # The outage failed nothing (a trial may still be pruned as a duplicate, as any time).
        failed = [t.user_attrs for t in found["trials"] if t.state != TrialState.COMPLETE]
        assert all("prune_reason" in attrs for attrs in failed), (failed, err)

        # Now it stays away: with a 2 s budget the worker gives up, exit code 3.
        monkeypatch.setenv(RETRY_ENV, "2")
        trigger.arm(6, proxy.cut)
        assert main(["run", str(path), "--quiet", "--n-trials", "8"]) == 3
        assert trigger.fired == 2
        out, err = capfd.readouterr()
        # (Counted from the first failure any thread saw: a heartbeat may have been first.)
        assert re.search(r"growsearch: error: database unavailable for \d+s \(", err), err
        assert f"resume with:\n  growsearch resume --storage {shown} --study tiny" in err
        assert "Traceback" not in err and SECRET not in out + err, err
        before = _complete(postgresql_url)
        assert before >= 6
        with SQLLineageStore(postgresql_url, create=False) as store:
            assert store.missing_checkpoints("tiny", verify_sha256=True) == []

        # Back again: resume finishes the study; the trial cut off is cleaned up.
        proxy.restore()
        monkeypatch.delenv(RETRY_ENV)
        time.sleep(3)  # its heartbeat expires
        resume = ["resume", "--storage", via_proxy, "--study", "tiny", "--n-trials", "8"]
        assert main([*resume, "--quiet"]) == 0
        check_finished_study(postgresql_url, "tiny", 8)
    finally:
        proxy.close()
