"""Checkpoints: safetensors weights that describe themselves (spec JSON in the header).

A checkpoint file holds the model's state dict, optionally its optimizer state (tensors named
``optim/<param name>/<key>``), and one entry ``growsearch`` in the safetensors metadata header:
canonical JSON with the format name and version, the spec and the caller's metadata. (One entry,
because safetensors writes several in random order; with one, equal content gives equal bytes
and an equal sha256.) Files are written atomically (temp file in the same folder, fsync,
``os.replace``), carry no device, and are never unpickled.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import safetensors.torch
import torch
from optuna.artifacts import FileSystemArtifactStore

from growsearch.builder import GrowNet, build_model
from growsearch.exceptions import CheckpointError, SpecError
from growsearch.spec import Spec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "HEADER_KEY",
    "STALE_TEMP_AGE_S",
    "AtomicFileSystemArtifactStore",
    "Checkpoint",
    "file_sha256",
    "load_checkpoint",
    "load_model",
    "remove_stale_temp_files",
    "save_checkpoint",
]

FORMAT = "growsearch.checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "growsearch"
_OPTIM = "optim/"
_CHUNK = 1 << 20
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header
_LISTED = 8  # tensors named per kind of mismatch
# A temp file untouched this long belongs to a writer that died (a live write keeps changing the
# file, and even a slow fsync of a large checkpoint takes minutes, not an hour).
STALE_TEMP_AGE_S = 3600.0
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # what _temp_name makes


@dataclass(frozen=True)
class Checkpoint:
    spec: Spec
    state_dict: dict[str, torch.Tensor]
    optimizer_state: dict[str, dict[str, torch.Tensor]] | None
    metadata: dict[str, Any]
    sha256: str
    path: str
    format_version: int = field(default=FORMAT_VERSION)


# ---- hashing and atomic files ----------------------------------------------------------------
def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_name(dest: Path) -> Path:
    # Hidden, unique, and in the destination folder so os.replace stays on one filesystem.
    return dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")


def remove_stale_temp_files(
    folder: str | os.PathLike[str], older_than_s: float = STALE_TEMP_AGE_S
) -> list[Path]:
    """Delete the temp files that interrupted atomic writes left in ``folder`` (a killed worker,
    a full disk) once they are ``older_than_s`` seconds old; a younger one may still be written
    by another worker sharing the folder. Only names this module makes are touched. Returns the
    files removed."""
    removed: list[Path] = []
    cutoff = time.time() - older_than_s
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not _TEMP_RE.match(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # another worker removed it first
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; some platforms and filesystems cannot open folders."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, dest: Path, exclusive: bool) -> None:
    """Move the finished temp file to ``dest``; ``exclusive``: never replace a file already
    there (FileExistsError), even one another process is creating at the same moment."""
    if not exclusive:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)  # atomic, and fails if dest exists
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: check, then rename (a small race)
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest)) from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


def _atomic_write(dest: Path, write: Any, *, exclusive: bool = False) -> None:
    """Call ``write(file)`` on a temp file next to ``dest``, fsync it, then rename it over
    ``dest``: readers see the old file or the whole new one, never a partial one. With
    ``exclusive`` an existing ``dest`` is left alone and FileExistsError raised."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dest)
    # os.open with 0o666 lets the umask decide permissions, as for any file the user writes.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, dest, exclusive)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)


# ---- saving ----------------------------------------------------------------------------------
def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous()


def _flat_tensors(
    state_dict: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name.startswith(_OPTIM):
            raise ValueError(f"state dict key {name!r} clashes with the prefix {_OPTIM!r}")
        tensors[name] = _cpu(tensor)
    for pname, state in (optimizer_state or {}).items():
        for key, value in state.items():
            if "/" in key:
                raise ValueError(f"optimizer state key {key!r} of {pname!r} must not contain '/'")
            if value is None:  # e.g. SGD's momentum buffer before the first step
                continue
            if not isinstance(value, torch.Tensor):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(
                        f"optimizer state {pname!r}/{key!r} is {type(value).__name__}; only "
                        "tensors and numbers can be saved"
                    )
                value = torch.tensor(value)
            tensors[f"{_OPTIM}{pname}/{key}"] = _cpu(value)
    return tensors


def _serialise(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> bytes:
    try:
        return safetensors.torch.save(tensors, metadata=header)
    except RuntimeError as e:
        # Tied tensors share storage, which safetensors refuses; copies are fine here.
        if "share" not in str(e).lower():
            raise
        return safetensors.torch.save({k: v.clone() for k, v in tensors.items()}, metadata=header)


def save_checkpoint(
    path: str | os.PathLike[str],
    spec: Spec,
    state_dict: Mapping[str, torch.Tensor],
    *,
    optimizer_state: Mapping[str, Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    exclusive: bool = False,
) -> str:
    """Write the checkpoint atomically (creating its folder) and return the file's sha256.

    The state dict must fit ``spec`` exactly (ValueError naming the tensors otherwise), so every
    checkpoint written can be loaded. ``exclusive``: raise FileExistsError rather than replace
    an existing file at ``path``.
    """
    problem = _fit_problem(spec, {k: tuple(v.shape) for k, v in state_dict.items()})
    if problem:
        raise ValueError(f"refusing to save {os.fspath(path)}: {problem}")
    ours = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "metadata": dict(metadata or {}),
        "optimizer": optimizer_state is not None,
    }
    try:
        text = json.dumps(ours, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint metadata must be JSON data without NaN/inf: {e}") from e
    data = _serialise(_flat_tensors(state_dict, optimizer_state), {HEADER_KEY: text})
    _atomic_write(Path(path), lambda f: f.write(data), exclusive=exclusive)
    return hashlib.sha256(data).hexdigest()


# ---- loading ---------------------------------------------------------------------------------
def _expected_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    # The meta device allocates nothing: this costs the same for a 1 GB model as for a tiny one.
    with torch.device("meta"):
        model = GrowNet(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _fit_problem(spec: Spec, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """What keeps weights of these shapes from loading into the model of ``spec`` (or None)."""
    expected = _expected_shapes(spec)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = [
        f"{k} (file {list(shapes[k])}, spec {list(expected[k])})"
        for k in sorted(set(expected) & set(shapes))
        if tuple(shapes[k]) != expected[k]
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
            parts.append(f"{label}: {', '.join(items[:_LISTED])}{more}")
    if not parts:
        return None
    return "the weights do not fit the spec (" + "; ".join(parts) + ")"


def _parse_header(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The safetensors header, or why the bytes are not (or no longer) a safetensors file."""
    if len(data) < 8:
        return None, f"it is truncated or not a safetensors file (only {len(data)} bytes)"
    size = int.from_bytes(data[:8], "little")
    if size > _MAX_HEADER or data[8:9] != b"{":
        return None, (
            "it is not a safetensors file (growsearch checkpoints are safetensors; other formats, "
            "pickles included, are never loaded)"
        )
    if 8 + size > len(data):
        return None, f"it is truncated (its header needs {8 + size} bytes, it has {len(data)})"
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "its safetensors header is not valid JSON (the file is corrupt)"
    if not isinstance(header, dict):
        return None, "its safetensors header is not a JSON object (the file is corrupt)"
    ends = [_data_end(info) for key, info in header.items() if key != "__metadata__"]
    needed = 8 + size + max(ends, default=0)
    if needed > len(data):
        return None, f"it is truncated ({len(data)} bytes, its header promises {needed})"
    return header, None


def _data_end(info: Any) -> int:
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    if isinstance(offsets, list) and len(offsets) == 2 and isinstance(offsets[1], int):
        return offsets[1]
    return 0  # malformed entries are left to the safetensors parser


def _our_header(header: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """growsearch's entry of a safetensors header, or why there is no usable one."""
    meta = header.get("__metadata__")
    raw = meta.get(HEADER_KEY) if isinstance(meta, dict) else None
    try:
        ours = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        return None, f"its '{HEADER_KEY}' header entry is not valid JSON (the file is corrupt)"
    if not isinstance(ours, dict) or ours.get("format") != FORMAT or "spec" not in ours:
        return None, "it is a safetensors file but not a growsearch checkpoint (no spec in it)"
    version = ours.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        return None, f"its format version {version!r} is not a number"
    if version > FORMAT_VERSION:
        return None, (
            f"it has checkpoint format {version}, newer than this growsearch "
            f"({FORMAT_VERSION}); upgrade growsearch"
        )
    return ours, None


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Read, verify (sha256 if given; format; weights against the spec) and return a checkpoint,
    its tensors on ``device`` whatever device saved them. Raises CheckpointError naming the
    file and the problem."""
    where = os.fspath(path)
    hint = f" (expected sha256 {expected_sha256})" if expected_sha256 else ""
    fix = "restore the file from a backup or train the model again"
    try:
        # A device or a pipe in the file's place (/dev/zero) would be read for ever.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise CheckpointError(
                f"checkpoint {where} is not a regular file (a folder, device or pipe){hint}; {fix}"
            )
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {where} does not exist{hint}; {fix}") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {where} cannot be read ({e.strerror}){hint}") from None
    actual = hashlib.sha256(data).hexdigest()
    if not data:
        problem: str | None = "it is empty (0 bytes; probably an interrupted copy)"
        header = None
    else:
        header, problem = _parse_header(data)
    if expected_sha256 and actual != expected_sha256.lower():
        also = f"; {problem}" if problem else ""
        raise CheckpointError(
            f"checkpoint {where} has sha256 {actual} but {expected_sha256} was recorded: the file "
            f"changed since it was written (truncated, replaced or tampered with){also}; {fix}"
        )
    ours = None
    if header is not None:
        ours, problem = _our_header(header)
    if ours is None:
        raise CheckpointError(f"checkpoint {where} cannot be loaded: {problem}{hint}; {fix}")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:  # the Rust parser raises its own error types
        raise CheckpointError(f"checkpoint {where} is corrupt ({e}){hint}; {fix}") from None
    try:
        spec = Spec.from_dict(ours["spec"], where="checkpoint spec")
    except SpecError as e:
        raise CheckpointError(f"checkpoint {where} has an invalid spec: {e}") from None
    metadata = ours.get("metadata")
    state_dict, optimizer_state = _split(tensors, device)
    fit = _fit_problem(spec, {k: tuple(v.shape) for k, v in state_dict.items()})
    if fit:
        raise CheckpointError(f"checkpoint {where}: {fit}")
    return Checkpoint(
        spec=spec,
        state_dict=state_dict,
        optimizer_state=optimizer_state if ours.get("optimizer") else None,
        metadata=metadata if isinstance(metadata, dict) else {},
        sha256=actual,
        path=where,
        format_version=ours["format_version"],
    )


def _split(
    tensors: dict[str, torch.Tensor], device: str | torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    on_cpu = torch.device(device).type == "cpu"
    state: dict[str, torch.Tensor] = {}
    optim: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        if not on_cpu:
            tensor = tensor.to(device)
        if name.startswith(_OPTIM):
            pname, key = name[len(_OPTIM) :].rsplit("/", 1)
            optim.setdefault(pname, {})[key] = tensor
        else:
            state[name] = tensor
    return state, optim


def load_model(
    path: str | os.PathLike[str],
    expected_sha256: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Spec, GrowNet]:
    """The spec and the model built from it with the checkpoint's weights (strict), on
    ``device``, in training mode as ``build_model`` leaves it."""
    ckpt = load_checkpoint(path, expected_sha256=expected_sha256)
    model = build_model(ckpt.spec)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as e:  # pragma: no cover - load_checkpoint already compared shapes
        raise CheckpointError(f"checkpoint {ckpt.path}: {e}") from None
    return ckpt.spec, model.to(device)


# ---- Optuna artifacts ------------------------------------------------------------------------
class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store with atomic writes.

    When the uploaded content is a real file on the same filesystem (``upload_artifact`` opens
    the checkpoint path), the artifact is a hard link to it: no copy, no extra disk. Checkpoints
    are replaced, never edited in place, so the two names never see each other's changes.
    """

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        dest = Path(self._get_filepath(artifact_id))
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = _backing_file(content_body)
        if source is not None and _link(source, dest):
            return
        _atomic_write(dest, lambda f: shutil.copyfileobj(content_body, f))


def _backing_file(body: BinaryIO) -> Path | None:
    """The file ``body`` reads, if it is a regular file read from its start."""
    name = getattr(body, "name", None)
    if not isinstance(name, str | bytes | os.PathLike):
        return None
    try:
        if body.tell() != 0:
            return None
        opened = os.fstat(body.fileno())
        named = os.stat(name)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return None
    same = (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
    return Path(os.fsdecode(name)) if same and os.path.isfile(name) else None


def _link(source: Path, dest: Path) -> bool:
    """Hard-link ``source`` to ``dest`` atomically; False if the filesystem cannot."""
    with contextlib.suppress(OSError):
        if dest.exists() and os.path.samefile(source, dest):
            return True
    tmp = _temp_name(dest)
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem, or links not supported
        return False
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)
    return True
