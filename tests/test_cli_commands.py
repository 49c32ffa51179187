"""lineage / best / export / resume / db on a small real study, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

from growsearch.builder import build_model
from growsearch.checkpoints import load_checkpoint, load_model
from growsearch.cli import main
from growsearch.spec import Spec
from growsearch.store import SQLLineageStore

RECORD_FIELDS = {
    "model_id",
    "parent_id",
    "trial_number",
    "operation",
    "params",
    "val_accuracy",
    "preservation_error",
    "checkpoint",
    "sha256",
    "spec",
}


def tiny_study(tmp_path: Path, url: str, n_trials: int = 3) -> Path:
    raw = {
        "name": "tiny",
        "storage": url,
        "n_trials": n_trials,
        "seed": 1,
        "data": {"dataset": "digits", "batch_size": 64},
        "model": {
            "input_shape": [1, 8, 8],
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "out": 16, "activation": "relu"},
                {"type": "dense", "out": 10},
            ],
        },
        "train": {"epochs_per_trial": 2, "lr": 0.1},
        "search": {"operations": ["widen", "deepen"], "pruner": "none"},
        "checkpoint_dir": str(tmp_path / "ckpt"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def ran(tmp_path: Path, storage_url: str) -> str:
    assert main(["run", str(tiny_study(tmp_path, storage_url)), "--quiet"]) == 0
    return storage_url


def _out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().out


def test_lineage_formats(ran: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["lineage", "--storage", ran, "--study", "tiny"]
    records = json.loads(_out(capsys, [*base, "--format", "json"]))
    assert len(records) == 3
    assert all(set(r) >= RECORD_FIELDS for r in records)
    seed = [r for r in records if r["parent_id"] is None]
    assert len(seed) == 1 and seed[0]["operation"] == "seed"
    assert seed[0]["preservation_error"] is None
    ids = {r["model_id"] for r in records}
    for r in records:
        assert Spec.from_dict(r["spec"]).hash == r["spec_hash"]
        if r["parent_id"] is not None:
            assert r["parent_id"] in ids
            assert r["params"][0]["name"] == r["operation"]
            assert 0 <= r["preservation_error"] < 1e-4
            # The gate's tolerance for this child is recorded next to its error.
            assert r["preservation_error"] <= r["info"]["preservation_tolerance"]

    rows = list(csv.DictReader(io.StringIO(_out(capsys, [*base, "--format", "csv"]))))
    assert [int(r["model_id"]) for r in rows] == [r["model_id"] for r in records]
    assert set(rows[0]) >= RECORD_FIELDS
    assert json.loads(rows[0]["spec"]) == records[0]["spec"]

    table = _out(capsys, [*base, "--format", "table"]).splitlines()
    assert table[0].split()[:3] == ["model", "parent", "trial"]
    assert len(table) == 4

    dot = _out(capsys, [*base, "--format", "dot"])
    assert dot.startswith('digraph "tiny"')
    assert dot.count("->") == sum(r["parent_id"] is not None for r in records)


def test_best_shows_the_best_and_its_ancestry(ran: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(
        _out(capsys, ["best", "--storage", ran, "--study", "tiny", "--format", "json"])
    )
    with SQLLineageStore(ran, create=False) as store:
        finished = store.models("tiny", status="finished")
    assert data["best"]["val_accuracy"] == max(m.val_accuracy for m in finished)
    chain = data["ancestry"]
    assert chain[0]["parent_id"] is None and chain[-1]["model_id"] == data["best"]["model_id"]
    for parent, child in itertools.pairwise(chain):
        assert child["parent_id"] == parent["model_id"]
    text = _out(capsys, ["best", "--storage", ran, "--study", "tiny"])
    assert f"best model {data['best']['model_id']}" in text


def test_export_writes_weights_and_spec_that_reproduce_the_model(
    ran: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SQLLineageStore(ran, create=False) as store:
        best = store.best("tiny")
    assert best is not None
    out = tmp_path / "export" / "model"
    out.parent.mkdir()
    printed = json.loads(
        _out(
            capsys,
            [
                "export",
                str(best.model_id),
                "--storage",
                ran,
                "--out",
                str(out),
                "--torch-export",
            ],
        )
    )
    assert len(printed["files"]) == 3
    spec = Spec.from_json((out.with_suffix(".json")).read_text())
    assert spec.hash == best.spec_hash
    ckpt = load_checkpoint(out.with_suffix(".safetensors"))
    model = build_model(spec)
    model.load_state_dict(ckpt.state_dict)
    original = load_checkpoint(best.checkpoint, expected_sha256=best.sha256)
    ref = build_model(original.spec)
    ref.load_state_dict(original.state_dict)
    x = torch.rand(5, *spec.input_shape)
    model.eval()
    ref.eval()
    program = torch.export.load(str(out.with_suffix(".pt2")))
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
        assert torch.allclose(program.module()(x), ref(x), atol=1e-6)


def test_export_of_a_tampered_checkpoint_fails_clearly(
    ran: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SQLLineageStore(ran, create=False) as store:
        best = store.best("tiny")
    assert best is not None
    path = Path(best.checkpoint)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()
    code = main(["export", str(best.model_id), "--storage", ran, "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2
    assert str(path) in err and best.sha256 in err
    assert not (tmp_path / "m.safetensors").exists()


def test_resume_from_the_database_alone(
    ran: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tiny.yaml").unlink()  # the YAML is gone: the config snapshot is in the database
    assert main(["resume", "--storage", ran, "--study", "tiny", "--n-trials", "5", "--quiet"]) == 0
    with SQLLineageStore(ran, create=False) as store:
        finished = store.models("tiny", status="finished")
    assert len(finished) == 5
    assert sum(m.parent_id is None for m in finished) == 1
    capsys.readouterr()
    assert main(["resume", "--storage", ran, "--study", "nope"]) == 2
    assert "studies there: tiny" in capsys.readouterr().err


def test_db_current_and_upgrade(ran: str, capsys: pytest.CaptureFixture[str]) -> None:
    from growsearch.store import head_revision

    text = _out(capsys, ["db", "current", "--storage", ran])
    assert f"lineage schema {head_revision()}" in text
    assert "***" in text or "@" not in text or ":" not in ran.split("@")[0].split("//")[1]
    text = _out(capsys, ["db", "upgrade", "--storage", ran])
    assert text.endswith(f": lineage schema {head_revision()} is up to date; nothing to do\n")


def test_db_upgrade_adds_the_lineage_tables_to_an_optuna_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from growsearch.store import current_revision, head_revision

    url = f"sqlite:///{tmp_path / 'optuna-only.db'}"
    optuna.create_study(storage=url, study_name="plain")
    assert current_revision(url) is None
    text = _out(capsys, ["db", "upgrade", "--storage", url])
    assert text == f"{url}: lineage schema None -> {head_revision()}\n"
    assert current_revision(url) == head_revision()


def test_export_onnx_where_installed_computes_the_same_function(
    ran: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    with SQLLineageStore(ran, create=False) as store:
        best = store.best("tiny")
    assert best is not None
    out = tmp_path / "m"
    argv = ["export", str(best.model_id), "--storage", ran, "--study", "tiny", "--out", str(out)]
    printed = json.loads(_out(capsys, [*argv, "--onnx"]))
    assert str(out.with_suffix(".onnx")) in printed["files"]
    spec, model = load_model(best.checkpoint, expected_sha256=best.sha256)
    model.eval()
    x = torch.rand(3, *spec.input_shape)  # batch 3: the exported batch axis is dynamic
    (logits,) = ReferenceEvaluator(str(out.with_suffix(".onnx"))).run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert np.allclose(logits, model(x).numpy(), atol=1e-5)


def test_export_onnx_without_the_packages_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    out = tmp_path / "m"
    code = main(["export", "1", "--storage", f"sqlite:///{tmp_path / 'g.db'}", "--out", str(out),
                 "--onnx"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--onnx needs onnx" in err and "growsearch[onnx]" in err
    assert list(tmp_path.iterdir()) == []  # checked before anything is opened or written


def test_best_lists_the_pareto_front_of_a_multi_objective_study(
    storage_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`growsearch best` on both backends for a multi-objective study (accuracy vs params)."""
    spec = {"input_shape": [4], "layers": [{"type": "dense", "out": 3, "name": "dense0"}]}
    points = [(0.5, 30), (0.7, 40), (0.6, 50), (0.7, 35), (0.9, 90)]  # 0.7/40, 0.6/50 dominated
    with SQLLineageStore(storage_url) as store:
        store.create_study("mo", {"search": {"objectives": ["val_accuracy", "params"]}})
        ids = []
        for trial, (acc, params) in enumerate(points):
            parent = ids[0] if ids else None
            mid = store.start_model(
                "mo", trial, parent, "widen" if parent else "seed", [{}] if parent else [],
                spec, f"h{trial}", params, 2 * params, 1 if parent else 0,
            )  # fmt: skip
            store.finish_model(mid, val_accuracy=acc, objectives=[acc, float(params)])
            ids.append(mid)
        store.fail_model(
            store.start_model("mo", 9, ids[0], "widen", [{}], spec, "h9", 1, 2, 1), reason="nan"
        )
    data = json.loads(
        _out(capsys, ["best", "--storage", storage_url, "--study", "mo", "--format", "json"])
    )
    assert data["objectives"] == ["val_accuracy", "params"]
    front = [(r["model_id"], *r["objectives"]) for r in data["pareto_front"]]
    assert front == [(ids[4], 0.9, 90.0), (ids[3], 0.7, 35.0), (ids[0], 0.5, 30.0)]
    text = _out(capsys, ["best", "--storage", storage_url, "--study", "mo"])
    assert "Pareto front of 'mo' (val_accuracy vs params): 3 model(s)" in text
