"""Overhead: what a growsearch trial costs besides training, and how fast training itself is.

1. Trial overhead. The shipped example study (``studies/digits.yaml``: default settings) runs
   for real through ``run_worker`` on SQLite, with every phase of the worker timed by an
   exclusive-time profiler (``benchmarks/_profile.py``): training (``train`` without its epoch
   callback), checkpoint load and save, transform, model building, preservation check, lineage
   store, Optuna user attributes, dashboard note/artifact/lineage figure, Optuna reporting and
   sampling, and the rest (Optuna's own trial bookkeeping, the worker loop). Overhead share =
   everything but training / the run without its one-off setup (target <= 3%). When trials carry a
   ``timings`` user attribute (growsearch's own per-phase timings) they are summarised too.
2. Throughput. ``growsearch.training.train`` against a plain hand-written PyTorch loop on the same
   model, data, optimiser and batch size, interleaved, several repetitions; samples per second of
   the training loop only (target >= 0.95x).

    python -m benchmarks.overhead --quick
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F

from benchmarks import _common as common
from benchmarks._data import IDX_HELP, load
from benchmarks._profile import OTHER, SETUP, TRAINING, PhaseProfiler, instrument_worker
from benchmarks.seed_experiment import teacher_spec
from growsearch.builder import build_model
from growsearch.config import StudyConfig, load_config, parse_config
from growsearch.data import Dataset, DeviceData
from growsearch.search._optuna import quiet_optuna
from growsearch.search._progress import Reporter
from growsearch.search._worker import run_worker
from growsearch.spec import Spec
from growsearch.training import TrainConfig, make_optimizer, train

__all__ = ["PlainLoop", "Setup", "header", "report", "run", "study_overhead", "throughput"]

NAME = "overhead"
SHARE_TARGET = 0.03
THROUGHPUT_TARGET = 0.95
STUDY_YAML = Path(__file__).resolve().parents[1] / "studies" / "digits.yaml"


@dataclass(frozen=True)
class Setup:
    study_runs: int = 3  # repetitions of the whole study (seeds 0, 1, ...)
    n_trials: int | None = None  # None: the study's own n_trials
    throughput_pairs: int = 30  # epochs of each loop, alternating
    throughput_warmup: int = 2
    device: str = "cpu"
    amp: str = "none"
    idx_dataset: str | None = None  # also run the study on this IDX dataset (larger trials)
    idx_root: str | None = None
    max_train: int | None = None


# ---- 1. trial overhead --------------------------------------------------------------------------
def _study_for(
    base: StudyConfig, ds: Dataset, folder: Path, seed: int, setup: Setup
) -> StudyConfig:
    raw = base.to_dict()
    raw.update(
        name=f"bench-overhead-{seed}",
        storage=f"sqlite:///{folder / 'overhead.db'}",
        checkpoint_dir=str(folder / "checkpoints"),
        seed=seed,
    )
    if setup.n_trials is not None:
        raw["n_trials"] = setup.n_trials
    raw["train"] = dict(raw["train"], device=setup.device, amp=setup.amp)
    raw["model"] = dict(raw["model"], input_shape=list(ds.input_shape))
    if ds.name != "digits":  # run_worker gets the loaded dataset; the config names it
        raw["data"] = dict(raw["data"], dataset=ds.name, root=setup.idx_root)
    return parse_config(raw)


def study_overhead(base: StudyConfig, ds: Dataset, seed: int, setup: Setup) -> dict[str, Any]:
    """One instrumented run of the study; seconds per phase and the overhead shares."""
    quiet_optuna()
    prof = PhaseProfiler()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _study_for(base, ds, Path(tmp), seed, setup)
        with instrument_worker(prof) as wrapped:
            t0 = time.perf_counter()
            with prof.phase(OTHER):
                summary = run_worker(cfg, reporter=Reporter(cfg.n_trials, quiet=True), dataset=ds)
            wall = time.perf_counter() - t0
        storage = optuna.storages.RDBStorage(cfg.storage)
        trials = optuna.load_study(study_name=cfg.name, storage=storage).get_trials()
        reported = [t.user_attrs["timings"] for t in trials if "timings" in t.user_attrs]
        storage.remove_session()
        storage.engine.dispose()
    seconds = dict(sorted(prof.seconds.items(), key=lambda kv: -kv[1]))
    setup_s = seconds.get(SETUP, 0.0)
    train_s = seconds.get(TRAINING, 0.0)
    loop = wall - setup_s
    return {
        "seed": seed,
        "load_average_at_end": common.load_average(),
        "wall_seconds": wall,
        "trials_started": summary.started,
        "trials_completed": summary.completed,
        "seconds_by_phase": seconds,
        "calls_by_phase": prof.calls,
        "accounted_seconds": sum(seconds.values()),
        "overhead_share": (loop - train_s) / loop,
        "overhead_share_with_setup": (wall - train_s) / wall,
        "overhead_seconds_per_trial": (loop - train_s) / max(summary.started, 1),
        "training_seconds_per_trial": train_s / max(summary.started, 1),
        "wrapped": wrapped,
        "reported_timings": reported,
    }


def _summarise_study(runs: list[dict[str, Any]]) -> dict[str, Any]:
    phases = sorted({p for r in runs for p in r["seconds_by_phase"]})
    per_trial = {
        p: statistics.median(
            r["seconds_by_phase"].get(p, 0.0) / max(r["trials_started"], 1) for r in runs
        )
        for p in phases
    }
    return {
        "median_overhead_share": statistics.median(r["overhead_share"] for r in runs),
        "median_overhead_share_with_setup": statistics.median(
            r["overhead_share_with_setup"] for r in runs
        ),
        "per_run_overhead_share": [r["overhead_share"] for r in runs],
        "median_seconds_per_trial_by_phase": dict(sorted(per_trial.items(), key=lambda kv: -kv[1])),
        "median_training_seconds_per_trial": statistics.median(
            r["training_seconds_per_trial"] for r in runs
        ),
        "median_overhead_seconds_per_trial": statistics.median(
            r["overhead_seconds_per_trial"] for r in runs
        ),
        "meets_target": statistics.median(r["overhead_share"] for r in runs) <= SHARE_TARGET,
        "growsearch_timings": _summarise_timings([t for r in runs for t in r["reported_timings"]]),
    }


def _summarise_timings(timings: list[dict[str, float]]) -> dict[str, Any] | None:
    """growsearch's own per-trial ``timings`` (objective only: without Optuna's trial creation
    and completion or the worker loop), when the trials carry them."""
    if not timings:
        return None
    total = sum(t.get("total", 0.0) for t in timings)
    training = sum(t.get("training", 0.0) for t in timings)
    phases = sorted({k for t in timings for k in t} - {"total", "overhead"})
    return {
        "trials": len(timings),
        "overhead_share_of_summed_trials": (total - training) / total if total > 0 else None,
        "median_trial_overhead_share": statistics.median(t.get("overhead", 0.0) for t in timings),
        "median_seconds_by_phase": {
            p: statistics.median(t.get(p, 0.0) for t in timings) for p in phases
        },
    }


# ---- 2. throughput ------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainLoop:
    """The loop a user writes by hand: tensors on the device, a permutation per epoch, slices,
    SGD with momentum, one host sync per epoch (as growsearch's loop)."""

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        lr: float,
        momentum: float,
        amp: str,
        seed: int,
    ) -> None:
        self.model = model.to(x.device)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.amp = amp
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        self.gen = torch.Generator(device=x.device).manual_seed(seed)
        n = int(x.shape[0])
        self.stop = n - 1 if batch_size > 1 and n % batch_size == 1 else n  # no 1-sample batch

    def epoch(self) -> float:
        """Train one epoch; returns samples per second."""
        device = self.x.device
        self.model.train()
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(int(self.x.shape[0]), generator=self.gen, device=device)
        total = torch.zeros((), device=device)
        seen = 0
        for start in range(0, self.stop, self.batch_size):
            idx = perm[start : start + self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16"):
                loss = F.cross_entropy(self.model(xb), yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach()
            seen += int(xb.shape[0])
        float(total)  # the epoch's one host sync
        return seen / (time.perf_counter() - t0)


def throughput(spec: Spec, ds: Dataset, setup: Setup, batch_size: int) -> dict[str, Any]:
    """growsearch's ``train`` vs ``PlainLoop`` on the same initial weights, data, optimiser and
    batch size. The two alternate epoch by epoch (who goes first alternates too), so a busy spell
    of this shared machine hits both alike; the figure is the median of the per-pair ratios."""
    device = torch.device(setup.device)
    data = DeviceData(ds, device, batch_size)
    cfg = TrainConfig(lr=0.05, momentum=0.9, amp=setup.amp, device=setup.device)
    gs_model = build_model(spec, seed=0).to(device)
    gs_opt = make_optimizer(gs_model, cfg)
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    plain = PlainLoop(
        build_model(spec, seed=0),
        x,
        y,
        batch_size=batch_size,
        lr=0.05,
        momentum=0.9,
        amp=setup.amp,
        seed=0,
    )

    def gs_epoch(i: int) -> float:
        r = train(gs_model, data, cfg, epochs=1, optimizer=gs_opt, generator_seed=i)
        return r.samples_per_second

    for i in range(setup.throughput_warmup):  # allocator, kernels, thread pools
        gs_epoch(i)
        plain.epoch()
    gs, pl = [], []
    for i in range(setup.throughput_pairs):
        if i % 2 == 0:
            gs.append(gs_epoch(i))
            pl.append(plain.epoch())
        else:
            pl.append(plain.epoch())
            gs.append(gs_epoch(i))
    ratios = [g / p for g, p in zip(gs, pl, strict=True)]
    return {
        "model": spec.summary(),
        "params": spec.num_params,
        "batch_size": batch_size,
        "samples_per_epoch": data.samples_per_epoch,
        "pairs": setup.throughput_pairs,
        "growsearch_samples_per_s": gs,
        "plain_samples_per_s": pl,
        "median_growsearch": statistics.median(gs),
        "median_plain": statistics.median(pl),
        "median_ratio": statistics.median(ratios),
        # timeit's estimator: the fastest epoch of each, least touched by other processes
        "best_epoch_ratio": max(gs) / max(pl),
        "ratio_quartiles": [float(q) for q in statistics.quantiles(ratios, n=4)],
        "per_pair_ratio": ratios,
        "meets_target": statistics.median(ratios) >= THROUGHPUT_TARGET,
    }


# ---- the run ------------------------------------------------------------------------------------
def plot(result: dict[str, Any], path: Path, title: str) -> Path:
    plt = common.plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    studies = result["studies"]
    names = list(studies)
    phases = sorted(
        {p for s in studies.values() for p in s["summary"]["median_seconds_per_trial_by_phase"]},
    )
    phases = [TRAINING] + [p for p in phases if p not in (TRAINING, SETUP)]
    bottom = [0.0] * len(names)
    cmap = plt.get_cmap("tab20")
    for i, phase in enumerate(phases):
        vals = []
        for n in names:
            per = studies[n]["summary"]["median_seconds_per_trial_by_phase"]
            vals.append(per.get(phase, 0.0) * 1000)
        ax1.barh(names, vals, left=bottom, label=phase, color=cmap(i))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for j, n in enumerate(names):
        share = studies[n]["summary"]["median_overhead_share"]
        ax1.text(bottom[j], j, f"  overhead {share:.1%}", va="center", fontsize=8)
    ax1.set_xlabel("milliseconds per trial (median over runs; one-off setup excluded)")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    ax1.set_xlim(0, max(bottom) * 1.35)
    tp = result["throughput"]
    labels = []
    for k, (name, t) in enumerate(tp.items()):
        ax2.scatter(
            [k] * len(t["per_pair_ratio"]), t["per_pair_ratio"], color="tab:blue", s=8, alpha=0.5
        )
        ax2.scatter([k], [t["median_ratio"]], color="tab:red", marker="_", s=400)
        labels.append(f"{name}\n{t['params']:,} params")
    ax2.axhline(THROUGHPUT_TARGET, ls="--", color="tab:gray", lw=0.8)
    ax2.axhline(1.0, color="black", lw=0.5)
    ax2.set_xticks(range(len(tp)), labels, fontsize=8)
    ax2.set_ylabel("growsearch train / plain loop (samples/s)")
    ax2.set_title("throughput ratio per alternating epoch pair (red: median)", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(setup: Setup, out: Path, tag: str = NAME, log: Any = print) -> dict[str, Any]:
    base = load_config(STUDY_YAML)
    datasets = {"digits (studies/digits.yaml)": load("digits", batch_size=base.data.batch_size)}
    if setup.idx_dataset is not None:
        datasets[f"{setup.idx_dataset} (same study, 28x28 input)"] = load(
            setup.idx_dataset,
            setup.idx_root,
            batch_size=base.data.batch_size,
            max_train=setup.max_train,
            max_val=None if setup.max_train is None else max(setup.max_train // 4, 1),
        )
    studies: dict[str, Any] = {}
    for label, ds in datasets.items():
        runs = []
        for seed in range(setup.study_runs):
            r = study_overhead(base, ds, seed, setup)
            runs.append(r)
            log(
                f"{label} seed {seed}: {r['trials_started']} trials in {r['wall_seconds']:.1f}s, "
                f"overhead {r['overhead_share']:.1%} of the trial loop "
                f"({r['overhead_seconds_per_trial'] * 1000:.0f} ms/trial outside training, "
                f"{r['training_seconds_per_trial'] * 1000:.0f} ms training)"
            )
        studies[label] = {"runs": runs, "summary": _summarise_study(runs), "samples": ds.num_train}
    models = {
        "digits seed CNN": (base.model, datasets["digits (studies/digits.yaml)"]),
        "digits teacher CNN 64/128/128": (
            teacher_spec((1, 8, 8), (64, 128, 128), 10),
            datasets["digits (studies/digits.yaml)"],
        ),
    }
    tput = {}
    for name, (spec, ds) in models.items():
        t = throughput(spec, ds, setup, base.data.batch_size)
        tput[name] = t
        log(
            f"throughput {name}: growsearch {t['median_growsearch']:,.0f} vs plain "
            f"{t['median_plain']:,.0f} samples/s, median ratio {t['median_ratio']:.3f}"
        )
    result: dict[str, Any] = {"setup": asdict(setup), "studies": studies, "throughput": tput}
    result["plot"] = str(
        plot(
            result,
            out / f"{tag}.png",
            f"growsearch overhead ({setup.device}, amp {setup.amp}): time per trial by phase, "
            f"and training throughput vs a plain PyTorch loop",
        )
    )
    return result


QUICK = Setup()
FULL = Setup(study_runs=5, throughput_pairs=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument(
        "--idx-root",
        default=None,
        help=IDX_HELP + " Adds a run of the same "
        "study on that data (bigger trials), to show how the share scales.",
    )
    parser.add_argument("--idx-dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="subsample the IDX training split (e.g. 6000 on 2 cores)",
    )
    args = parser.parse_args(argv)
    out = common.out_dir(NAME, args.out)
    setup = FULL if args.mode == "full" else QUICK
    if args.idx_root is not None:
        setup = replace(
            setup, idx_dataset=args.idx_dataset, idx_root=args.idx_root, max_train=args.max_train
        )
    payload = header(argv, args.mode)
    payload["result"] = run(setup, out)
    path = common.save_json(out / f"{NAME}.json", payload)
    print(f"\nwrote {path}")
    report(payload["result"])
    return 0


def header(argv: Sequence[str] | None, mode: str, name: str = NAME) -> dict[str, Any]:
    return {
        "benchmark": name,
        "command": common.command_line(name, argv),
        "mode": mode,
        "date": common.stamp(),
        "machine": common.machine(),
        "targets": {
            "overhead_share": f"<= {SHARE_TARGET}",
            "throughput_ratio": f">= {THROUGHPUT_TARGET}",
        },
    }


def report(result: dict[str, Any]) -> None:
    for label, s in result["studies"].items():
        sm = s["summary"]
        print(
            f"{label}: overhead {sm['median_overhead_share']:.1%} of the trial loop "
            f"(target <= {SHARE_TARGET:.0%}: {'met' if sm['meets_target'] else 'MISSED'})"
        )
        own = sm["growsearch_timings"]
        if own is not None:
            print(
                f"  growsearch's own `timings` attribute: "
                f"{own['overhead_share_of_summed_trials']:.1%} of the objective's time"
            )
    for name, t in result["throughput"].items():
        print(
            f"throughput {name}: {t['median_ratio']:.3f}x a plain loop (target >= "
            f"{THROUGHPUT_TARGET}: {'met' if t['meets_target'] else 'MISSED'})"
        )


if __name__ == "__main__":
    sys.exit(main())
