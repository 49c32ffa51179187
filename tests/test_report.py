"""``growsearch report``: the history behind the figures, the tree layout, the PNGs and the page,
and the errors that leave nothing behind."""

from __future__ import annotations

import io
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from growsearch.cli import main
from growsearch.report import (
    FIGURES,
    History,
    build_report,
    collect,
    op_label,
    tree_layout,
)
from growsearch.report._figures import lineage_png
from growsearch.store import ModelRecord, SQLLineageStore

STUDY = "grow<&>"  # HTML-special characters: the page must escape them
SPEC = {
    "input_shape": [4],
    "layers": [
        {"type": "dense", "name": "dense0", "out": 8, "activation": "relu"},
        {"type": "dense", "name": "dense1", "out": 3},
    ],
}


def _widen(width: int) -> list[dict[str, Any]]:
    return [{"name": "widen", "target": "dense0", "args": {"width": width}}]


def _deepen() -> list[dict[str, Any]]:
    return [{"name": "deepen", "target": "dense0", "args": {}}]


@pytest.fixture
def lineage(storage_url: str) -> tuple[str, dict[str, int]]:
    """A small study written through the store API (on each backend), in this order of events:

    trial 0 seed (1.0 s, 0.50) -> trial 1 widen (2.0 s, 0.60) -> trial 2 deepen of the seed,
    pruned after two epochs of 0.25 s -> trial 3 deepen of trial 1 (3.0 s, 0.70) -> trial 4
    widen of trial 1, failed -> trial 5 widen of trial 3 (0.5 s, 0.65) -> trial 6 running.
    """
    url = storage_url  # SQLite, and PostgreSQL when the server is up (conftest)
    ids: dict[str, int] = {}
    with SQLLineageStore(url) as s:
        s.create_study(STUDY, {"data": {"dataset": "digits"}, "n_trials": 7})

        def start(trial: int, parent: str | None, args: list[dict[str, Any]], gen: int) -> int:
            op = "seed" if parent is None else args[0]["name"]
            mid = s.start_model(
                STUDY, trial, ids.get(parent or ""), op, args, SPEC, f"h{trial}", 100 + trial,
                1000, gen,
            )  # fmt: skip
            ids[f"t{trial}"] = mid
            return mid

        def finish(mid: int, acc: float, seconds: float) -> None:
            s.finish_model(mid, val_accuracy=acc, checkpoint=f"/ckpt/{mid}.safetensors",
                           sha256="0" * 64, preservation_error=None if mid == ids["t0"] else 1e-7,
                           train_seconds=seconds)  # fmt: skip

        finish(start(0, None, [], 0), 0.50, 1.0)
        finish(start(1, "t0", _widen(16), 1), 0.60, 2.0)
        mid = start(2, "t0", _deepen(), 1)
        s.add_evaluation(mid, 1, 0.40, seconds=0.25)
        s.add_evaluation(mid, 2, 0.45, seconds=0.25)
        s.fail_model(mid, "pruned", "pruned by MedianPruner at epoch 2")
        finish(start(3, "t1", _deepen(), 2), 0.70, 3.0)
        s.fail_model(start(4, "t1", _widen(24), 2), "failed", "TrainingDivergedError: boom")
        finish(start(5, "t3", _widen(32), 3), 0.65, 0.5)
        start(6, "t3", _deepen(), 3)
    return url, ids


def test_history_series(lineage: tuple[str, dict[str, int]]) -> None:
    url, ids = lineage
    with SQLLineageStore(url, create=False) as store:
        h = collect(store, STUDY)
    assert [m.trial_number for m in h.models] == list(range(7))
    assert h.seconds == {
        ids["t0"]: 1.0, ids["t1"]: 2.0, ids["t2"]: 0.5, ids["t3"]: 3.0, ids["t4"]: 0.0,
        ids["t5"]: 0.5, ids["t6"]: 0.0,
    }  # fmt: skip
    assert h.best is not None and h.best.model_id == ids["t3"]
    assert [m.trial_number for m in h.ancestry(ids["t5"])] == [0, 1, 3, 5]
    assert h.status_counts() == {"finished": 4, "pruned": 1, "failed": 1, "running": 1}
    points = h.progress()  # in the order the models ended; the running one has not
    assert [p.model.trial_number for p in points] == [0, 1, 2, 3, 4, 5]
    assert [p.cumulative_seconds for p in points] == [1.0, 3.0, 3.5, 6.5, 6.5, 7.0]
    assert [p.best_so_far for p in points] == [0.5, 0.6, 0.6, 0.7, 0.7, 0.7]
    assert h.by_generation() == {0: [0.5], 1: [0.6], 2: [0.7], 3: [0.65]}
    assert h.total_seconds == 7.0


def test_op_labels(lineage: tuple[str, dict[str, int]]) -> None:
    url, _ = lineage
    with SQLLineageStore(url, create=False) as store:
        models = store.models(STUDY)
    assert [op_label(m) for m in models[:3]] == ["seed", "widen dense0 width=16", "deepen dense0"]
    long = op_label(models[1], limit=10)
    assert long == "widen den…" and len(long) == 10


# ---- tree layout ----------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _record(mid: int, parent: int | None, gen: int, acc: float | None = 0.5, **kw: Any):
    fields: dict[str, Any] = {
        "model_id": mid, "study": "s", "trial_number": mid, "parent_id": parent,
        "operation": "seed" if parent is None else "widen",
        "params": [] if parent is None else _widen(8 + mid), "val_accuracy": acc,
        "preservation_error": None, "checkpoint": None, "sha256": None, "spec": SPEC,
        "spec_hash": "h", "num_params": 10 + mid, "flops": 1, "generation": gen,
        "status": "finished", "reason": None, "objectives": None, "info": {},
        "created_at": T0 + timedelta(seconds=mid), "finished_at": T0 + timedelta(seconds=mid + 1),
        "train_seconds": 1.0,
    }  # fmt: skip
    fields.update(kw)
    return ModelRecord(**fields)


def test_tree_layout_puts_parents_between_their_children() -> None:
    #        1
    #      /   \
    #     2     3
    #    / \     \
    #   4   5     6
    models = [_record(1, None, 0), _record(2, 1, 1), _record(3, 1, 1), _record(4, 2, 2),
              _record(5, 2, 2), _record(6, 3, 2)]  # fmt: skip
    pos = tree_layout(models)
    assert pos == {
        4: (2.0, 0.0), 5: (2.0, 1.0), 2: (1.0, 0.5), 6: (2.0, 2.0), 3: (1.0, 2.0),
        1: (0.0, 1.25),
    }  # fmt: skip


def test_tree_layout_of_a_deep_lineage_and_an_orphan() -> None:
    # Deeper than Python's recursion limit; model 9999's parent is not in the list.
    chain = [_record(1, None, 0)] + [_record(i, i - 1, i - 1) for i in range(2, 3002)]
    pos = tree_layout([*chain, _record(9999, 5000, 7)])
    assert pos[3001] == (3000.0, 0.0) and pos[1] == (0.0, 0.0)
    assert pos[9999] == (7.0, 1.0)  # a tree of its own, below the first


# ---- figures and page -----------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_large_lineage_stays_a_readable_size() -> None:
    # 300 models, 30 generations: labels only on the best path, the image within bounds.
    models = [_record(1, None, 0, 0.3)]
    for i in range(2, 301):
        parent = models[(i * 7919) % len(models)]
        models.append(_record(i, parent.model_id, parent.generation + 1, 0.3 + 0.002 * i))
    h = History("big", {}, models, {m.model_id: 1.0 for m in models})
    w, ht = _png_size(lineage_png(h, dpi=50))
    assert 500 < w <= 40 * 50 and 500 < ht <= 60 * 50


def test_report_command_writes_page_and_pngs(
    lineage: tuple[str, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, ids = lineage
    out = tmp_path / "report"
    assert main(["report", "--storage", url, "--study", STUDY, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"report of study '{STUDY}' (7 models; best model {ids['t3']} (trial 3)" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.html", *FIGURES])
    for name in FIGURES:
        data = (out / name).read_bytes()
        w, h = _png_size(data)
        assert 600 <= w <= 4000 and 200 <= h <= 4000, (name, w, h)
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape[:2] == (h, w) and pixels.std() > 0.05  # not a blank image
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<title>growsearch report: grow&lt;&amp;&gt;</title>" in page and STUDY not in page
    for name in FIGURES:
        assert f'<img src="{name}"' in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere
    assert "7 (1 failed, 4 finished, 1 pruned, 1 running)" in page
    assert "validation accuracy 0.7000" in page
    assert "TrainingDivergedError: boom" in page
    # The ancestry table (seed, trial 1, trial 3) and the table of all 7 models.
    assert page.count("<tr") == (1 + 3) + (1 + 7)
    assert page.count('<tr class="best">') == 2


def test_report_embed_is_one_file(
    lineage: tuple[str, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = lineage
    out = tmp_path / "one"
    assert main(["report", "--storage", url, "--study", STUDY, "--out", str(out), "--embed"]) == 0
    assert [p.name for p in out.iterdir()] == ["index.html"]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count('<img src="data:image/png;base64,iVBORw0KGgo') == 3


def test_report_of_a_study_without_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with SQLLineageStore(url) as s:
        s.create_study("empty", {})
        files = build_report(collect(s, "empty"))
    assert sorted(files) == sorted(["index.html", *FIGURES])
    for name in FIGURES:
        assert _png_size(files[name])[0] > 300
    page = files["index.html"].decode("utf-8")
    assert "<dd>none yet; study n_trials: ?</dd>" in page and "<h2>All models (0)</h2>" in page
    assert "<dt>best model</dt>" not in page and "Ancestry of the best model" not in page


def test_report_errors_write_nothing(
    lineage: tuple[str, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = lineage
    out = tmp_path / "out"

    def report(*args: str) -> tuple[int, str]:
        rc = main(["report", *args])
        return rc, capsys.readouterr().err

    rc, err = report("--storage", url, "--study", "nope", "--out", str(out))
    assert rc == 2 and "no study named 'nope'" in err and STUDY in err
    missing = tmp_path / "missing.db"
    rc, err = report("--storage", f"sqlite:///{missing}", "--study", STUDY, "--out", str(out))
    assert rc == 2 and "missing.db" in err
    assert not missing.exists() and not out.exists()
    a_file = tmp_path / "taken.txt"
    a_file.write_text("keep me")
    rc, err = report("--storage", url, "--study", STUDY, "--out", str(a_file))
    assert rc == 2 and "is a file" in err and a_file.read_text() == "keep me"
    rc, err = report("--storage", url, "--study", STUDY, "--out", str(a_file / "sub"))
    assert rc == 2 and "is a file, not a folder" in err
    rc, err = report("--storage", url, "--study", STUDY, "--out", str(out), "--dpi", "5")
    assert rc == 2 and "--dpi" in err
    assert not out.exists()
