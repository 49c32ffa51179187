"""N worker processes on one machine (one per GPU when GPUs exist)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
from typing import Any

import torch
from sqlalchemy.engine import make_url

from growsearch._spawn import worker_main
from growsearch.config import StudyConfig
from growsearch.exceptions import ConfigError

__all__ = ["check_workers", "child", "run_processes"]


def check_workers(cfg: StudyConfig, workers: int) -> None:
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers > 1 and make_url(cfg.storage).get_backend_name() == "sqlite":
        raise ConfigError(
            f"--workers {workers}: SQLite allows one writer at a time and is not reliable for "
            "several workers; use PostgreSQL, e.g. --storage postgresql://user@host/dbname "
            "(see the README, 'Many workers')"
        )


def _device_for(index: int, preference: str) -> str | None:
    if preference == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{index % torch.cuda.device_count()}"
    return None


def _share_cpus(workers: int, device: str | None) -> None:
    """Workers training on the CPU split its cores: N processes with all cores each spend their
    time contending (4 workers on 2 cores trained ~4x slower than they should here)."""
    if device is None or device.startswith("cpu"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def child(cfg_dict: dict[str, Any], source: str | None, index: int, workers: int) -> None:
    """One worker process's work (started through ``growsearch._spawn.worker_main``)."""
    from growsearch.config import parse_config
    from growsearch.search._progress import Reporter
    from growsearch.search._worker import run_worker
    from growsearch.training import select_device

    cfg = parse_config(cfg_dict, source=source)
    device = _device_for(index, cfg.train.device)
    _share_cpus(workers, device or str(select_device(cfg.train.device)))
    reporter = Reporter(cfg.n_trials, prefix=f"[w{index}] ", bars=False)
    run_worker(cfg, device=device, reporter=reporter)


def run_processes(cfg: StudyConfig, workers: int) -> int:
    """Start ``workers`` processes (spawned: CUDA and forked threads do not mix); returns the
    number of workers that exited with an error."""
    ctx = mp.get_context("spawn")
    # One pipe per worker, not an Event: a semaphore would start multiprocessing's resource
    # tracker, which warns about "leaked semaphore objects" after a forced stop.
    pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]  # (parent's end, worker's end)
    procs = [
        ctx.Process(
            target=worker_main,
            args=(cfg.to_dict(), cfg.source, i, workers, pipes[i][1]),
            name=f"growsearch-w{i}",
        )
        for i in range(workers)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except KeyboardInterrupt as e:
        # The workers run in their own process groups: pass the signal on, once.
        signum = getattr(e, "signum", signal.SIGINT)
        for p, (ready, _) in zip(procs, pipes, strict=True):
            if p.pid is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum if ready.poll() else signal.SIGTERM)
        for p in procs:
            if p.pid is not None:
                p.join(timeout=60)
        raise
    bad = [p for p in procs if p.exitcode != 0]
    for p in bad:
        print(f"worker {p.name} exited with code {p.exitcode}", file=sys.stderr)
    return len(bad)
