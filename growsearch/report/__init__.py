"""Study reports: an HTML page with the lineage tree, best accuracy against cumulative training
time and accuracy per generation (matplotlib PNGs), built from the lineage store alone."""

from __future__ import annotations

import contextlib
import os
import secrets
from importlib import metadata
from pathlib import Path

from growsearch.exceptions import UserError
from growsearch.report._figures import generation_png, lineage_png, progress_png
from growsearch.report._history import History, ProgressPoint, collect, op_label
from growsearch.report._html import FIGURES, render_html
from growsearch.report._tree import tree_layout
from growsearch.store import LineageStore

__all__ = [
    "FIGURES",
    "History",
    "ProgressPoint",
    "build_report",
    "check_out_dir",
    "collect",
    "op_label",
    "render_html",
    "report",
    "tree_layout",
    "write_report",
]

INDEX = "index.html"


def _version() -> str:
    try:
        return metadata.version("growsearch")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "(unknown version)"


def build_report(
    history: History, *, embed: bool = False, storage: str | None = None, dpi: int = 110
) -> dict[str, bytes]:
    """File name -> content: ``index.html`` and (unless ``embed``) the PNGs it shows."""
    pngs = {
        "lineage.png": lineage_png(history, dpi),
        "progress.png": progress_png(history, dpi),
        "generations.png": generation_png(history, dpi),
    }
    assert set(pngs) == set(FIGURES)
    page = render_html(
        history, pngs, embed=embed, generated_by=f"growsearch {_version()}", storage=storage
    )
    files = {INDEX: page.encode("utf-8")}
    if not embed:
        files.update(pngs)
    return files


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """``out`` as a folder to write into; UserError (nothing created) if it cannot be one."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(
            f"--out {path} is a file; the report is a folder (index.html and PNGs): give a "
            "folder path, e.g. --out report/"
        )
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK) and not path.exists():
                raise UserError(f"--out {path}: cannot create it, {parent} is not writable")
            break
    return path


def write_report(files: dict[str, bytes], out: str | os.PathLike[str]) -> list[Path]:
    """Write ``files`` into the folder ``out`` (created if needed), each atomically: a reader
    (a browser refreshing the page) sees the old file or the new one, never half of one."""
    folder = check_out_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    # PNGs first, the page last: a page never points at a figure that is not there yet.
    for name in sorted(files, key=lambda n: n == INDEX):
        dest = folder / name
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            tmp.write_bytes(files[name])
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        written.append(dest)
    return written


def report(
    store: LineageStore,
    study: str,
    out: str | os.PathLike[str],
    *,
    embed: bool = False,
    storage: str | None = None,
) -> list[Path]:
    """Collect, draw and write the report of ``study``; returns the files written."""
    check_out_dir(out)  # before any drawing: a bad --out fails fast
    files = build_report(collect(store, study), embed=embed, storage=storage)
    return write_report(files, out)
