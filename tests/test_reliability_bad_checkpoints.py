"""Damaged checkpoints: missing, truncated, 0 bytes, tampered with, weights that do not fit their
spec, a pickle renamed to .safetensors, a valid file of another architecture. Through the CLI
(export, evaluate) each is one message naming the file (and the recorded sha256), exit code 2,
nothing written; as the parent of a running study the trial that needs it fails with the path
and the expected hash, the model is never chosen again, and the study goes on."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import safetensors.torch
import sqlalchemy as sa
import torch
from optuna.trial import TrialState

from growsearch.checkpoints import HEADER_KEY, file_sha256, load_checkpoint, save_checkpoint
from growsearch.cli import main
from growsearch.spec import Spec
from growsearch.store import ModelRecord, SQLLineageStore
from tests._searchkit import tiny_study


class _Payload:
    """Unpickling this creates ``marker``: proof that something executed pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _set_sha(url: str, model_id: int, sha: str) -> None:
    """Make the lineage record this hash, as if the damaged file were what was written."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE gs_models SET sha256 = :s WHERE id = :i"), {"s": sha, "i": model_id}
        )
    engine.dispose()


def _missing(path: Path, url: str, m: ModelRecord) -> str:
    path.unlink()
    return "does not exist"


def _truncated(path: Path, url: str, m: ModelRecord) -> str:
    path.write_bytes(path.read_bytes()[:-100])
    return "changed since it was written"


def _empty(path: Path, url: str, m: ModelRecord) -> str:
    path.write_bytes(b"")
    return "it is empty (0 bytes"


def _tampered(path: Path, url: str, m: ModelRecord) -> str:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return "changed since it was written"


def _pickle(path: Path, url: str, m: ModelRecord) -> str:
    path.write_bytes(pickle.dumps({"state_dict": _Payload(path.parent / "pwned.marker")}))
    return "changed since it was written"


def _wrong_shapes(path: Path, url: str, m: ModelRecord) -> str:
    """Our header and spec, weights of other shapes; the recorded hash is the file's, so it is
    the shape check that catches it."""
    ckpt = load_checkpoint(path)
    tensors = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in ckpt.state_dict.items()}
    header = {"format": "growsearch.checkpoint", "format_version": 1,
              "spec": ckpt.spec.to_dict(), "metadata": {}, "optimizer": False}  # fmt: skip
    path.write_bytes(safetensors.torch.save(tensors, metadata={HEADER_KEY: json.dumps(header)}))
    _set_sha(url, m.model_id, file_sha256(path))
    return "the weights do not fit the spec (wrong shape"


def _other_architecture(path: Path, url: str, m: ModelRecord) -> str:
    """A whole, valid checkpoint, of another architecture than the lineage records."""
    spec = Spec.from_dict({"input_shape": [1, 8, 8], "layers": [
        {"type": "flatten"}, {"type": "dense", "out": 10}]})  # fmt: skip
    from growsearch.builder import build_model

    save_checkpoint(path, spec, build_model(spec).state_dict())
    _set_sha(url, m.model_id, file_sha256(path))
    return "holds architecture"


DAMAGE: dict[str, Callable[[Path, str, ModelRecord], str]] = {
    "missing": _missing,
    "truncated": _truncated,
    "empty": _empty,
    "tampered": _tampered,
    "pickle": _pickle,
    "wrong_shapes": _wrong_shapes,
    "other_architecture": _other_architecture,
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("damaged")
    url = f"sqlite:///{folder / 'g.db'}"
    path, _ = tiny_study(folder, url, n_trials=2)
    assert main(["run", str(path), "--quiet"]) == 0
    yield path, url


@pytest.mark.parametrize("kind", [k for k in DAMAGE if k != "other_architecture"])
@pytest.mark.parametrize("command", ["export", "evaluate"])
def test_cli_refuses_a_damaged_checkpoint(
    study: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    command: str,
) -> None:
    _, url = study
    with SQLLineageStore(url, create=False) as store:
        best = store.best("tiny")
    assert best is not None and best.checkpoint and best.sha256
    path = Path(best.checkpoint)
    original = path.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    try:
        needle = DAMAGE[kind](path, url, best)
        args = [command, str(best.model_id), "--storage", url]
        args += ["--out", str(out / "m")] if command == "export" else ["--split", "val"]
        capsys.readouterr()
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("growsearch: error: checkpoint ") and "Traceback" not in err
        assert str(path) in err and needle in err
        if kind not in ("wrong_shapes",):
            assert best.sha256 in err  # the hash the lineage recorded
        assert os.listdir(out) == []  # nothing written
        assert not (path.parent / "pwned.marker").exists()  # nothing unpickled
    finally:
        path.write_bytes(original)
        _set_sha(url, best.model_id, best.sha256)


def test_damaged_parents_fail_their_children_and_the_study_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    path, _ = tiny_study(
        tmp_path,
        url,
        n_trials=len(DAMAGE),
        workers={"max_consecutive_failures": 3 * len(DAMAGE)},
    )
    assert main(["run", str(path), "--quiet"]) == 0
    with SQLLineageStore(url, create=False) as store:
        finished = store.models("tiny", status="finished")
    assert len(finished) == len(DAMAGE)
    expected = {}
    for m, (kind, damage) in zip(finished, DAMAGE.items(), strict=True):
        assert m.checkpoint is not None
        expected[m.model_id] = (kind, damage(Path(m.checkpoint), url, m))
    with SQLLineageStore(url, create=False) as store:
        recorded = {i: store.get_model(i) for i in expected}  # the hash as recorded now
    first_run = max(m.trial_number for m in finished) + 1

    # Each damaged model is found when it is next chosen as a parent; once all are gone, a new
    # seed is trained and the study reaches its count.
    more = 2
    assert main(["run", str(path), "--quiet", "--n-trials", str(len(DAMAGE) + more)]) == 0
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == len(DAMAGE)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == len(DAMAGE) + more
    with SQLLineageStore(url, create=False) as store:
        for model_id, (kind, needle) in expected.items():
            before = recorded[model_id]
            assert before is not None and before.checkpoint and before.sha256
            lost = store.get_model(model_id)
            assert lost is not None and lost.status == "lost", kind
            assert needle in (lost.reason or ""), (kind, lost.reason)
            reason = next(
                t.user_attrs["fail_reason"]
                for t in failed
                if f"parent model {model_id} (" in t.user_attrs["fail_reason"]
            )
            assert "lost its checkpoint and is no longer a parent" in reason
            assert before.checkpoint in reason and before.sha256 in reason, reason
            # Never chosen again: no child of it finished after the damage.
            later = [c for c in store.children(model_id) if c.trial_number >= first_run]
            assert all(c.status != "finished" for c in later)
        finished = store.models("tiny", status="finished")
    assert len(finished) == more and finished[0].parent_id is None  # the new seed
    assert not list(tmp_path.rglob("pwned.marker"))
