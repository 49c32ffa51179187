"""Lineage scale: ``best``, ``ancestry`` and the DataFrame export on studies of 1k to 100k models,
on SQLite and on PostgreSQL, to show how their cost grows.

A generator bulk-inserts a synthetic study through the store's own SQLAlchemy tables: each model's
parent is drawn from the previous ``window`` models (so lineages are deep, as under the ``best``
policy: about 2N/window generations), 90% finish, the rest are pruned or failed, and every row
carries a real spec JSON. The store's public methods are then timed, several repetitions each,
median. PostgreSQL runs in a throwaway database created and dropped by the benchmark.

    python -m benchmarks.lineage_scale --quick
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from benchmarks import _common as common
from growsearch.spec import Spec
from growsearch.storage_url import make_engine, redact
from growsearch.store import SQLLineageStore
from growsearch.store._models import EdgeModel, ModelModel

__all__ = ["Setup", "generate", "postgres_database", "run", "time_backend"]

NAME = "lineage_scale"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STUDY = "bench-lineage"
CHUNK = 5000


@dataclass(frozen=True)
class Setup:
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    backends: tuple[str, ...] = ("sqlite", "postgresql")
    window: int = 50  # a model's parent is one of the previous `window` models
    reps: int = 5  # repetitions of best and ancestry
    export_reps: int = 3  # repetitions of the DataFrame export
    pg_admin_url: str = PG_ADMIN_URL
    seed: int = 0


def _spec_dicts(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """A pool of plausible grown CNN specs (what every row stores)."""
    out = []
    for _ in range(n):
        conv = int(rng.integers(8, 65))
        dense = int(rng.integers(32, 257))
        layers: list[dict[str, Any]] = [
            {
                "type": "conv",
                "name": "conv0",
                "out": conv,
                "kernel": 3,
                "batchnorm": True,
                "activation": "relu",
            },
        ]
        layers += [
            {"type": "conv", "name": f"conv{9 + i}", "out": conv, "kernel": 3, "activation": "relu"}
            for i in range(int(rng.integers(0, 3)))
        ]
        layers += [
            {"type": "maxpool", "name": "maxpool1", "size": 2},
            {"type": "flatten", "name": "flatten2"},
            {"type": "dense", "name": "dense3", "out": dense, "activation": "relu"},
            {"type": "dense", "name": "dense4", "out": 10},
        ]
        out.append(Spec.from_dict({"input_shape": [1, 8, 8], "layers": layers}).to_dict())
    return out


def generate(url: str, n: int, setup: Setup) -> dict[str, Any]:
    """Create the study with ``n`` models in the (empty) database at ``url``; returns the
    deepest model's id and generation, and how long the bulk insert took."""
    rng = np.random.default_rng(setup.seed)
    with SQLLineageStore(url) as store:  # creates the tables through the store's migrations
        study_id = store.create_study(STUDY, {"generated_by": "benchmarks.lineage_scale"})
    specs = _spec_dicts(rng, 64)
    hashes = [Spec.from_dict(s).hash for s in specs]
    params = [Spec.from_dict(s).num_params for s in specs]
    flops = [Spec.from_dict(s).flops for s in specs]
    now = datetime.now(timezone.utc)
    generation = np.zeros(n, dtype=np.int64)
    parents = np.full(n, -1, dtype=np.int64)
    for i in range(1, n):
        parents[i] = rng.integers(max(0, i - setup.window), i)
        generation[i] = generation[parents[i]] + 1
    status = np.where(
        rng.random(n) < 0.9, "finished", np.where(rng.random(n) < 0.5, "pruned", "failed")
    )
    status[0] = "finished"
    accuracy = rng.uniform(0.5, 0.99, n)
    kinds = rng.integers(0, len(specs), n)
    ops = np.where(rng.random(n) < 0.5, "widen", "deepen")
    engine = make_engine(url)
    t0 = time.perf_counter()
    try:
        with engine.begin() as conn:
            for start in range(0, n, CHUNK):
                rows, edges = [], []
                for i in range(start, min(start + CHUNK, n)):
                    k = int(kinds[i])
                    done = status[i] == "finished"
                    rows.append(
                        {
                            "id": i + 1,
                            "study_id": study_id,
                            "trial_number": i,
                            "status": str(status[i]),
                            "reason": None if done else "generated",
                            "spec": specs[k],
                            "spec_hash": hashes[k],
                            "num_params": params[k],
                            "flops": flops[k],
                            "generation": int(generation[i]),
                            "checkpoint": f"/ckpt/model-{i + 1:06d}.safetensors" if done else None,
                            "sha256": f"{i:064x}" if done else None,
                            "val_accuracy": float(accuracy[i]) if done else None,
                            "objectives": None,
                            "preservation_error": 1e-7 if i else None,
                            "info": {"init": "net2net" if i else "scratch", "exact": True},
                            "created_at": now,
                            "finished_at": now,
                            "train_seconds": 1.0,
                        }
                    )
                    if i:
                        edges.append(
                            {
                                "child_id": i + 1,
                                "parent_id": int(parents[i]) + 1,
                                "operation": str(ops[i]),
                                "args": [{"name": str(ops[i]), "target": "dense3", "args": {}}],
                            }
                        )
                conn.execute(sa.insert(ModelModel.__table__), rows)
                if edges:
                    conn.execute(sa.insert(EdgeModel.__table__), edges)
        insert_s = time.perf_counter() - t0
        if engine.dialect.name == "postgresql":  # fresh statistics, as autovacuum would give
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    deepest = int(np.argmax(generation))
    return {
        "n": n,
        "insert_seconds": insert_s,
        "deepest_model_id": deepest + 1,
        "deepest_generation": int(generation[deepest]),
        "best_accuracy": float(accuracy[status == "finished"].max()),
    }


def _median_time(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def time_backend(url: str, n: int, setup: Setup) -> dict[str, Any]:
    gen = generate(url, n, setup)
    with SQLLineageStore(url, create=False) as store:
        best_s, best = _median_time(lambda: store.best(STUDY), setup.reps)
        anc_s, chain = _median_time(lambda: store.ancestry(gen["deepest_model_id"]), setup.reps)
        df_s, df = _median_time(lambda: store.lineage_dataframe(STUDY), setup.export_reps)
    # The answers must be right, or the timings mean nothing.
    assert best is not None and abs(best.val_accuracy - gen["best_accuracy"]) < 1e-12
    assert len(chain) == gen["deepest_generation"] + 1 and chain[0].parent_id is None
    assert len(df) == n
    return {
        **gen,
        "best_seconds": best_s,
        "ancestry_seconds": anc_s,
        "ancestry_length": len(chain),
        "dataframe_seconds": df_s,
    }


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``; dropped afterwards."""
    admin = sa.create_engine(
        admin_url,
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": 3},
    )
    name = f"gs_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def pg_problem(admin_url: str) -> str | None:
    engine = sa.create_engine(
        admin_url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as e:
        return f"PostgreSQL at {redact(admin_url)} cannot be reached: {str(e.orig or e)[:200]}"
    finally:
        engine.dispose()
    return None


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = common.plt()
    ops = {
        "best_seconds": "best()",
        "ancestry_seconds": "ancestry(deepest model)",
        "dataframe_seconds": "lineage_dataframe()",
    }
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    styles = {"sqlite": ("tab:blue", "o"), "postgresql": ("tab:orange", "s")}
    for ax, (key, title) in zip(axes, ops.items(), strict=True):
        for backend, rows in result["backends"].items():
            if not isinstance(rows, list):
                continue
            colour, marker = styles[backend]
            ax.loglog(
                [r["n"] for r in rows],
                [r[key] * 1000 for r in rows],
                marker=marker,
                color=colour,
                label=backend,
            )
            if key == "ancestry_seconds":
                for r in rows:
                    ax.annotate(
                        f"depth {r['ancestry_length']}",
                        (r["n"], r[key] * 1000),
                        fontsize=7,
                        textcoords="offset points",
                        xytext=(4, -10),
                    )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("models in the study")
        ax.set_ylabel("milliseconds (median)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(
        "Lineage store queries vs study size (synthetic lineage, parent among the "
        f"previous {result['setup']['window']} models)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(setup: Setup, out: Path, log: Any = print) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    for backend in setup.backends:
        rows: list[dict[str, Any]] = []
        if backend == "postgresql" and (problem := pg_problem(setup.pg_admin_url)):
            backends[backend] = f"skipped: {problem}"
            log(backends[backend])
            continue
        for n in setup.sizes:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    r = time_backend(f"sqlite:///{Path(tmp) / 'lineage.db'}", n, setup)
            else:
                with postgres_database(setup.pg_admin_url) as url:
                    r = time_backend(url, n, setup)
            rows.append(r)
            log(
                f"{backend:10s} {n:>7,} models (depth {r['ancestry_length']:>5}): best "
                f"{r['best_seconds'] * 1000:8.2f} ms, ancestry {r['ancestry_seconds'] * 1000:8.2f}"
                f" ms, DataFrame {r['dataframe_seconds'] * 1000:9.1f} ms "
                f"(insert {r['insert_seconds']:.1f}s)"
            )
        backends[backend] = rows
    shown = {**asdict(setup), "pg_admin_url": redact(setup.pg_admin_url)}
    result: dict[str, Any] = {"setup": shown, "backends": backends}
    result["plot"] = str(plot(result, out / f"{NAME}.png"))
    return result


QUICK = Setup()
FULL = Setup(sizes=(1_000, 10_000, 100_000, 300_000), reps=10, export_reps=5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument(
        "--pg-admin-url",
        default=PG_ADMIN_URL,
        help="server on which a throwaway database is created and dropped",
    )
    parser.add_argument("--sizes", default=None, help="comma-separated study sizes (overrides)")
    args = parser.parse_args(argv)
    out = common.out_dir(NAME, args.out)
    setup = FULL if args.mode == "full" else QUICK
    if args.sizes:
        setup = Setup(**{**asdict(setup), "sizes": tuple(int(s) for s in args.sizes.split(","))})
    setup = Setup(**{**asdict(setup), "pg_admin_url": args.pg_admin_url})
    payload = {
        "benchmark": NAME,
        "command": common.command_line(NAME, argv),
        "mode": args.mode,
        "date": common.stamp(),
        "machine": common.machine(),
    }
    payload["result"] = run(setup, out)
    path = common.save_json(out / f"{NAME}.json", payload)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
