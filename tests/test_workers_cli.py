"""Worker commands without PostgreSQL: SQLite refuses several workers, and `growsearch worker
--wait` waits for a study that another machine is about to create."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from growsearch.cli import main
from growsearch.cli.resume import _wait_for_study
from growsearch.store import SQLLineageStore
from tests._searchkit import tiny_study


def test_sqlite_refuses_several_workers_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "g.db"
    path, raw = tiny_study(tmp_path, f"sqlite:///{db}")
    assert main(["run", str(path), "--workers", "3"]) == 2
    err = capsys.readouterr().err
    assert "--workers 3" in err and "SQLite" in err and "PostgreSQL" in err
    assert not db.exists() and not Path(raw["checkpoint_dir"]).exists()


def test_worker_waits_for_the_study_then_gives_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "none.db"
    start = time.monotonic()
    code = main(["worker", "--storage", f"sqlite:///{db}", "--study", "x", "--wait", "0.6"])
    assert code == 2 and time.monotonic() - start >= 0.5
    assert "no database at" in capsys.readouterr().err
    assert not db.exists()  # waiting never creates a SQLite file


def test_wait_returns_as_soon_as_the_study_exists(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"

    def create() -> None:
        time.sleep(0.3)
        with SQLLineageStore(url) as store:
            store.create_study("later", {})

    thread = threading.Thread(target=create)
    thread.start()
    start = time.monotonic()
    _wait_for_study(url, "later", 30.0)
    waited = time.monotonic() - start
    thread.join()
    assert 0.25 <= waited < 10
