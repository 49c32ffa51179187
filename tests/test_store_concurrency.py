"""Workers that start at the same moment: one study row, one schema, whatever the backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from growsearch.storage_url import make_engine
from growsearch.store import VERSION_TABLE, SQLLineageStore

WORKERS = 4

# Each worker imports everything, then waits at a file barrier so that all of them open the
# store and create the study within the same few milliseconds.
_WORKER = r"""
import sys, time
from pathlib import Path

from growsearch.store import SQLLineageStore

url, barrier, me, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
(barrier / f"ready-{me}").touch()
deadline = time.monotonic() + 60
while len(list(barrier.glob("ready-*"))) < n:
    if time.monotonic() > deadline:
        sys.exit("the other workers never arrived")
    time.sleep(0.001)
store = SQLLineageStore(url)
print(store.create_study("race", {"worker": int(me)}))
store.close()
"""


def _race(url: str, barrier: Path) -> list[int]:
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, str(barrier), str(k), str(WORKERS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(WORKERS)
    ]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids.append(int(out.strip()))
    return ids


def _count(url: str, table: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-database", "existing-tables"])
def test_concurrent_create_study_makes_one_row(
    storage_url: str, tmp_path: Path, fresh: bool
) -> None:
    if not fresh:
        SQLLineageStore(storage_url).close()
    ids = _race(storage_url, tmp_path / "barrier")
    assert len(set(ids)) == 1
    assert _count(storage_url, "gs_studies") == 1
    assert _count(storage_url, VERSION_TABLE) == 1
    store = SQLLineageStore(storage_url)
    try:
        record = store.get_study("race")
        assert record is not None and record.study_id == ids[0]
        assert record.config["worker"] in range(WORKERS)
    finally:
        store.close()
