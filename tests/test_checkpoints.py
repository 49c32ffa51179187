"""Checkpoints: exact round trips, atomic writes, and a clear error for every kind of bad file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
import safetensors.torch
import torch

from growsearch.builder import build_model
from growsearch.checkpoints import (
    FORMAT,
    HEADER_KEY,
    AtomicFileSystemArtifactStore,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from growsearch.checkpoints import file_sha256 as sha_of
from growsearch.exceptions import CheckpointError, UserError
from growsearch.spec import Spec

SPEC = Spec.from_dict(
    {
        "input_shape": [1, 6, 6],
        "layers": [
            {"type": "conv", "out": 4, "kernel": 3, "batchnorm": True, "activation": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "out": 8, "activation": "relu"},
            {"type": "dense", "out": 3},
        ],
    }
)
WIDER = Spec.from_dict(
    {
        "input_shape": [1, 6, 6],
        "layers": [
            {"type": "conv", "out": 5, "kernel": 3, "batchnorm": True, "activation": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "out": 8, "activation": "relu"},
            {"type": "dense", "out": 3},
        ],
    }
)


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _trained() -> tuple[torch.nn.Module, dict[str, dict[str, torch.Tensor]]]:
    """A model after two Adam steps (BatchNorm statistics and optimizer state are non-trivial)."""
    model = build_model(SPEC, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 1, 6, 6, generator=gen)).square().mean().backward()
        opt.step()
    names = {id(p): n for n, p in model.named_parameters()}
    return model, {names[id(p)]: dict(state) for p, state in opt.state.items()}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, str, torch.nn.Module]:
    model, _ = _trained()
    path = tmp_path / "model.safetensors"
    return path, save_checkpoint(path, SPEC, model.state_dict()), model


# ---- round trip ------------------------------------------------------------------------------
def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model, optim = _trained()
    state = model.state_dict()
    with torch.no_grad():  # values whose bits a careless conversion would lose
        state["layers.dense4.linear.bias"][0] = -0.0
        state["layers.dense4.linear.bias"][1] = float("nan")
        state["layers.dense4.linear.bias"][2] = 1e-45  # a float32 subnormal
    path = tmp_path / "deep" / "folder" / "m.safetensors"  # parents are created
    meta = {"study": "s", "model_id": 7, "accuracy": 0.5, "tags": ["a", "b"]}
    sha = save_checkpoint(path, SPEC, state, optimizer_state=optim, metadata=meta)

    ckpt = load_checkpoint(path, expected_sha256=sha)
    assert sha == sha_of(path) == hashlib.sha256(path.read_bytes()).hexdigest() == ckpt.sha256
    assert ckpt.spec == SPEC and ckpt.spec.hash == SPEC.hash
    assert ckpt.metadata == meta and ckpt.path == str(path) and ckpt.format_version == 1
    assert set(ckpt.state_dict) == set(state)
    for name, tensor in state.items():
        loaded = ckpt.state_dict[name]
        assert loaded.dtype == tensor.dtype and loaded.shape == tensor.shape, name
        assert _bits(loaded) == _bits(tensor), name
    assert ckpt.state_dict["layers.conv0.bn.num_batches_tracked"].item() == 2
    assert ckpt.optimizer_state is not None and set(ckpt.optimizer_state) == set(optim)
    for pname, entries in optim.items():
        assert set(ckpt.optimizer_state[pname]) == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in entries.items():
            assert _bits(ckpt.optimizer_state[pname][key]) == _bits(value), (pname, key)
    assert all(t.device.type == "cpu" for t in ckpt.state_dict.values())
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temp file left


def test_low_precision_and_plain_number_optimizer_entries(tmp_path: Path) -> None:
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
             for k, v in build_model(SPEC, seed=1).state_dict().items()}  # fmt: skip
    optim = {"layers.dense4.linear.bias": {"step": 3, "lr_scale": 0.5, "momentum_buffer": None}}
    path = tmp_path / "bf16.safetensors"
    save_checkpoint(path, SPEC, state, optimizer_state=optim)
    ckpt = load_checkpoint(path)
    assert all(_bits(ckpt.state_dict[k]) == _bits(v) for k, v in state.items())
    assert ckpt.state_dict["layers.dense4.linear.weight"].dtype == torch.bfloat16
    entry = ckpt.optimizer_state["layers.dense4.linear.bias"]  # type: ignore[index]
    assert set(entry) == {"step", "lr_scale"}  # None entries are not saved
    assert entry["step"].item() == 3 and entry["lr_scale"].item() == 0.5


def test_optimizer_state_absent_or_empty(tmp_path: Path) -> None:
    state = build_model(SPEC, seed=0).state_dict()
    save_checkpoint(tmp_path / "a.safetensors", SPEC, state)
    save_checkpoint(tmp_path / "b.safetensors", SPEC, state, optimizer_state={})
    assert load_checkpoint(tmp_path / "a.safetensors").optimizer_state is None
    assert load_checkpoint(tmp_path / "b.safetensors").optimizer_state == {}
    assert load_checkpoint(tmp_path / "a.safetensors").metadata == {}


def test_load_model_rebuilds_the_same_function(saved: tuple[Path, str, torch.nn.Module]) -> None:
    path, sha, model = saved
    spec, loaded = load_model(path, expected_sha256=sha)
    assert spec == SPEC
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_the_same_content_gives_the_same_file(tmp_path: Path) -> None:
    state = build_model(SPEC, seed=0).state_dict()
    a = save_checkpoint(tmp_path / "a.safetensors", SPEC, state, metadata={"x": 1})
    b = save_checkpoint(tmp_path / "b.safetensors", SPEC, state, metadata={"x": 1})
    assert a == b


# ---- writing -----------------------------------------------------------------------------------
def test_failed_write_keeps_the_old_file(
    saved: tuple[Path, str, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sha, _ = saved

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, SPEC, build_model(SPEC, seed=5).state_dict())
    monkeypatch.undo()
    assert sha_of(path) == sha
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # the temp file is gone


@pytest.mark.parametrize("hard_links", [True, False])
def test_exclusive_save_never_replaces_a_file(
    saved: tuple[Path, str, torch.nn.Module], monkeypatch: pytest.MonkeyPatch, hard_links: bool
) -> None:
    path, sha, _ = saved
    if not hard_links:  # e.g. SMB or FAT: the check-then-rename fallback

        def no_links(src: Any, dst: Any) -> None:
            raise PermissionError("operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    other = build_model(SPEC, seed=5).state_dict()
    with pytest.raises(FileExistsError):
        save_checkpoint(path, SPEC, other, exclusive=True)
    assert sha_of(path) == sha
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # the temp file is gone
    fresh = path.with_name("fresh.safetensors")
    new_sha = save_checkpoint(fresh, SPEC, other, exclusive=True)
    assert sha_of(fresh) == new_sha != sha
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, fresh.name])


def test_save_refuses_weights_that_do_not_fit_the_spec(tmp_path: Path) -> None:
    state = build_model(WIDER, seed=0).state_dict()
    with pytest.raises(ValueError, match=r"layers\.conv0\.conv\.weight \(file \[5, 1, 3, 3\]"):
        save_checkpoint(tmp_path / "x.safetensors", SPEC, state)
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(
            tmp_path / "x.safetensors", SPEC, build_model(SPEC).state_dict(),
            metadata={"loss": float("nan")},
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# ---- every kind of bad file --------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.safetensors"
    with pytest.raises(CheckpointError, match=f"{path} does not exist.*expected sha256 abc"):
        load_checkpoint(path, expected_sha256="abc")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.touch()
    with pytest.raises(CheckpointError, match=rf"{path} cannot be loaded: it is empty \(0 bytes"):
        load_checkpoint(path)


def test_truncated_file(saved: tuple[Path, str, torch.nn.Module]) -> None:
    path, sha, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=rf"it is truncated \({len(data) - 100} bytes"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expected_sha256=sha)
    message = str(info.value)
    assert str(path) in message and sha in message and sha_of(path) in message
    assert "truncated" in message
    path.write_bytes(data[:50])  # cut inside the header
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_tampered_file(saved: tuple[Path, str, torch.nn.Module]) -> None:
    path, sha, _ = saved
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expected_sha256=sha)
    message = str(info.value)
    assert f"has sha256 {sha_of(path)} but {sha} was recorded" in message
    assert str(path) in message
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(path, expected_sha256=sha)


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader executed pickle code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_pickle_renamed_to_safetensors_is_never_unpickled(tmp_path: Path) -> None:
    armed = tmp_path / "armed.marker"
    pickle.loads(pickle.dumps(_Payload(armed)))  # the payload works when unpickled...
    assert armed.exists()
    marker = tmp_path / "pwned.marker"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(path)
    assert not marker.exists()  # ...and growsearch never unpickled it


def test_a_torch_save_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "torch.safetensors"
    torch.save(build_model(SPEC).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)


def test_plain_safetensors_without_our_header(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(build_model(SPEC).state_dict(), str(path))
    with pytest.raises(CheckpointError, match="not a growsearch checkpoint"):
        load_checkpoint(path)


def _raw_checkpoint(path: Path, state: dict[str, torch.Tensor], **changes: Any) -> None:
    """A file in our format that save_checkpoint would refuse to write (spec: SPEC)."""
    ours = {"format": FORMAT, "format_version": 1, "spec": SPEC.to_dict(), "metadata": {},
            "optimizer": False, **changes}  # fmt: skip
    path.write_bytes(safetensors.torch.save(state, metadata={HEADER_KEY: json.dumps(ours)}))


def test_weights_that_do_not_fit_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.safetensors"
    state = build_model(WIDER, seed=0).state_dict()
    state["layers.extra.weight"] = torch.zeros(2)
    del state["layers.dense4.linear.bias"]
    _raw_checkpoint(path, state)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "do not fit the spec" in message
    assert "missing: layers.dense4.linear.bias" in message
    assert "unexpected: layers.extra.weight" in message
    assert "layers.conv0.conv.weight (file [5, 1, 3, 3], spec [4, 1, 3, 3])" in message
    assert "layers.dense3.linear.weight (file [8, 45], spec [8, 36])" in message
    with pytest.raises(CheckpointError, match="do not fit the spec"):
        load_model(path)


def test_newer_format_and_bad_spec_in_header(tmp_path: Path) -> None:
    state = build_model(SPEC, seed=0).state_dict()
    newer = tmp_path / "newer.safetensors"
    _raw_checkpoint(newer, state, format_version=2)
    with pytest.raises(CheckpointError, match=r"format 2, newer than this growsearch.*upgrade"):
        load_checkpoint(newer)
    bad = tmp_path / "bad.safetensors"
    _raw_checkpoint(bad, state, spec={"input_shape": [0], "layers": []})
    with pytest.raises(CheckpointError, match=r"(?s)invalid spec: .*checkpoint spec.input_shape"):
        load_checkpoint(bad)
    other = tmp_path / "other.safetensors"
    _raw_checkpoint(other, state, format="someone.else")
    with pytest.raises(CheckpointError, match="not a growsearch checkpoint"):
        load_checkpoint(other)


def test_checkpoint_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "nope.safetensors")


# ---- devices -----------------------------------------------------------------------------------
def test_checkpoint_files_record_no_device(tmp_path: Path) -> None:
    """Why a file saved on a GPU loads on a CPU-only machine, checked without a GPU: the bytes
    name no device (safetensors stores dtype, shape and offsets only, and our header holds the
    spec and metadata), and loading builds the tensors on the device asked for. The GPU round
    trip itself is ``test_saved_on_gpu_loads_anywhere`` (marked gpu)."""
    model, optim = _trained()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, SPEC, model.state_dict(), optimizer_state=optim, metadata={"k": 1})
    data = path.read_bytes()
    raw = data[8 : 8 + int.from_bytes(data[:8], "little")]
    assert b"cuda" not in raw and b"device" not in raw
    header = json.loads(raw)
    ours = json.loads(header.pop("__metadata__")[HEADER_KEY])
    assert header and all(set(v) == {"dtype", "shape", "data_offsets"} for v in header.values())
    assert set(ours) == {"format", "format_version", "spec", "metadata", "optimizer"}
    ckpt = load_checkpoint(path, device=torch.device("cpu"))
    assert {t.device.type for t in ckpt.state_dict.values()} == {"cpu"}
    assert ckpt.optimizer_state is not None
    assert {t.device.type for s in ckpt.optimizer_state.values() for t in s.values()} == {"cpu"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_saved_on_gpu_loads_anywhere(tmp_path: Path) -> None:
    model = build_model(SPEC, seed=0).cuda()
    path = tmp_path / "gpu.safetensors"
    sha = save_checkpoint(path, SPEC, model.state_dict())
    on_cpu = load_checkpoint(path, expected_sha256=sha)
    assert all(t.device.type == "cpu" for t in on_cpu.state_dict.values())
    on_gpu = load_checkpoint(path, device="cuda")
    assert all(t.device.type == "cuda" for t in on_gpu.state_dict.values())
    for name, tensor in model.state_dict().items():
        assert torch.equal(on_cpu.state_dict[name], tensor.cpu())
    _, rebuilt = load_model(path, device="cuda")
    assert next(rebuilt.parameters()).device.type == "cuda"


# ---- Optuna artifact store ---------------------------------------------------------------------
def _trial() -> optuna.Trial:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study().ask()


def test_artifact_from_a_checkpoint_is_a_hard_link(
    saved: tuple[Path, str, torch.nn.Module], tmp_path: Path
) -> None:
    path, sha, _ = saved
    store = AtomicFileSystemArtifactStore(tmp_path / "artifacts")  # created on first write
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=str(path), study_or_trial=_trial()
    )
    stored = tmp_path / "artifacts" / artifact_id
    assert os.path.samefile(stored, path) and path.stat().st_nlink == 2
    with store.open_reader(artifact_id) as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha
    # Saving the checkpoint again replaces its name; the artifact keeps the old content.
    save_checkpoint(path, SPEC, build_model(SPEC, seed=9).state_dict())
    assert sha_of(stored) == sha and sha_of(path) != sha


def test_artifact_falls_back_to_an_atomic_copy(
    saved: tuple[Path, str, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sha, _ = saved

    def no_links(src: Any, dst: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    store = AtomicFileSystemArtifactStore(tmp_path / "artifacts")
    with open(path, "rb") as f:
        store.write("copied", f)
    store.write("from-bytes", io.BytesIO(b"hello"))
    folder = tmp_path / "artifacts"
    assert sha_of(folder / "copied") == sha and (folder / "copied").stat().st_nlink == 1
    assert (folder / "from-bytes").read_bytes() == b"hello"
    assert sorted(p.name for p in folder.iterdir()) == ["copied", "from-bytes"]
    with pytest.raises(ValueError, match="Invalid artifact_id"):
        store.write("../escape", io.BytesIO(b"x"))


def test_artifact_from_a_partly_read_file_copies_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"0123456789")
    store = AtomicFileSystemArtifactStore(tmp_path / "artifacts")
    with open(src, "rb") as f:
        f.read(4)
        store.write("tail", f)
    assert (tmp_path / "artifacts" / "tail").read_bytes() == b"456789"
    assert src.stat().st_nlink == 1


def test_a_device_in_place_of_a_checkpoint_is_refused_without_reading_it(tmp_path: Path) -> None:
    link = tmp_path / "model.safetensors"
    link.symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(CheckpointError, match="is not a regular file"):
        load_checkpoint(link)
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is not a regular file"):
        load_checkpoint(tmp_path / "folder.safetensors")
