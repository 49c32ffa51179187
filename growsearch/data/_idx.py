"""IDX files (the MNIST format): a big-endian header, then raw unsigned bytes. No pickle.

Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension. Read as one int, the first four bytes are the "magic":
0x00000803 for (N, H, W) images and 0x00000801 for (N,) labels.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from growsearch.exceptions import ConfigError

__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "IdxHeader", "read_idx", "read_idx_header"]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_KIND = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}


@dataclass(frozen=True)
class IdxHeader:
    magic: int
    dims: tuple[int, ...]
    payload_bytes: int  # bytes found after the header (for .gz: after decompression)

    @property
    def needed_bytes(self) -> int:
        return prod(self.dims)


def _is_gz(path: Path) -> bool:
    return path.suffix == ".gz"


def _fail(path: Path, what: str, fix: str) -> ConfigError:
    return ConfigError(f"data.root: {path}: {what}; {fix}")


def _read_head(path: Path, n: int) -> bytes:
    try:
        if _is_gz(path):
            with gzip.open(path, "rb") as f:
                return f.read(n)
        with open(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error) as e:
        raise _fail(path, f"cannot be read ({e})", "replace it with an intact copy") from e


def _decompressed_size(path: Path) -> int:
    """Bytes after decompression. A gzip trailer can lie when the file is cut short, so gzip
    files are streamed through (MNIST's largest takes a fraction of a second, no memory kept)."""
    if not _is_gz(path):
        return os.path.getsize(path)
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise _fail(path, f"is damaged or truncated ({e})", "download it again") from e
    return total


def _parse_header(path: Path, head: bytes, expected_magic: int) -> tuple[int, tuple[int, ...]]:
    kind = _KIND[expected_magic]
    if len(head) < 4:
        raise _fail(path, f"truncated IDX {kind} file ({len(head)} bytes)", "download it again")
    (magic,) = struct.unpack(">I", head[:4])
    if magic != expected_magic:
        raise _fail(
            path,
            f"not an IDX {kind} file (magic 0x{magic:08x}, expected 0x{expected_magic:08x})",
            "use the unmodified file from the MNIST-format distribution (gzipped or not)",
        )
    ndim = magic & 0xFF
    if len(head) < 4 + 4 * ndim:
        raise _fail(path, f"truncated IDX {kind} header", "download it again")
    dims = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    return magic, tuple(int(d) for d in dims)


def read_idx_header(path: Path, expected_magic: int) -> IdxHeader:
    """The header and payload size, reading a few bytes only; raises ConfigError if unusable."""
    head = _read_head(path, 4 + 4 * 3)
    magic, dims = _parse_header(path, head, expected_magic)
    payload = _decompressed_size(path) - (4 + 4 * len(dims))
    header = IdxHeader(magic, dims, max(payload, 0))
    if header.payload_bytes < header.needed_bytes:
        raise _truncated(path, header, header.payload_bytes)
    return header


def _truncated(path: Path, header: IdxHeader, have: int) -> ConfigError:
    return _fail(
        path,
        f"truncated IDX file: its header promises {header.needed_bytes} bytes for shape "
        f"{header.dims}, the file holds {have}",
        "download it again",
    )


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """The whole array (uint8, shape from the header)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if _is_gz(path) else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise _fail(path, f"is damaged ({e})", "download it again") from e
    magic, dims = _parse_header(path, raw[:16], expected_magic)
    start = 4 + 4 * len(dims)
    header = IdxHeader(magic, dims, len(raw) - start)
    if header.payload_bytes < header.needed_bytes:
        raise _truncated(path, header, header.payload_bytes)
    return np.frombuffer(raw, dtype=np.uint8, count=header.needed_bytes, offset=start).reshape(dims)
