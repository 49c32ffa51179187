"""What optuna-dashboard shows for a growsearch study, read through its HTTP API on localhost:
objective names, user attributes, per-trial notes, the lineage figure and checkpoint artifacts."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from optuna.artifacts import FileSystemArtifactStore

from growsearch.cli import main
from growsearch.store import SQLLineageStore
from tests._searchkit import tiny_study


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{folder / 'g.db'}"
    path, raw = tiny_study(folder, url, n_trials=3)
    assert main(["run", str(path), "--quiet"]) == 0
    return url, Path(raw["checkpoint_dir"])


@pytest.fixture(scope="module")
def server(ran: tuple[str, Path]) -> Iterator[str]:
    """optuna-dashboard's own WSGI app, served on a free port of 127.0.0.1 in a thread."""
    from optuna_dashboard import wsgi

    url, ckpt = ran
    app = wsgi(url, artifact_store=FileSystemArtifactStore(str(ckpt / "artifacts")))
    httpd: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=10)


def _get(base: str, path: str) -> bytes:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        assert response.status == 200
        return response.read()


def _study(base: str) -> dict[str, Any]:
    studies = json.loads(_get(base, "/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in studies] == ["tiny"]
    return json.loads(_get(base, f"/api/studies/{studies[0]['study_id']}"))


def test_trials_show_lineage_attributes_and_objective_names(server: str, ran: tuple) -> None:
    detail = _study(server)
    assert detail["objective_names"] == ["val_accuracy"]
    trials = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(trials) == 3
    with SQLLineageStore(ran[0], create=False) as store:
        models = {m.trial_number: m for m in store.models("tiny")}
    for t in trials:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        m = models[t["number"]]
        # The dashboard shows numbers as str(), other non-strings as JSON text.
        assert attrs["model_id"] == str(m.model_id)
        assert attrs["params"] == str(m.num_params) and attrs["flops"] == str(m.flops)
        assert attrs["operation"] == m.operation
        assert attrs["parent_model_id"] == ("null" if m.parent_id is None else str(m.parent_id))
        assert json.loads(attrs["operation_args"]) == m.params
        assert attrs["checkpoint"] == m.checkpoint
        assert json.loads(attrs["timings"])["training"] > 0
        if m.parent_id is not None:
            assert float(attrs["preservation_error"]) == pytest.approx(m.preservation_error)


def test_each_trial_has_a_markdown_note(server: str) -> None:
    trials = [t for t in _study(server)["trials"] if t["state"] == "Complete"]
    for t in trials:
        body = t["note"]["body"]
        assert t["note"]["version"] == 1
        assert body.startswith("### ")
        assert "**Validation accuracy**" in body and "**Parameters**" in body
        if t["number"] == 0:
            assert "**Seed** model trained from scratch." in body
        else:
            assert "**Parent**: trial" in body and "**Mutation**:" in body
            assert "```diff" in body  # the parent -> child architecture diff


def test_the_lineage_figure_is_a_plotly_graph_object(server: str, ran: tuple) -> None:
    graphs = _study(server)["plotly_graph_objects"]
    assert [g["id"] for g in graphs] == ["lineage"]
    figure = json.loads(graphs[0]["graph_object"])
    edges, nodes = figure["data"]
    with SQLLineageStore(ran[0], create=False) as store:
        finished = store.models("tiny", status="finished")
    assert len(nodes["x"]) == len(finished)  # one marker per finished model
    assert sorted(nodes["marker"]["color"]) == sorted(m.val_accuracy for m in finished)
    children = [m for m in finished if m.parent_id is not None]
    assert len(edges["x"]) == 3 * len(children)  # x0, x1, None per parent -> child edge
    assert "lineage" in figure["layout"]["title"]["text"]


def test_checkpoints_are_downloadable_artifacts(server: str, ran: tuple) -> None:
    detail = _study(server)
    with SQLLineageStore(ran[0], create=False) as store:
        models = {m.trial_number: m for m in store.models("tiny")}
    for t in (t for t in detail["trials"] if t["state"] == "Complete"):
        (artifact,) = t["artifacts"]
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert artifact["artifact_id"] == attrs["checkpoint_artifact"]
        assert artifact["filename"] == Path(models[t["number"]].checkpoint).name
        body = _get(server, f"/artifacts/{t['study_id']}/{t['trial_id']}/{artifact['artifact_id']}")
        assert hashlib.sha256(body).hexdigest() == models[t["number"]].sha256


def test_dashboard_command_serves_the_storage_and_artifact_folder(
    ran: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna_dashboard

    url, ckpt = ran
    seen: dict[str, Any] = {}

    def fake_run_server(storage: str, **kwargs: Any) -> None:
        seen.update(kwargs, storage=storage)

    monkeypatch.setattr(optuna_dashboard, "run_server", fake_run_server)
    assert main(["dashboard", "--storage", url, "--port", "8123"]) == 0
    assert seen["storage"] == url and seen["port"] == 8123 and seen["host"] == "127.0.0.1"
    store = seen["artifact_store"]
    assert isinstance(store, FileSystemArtifactStore)
    assert Path(store._base_path).resolve() == (ckpt / "artifacts").resolve()


def test_dashboard_started_before_any_checkpoint_still_serves_artifacts_later(
    ran: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna_dashboard

    seen: dict[str, Any] = {}
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kw: seen.update(kw))
    later = tmp_path / "not-yet"
    assert main(["dashboard", "--storage", ran[0], "--checkpoint-dir", str(later)]) == 0
    assert Path(seen["artifact_store"]._base_path) == later / "artifacts"
    assert not later.exists()  # the dashboard only reads: it creates nothing


def test_dashboard_command_takes_storage_and_checkpoints_from_the_study_yaml(
    ran: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna_dashboard

    url, ckpt = ran
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        optuna_dashboard, "run_server", lambda storage, **kw: seen.update(kw, storage=storage)
    )
    assert main(["dashboard", str(ckpt.parent / "tiny.yaml")]) == 0
    assert seen["storage"] == url and seen["host"] == "127.0.0.1"
    assert Path(seen["artifact_store"]._base_path).resolve() == (ckpt / "artifacts").resolve()
