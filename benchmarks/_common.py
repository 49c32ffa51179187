"""What every benchmark shares: the command line, the machine description, JSON results, plots.

Benchmarks compare things measured side by side in one run and report ratios: these machines
are shared and noisy, so an absolute time says little, and the load average at the start and the
end of a run is recorded with every result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS_DIR",
    "Stopwatch",
    "base_parser",
    "command_line",
    "load_average",
    "machine",
    "median",
    "out_dir",
    "plt",
    "save_json",
    "stamp",
    "timed",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """``--quick`` (the default) or ``--full``, and ``--out DIR``."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="small sizes, a few minutes on 2 CPU cores (default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the sizes documented in benchmarks/README.md",
    )
    parser.set_defaults(mode="quick")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for the JSON and PNG files (default: {RESULTS_DIR}/<name>)",
    )
    return parser


def out_dir(name: str, given: Path | None) -> Path:
    folder = given if given is not None else RESULTS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def command_line(name: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run, as a user would type it."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", "-m", f"benchmarks.{name}", *map(shlex.quote, args)])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What ran the benchmark (CPU, cores, torch, GPU if any) and how busy the machine was."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_average": load_average(),
        "description": f"{os.cpu_count()}-core CPU ({_cpu_model()}), "
        + (f"GPU {gpu}" if gpu else "no GPU"),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; "not reached" is spelled out next to it
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    return value


def save_json(path: Path, payload: dict[str, Any]) -> Path:
    payload = dict(payload)
    payload.setdefault("finished", stamp())
    payload.setdefault("load_average_at_end", load_average())
    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
    return path


def median(values: Sequence[float]) -> float:
    """Median where ``inf`` means "never reached" (it sorts above every number)."""
    return float(statistics.median(values)) if values else math.nan


class Stopwatch:
    """Seconds accumulated per named phase (re-entrant names simply add up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.calls[name] = self.calls.get(name, 0) + 1


@contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - t0)


def plt() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
