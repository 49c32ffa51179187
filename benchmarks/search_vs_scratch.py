"""Search vs scratch: growsearch against the Optuna study a user would write instead.

Both searches get the same budget: ``n_trials`` COMPLETE trials of ``epochs`` epochs each, the
same data, optimiser, sampler (TPE, same seed) and pruner (median). growsearch runs a real study
(``run_worker`` on SQLite): trial 0 trains the seed CNN, every later trial grows the best model
(widen or deepen, exact) and trains it ``epochs`` more epochs. The scratch study samples an
architecture from the same width/depth space (first conv width, extra conv layers, hidden dense
width, extra dense layers, within growsearch's parameter and depth limits) and trains it from
random weights for ``epochs`` epochs.

Compute is what was trained, pruned trials included, three ways: seconds measured during the
searches; calibrated CPU seconds (every architecture re-timed for one epoch on one thread after
both searches, so other processes on a shared machine cost nothing: the headline); and FLOPs (3x
forward per training sample, 1x per validation sample). Reported per seed: best accuracy against
cumulative compute, and the compute growsearch needs to reach the scratch search's best accuracy
divided by the compute the scratch search needed to find it (target <= 1/3).

    python -m benchmarks.search_vs_scratch --quick
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from benchmarks import _common as common
from benchmarks._data import IDX_HELP, load
from growsearch.builder import build_model
from growsearch.config import StudyConfig, parse_config
from growsearch.data import Dataset, DeviceData
from growsearch.search._optuna import make_pruner, make_sampler, quiet_optuna
from growsearch.search._progress import Reporter
from growsearch.search._worker import run_worker
from growsearch.spec import Spec
from growsearch.store import SQLLineageStore
from growsearch.training import EpochResult, TrainConfig, train

__all__ = ["Setup", "Timeline", "reach_ratio", "run", "run_growsearch", "run_scratch"]

NAME = "search_vs_scratch"
TARGET = 1 / 3

# The seed architecture (studies/digits.yaml's) and the bounds of the space both searches cover.
SEED_CONV, SEED_DENSE = 8, 32
MAX_CONV, MAX_DENSE, MAX_EXTRA = 64, 256, 2


@dataclass(frozen=True)
class Setup:
    dataset: str = "digits"
    idx_root: str | None = None
    max_train: int | None = None
    max_val: int | None = None
    n_trials: int = 12
    epochs: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 32
    lr: float = 0.05


@dataclass
class Timeline:
    """One search, trial by trial (in the order they ran)."""

    accuracy: list[float | None] = field(default_factory=list)  # None: not COMPLETE
    epochs: list[int] = field(default_factory=list)  # epochs trained (fewer when pruned)
    seconds: list[float] = field(default_factory=list)  # training seconds, as measured then
    flops: list[float] = field(default_factory=list)  # training FLOPs
    specs: list[str] = field(default_factory=list)  # spec JSON
    labels: list[str] = field(default_factory=list)
    # epochs x the architecture's one-thread CPU seconds per epoch, re-timed after both searches
    calibrated: list[float] = field(default_factory=list)

    def add(
        self, acc: float | None, epochs: int, seconds: float, spec: Spec, label: str, flops: float
    ) -> None:
        self.accuracy.append(acc)
        self.epochs.append(epochs)
        self.seconds.append(seconds)
        self.flops.append(flops)
        self.specs.append(spec.to_json())
        self.labels.append(label)

    def curve(self, unit: str) -> tuple[list[float], list[float]]:
        """(cumulative compute, best COMPLETE accuracy so far), one point per trial; ``unit`` is
        seconds, calibrated or flops."""
        cost = {"seconds": self.seconds, "calibrated": self.calibrated, "flops": self.flops}[unit]
        xs, ys, total, best = [], [], 0.0, -math.inf
        for acc, c in zip(self.accuracy, cost, strict=True):
            total += c
            if acc is not None:
                best = max(best, acc)
            xs.append(total)
            ys.append(best)
        return xs, ys

    @property
    def best(self) -> float:
        return max((a for a in self.accuracy if a is not None), default=math.nan)


def _train_flops(spec: Spec, ds: Dataset, epochs: int) -> float:
    return float(epochs * spec.flops * (3 * ds.num_train + ds.num_val))


def seed_model_dict(input_shape: Sequence[int], classes: int) -> dict[str, Any]:
    return {
        "input_shape": list(input_shape),
        "layers": [
            {
                "type": "conv",
                "out": SEED_CONV,
                "kernel": 3,
                "batchnorm": True,
                "activation": "relu",
            },
            {"type": "maxpool", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "out": SEED_DENSE, "activation": "relu"},
            {"type": "dense", "out": classes},
        ],
    }


def scratch_spec(
    input_shape: Sequence[int],
    classes: int,
    conv: int,
    extra_conv: int,
    kernel: int,
    dense: int,
    extra_dense: int,
) -> Spec:
    """A point of the scratch space: the seed's layout with the widths and the extra layers a
    growsearch deepen would insert (same width and activation, no batchnorm)."""
    layers: list[dict[str, Any]] = [
        {"type": "conv", "out": conv, "kernel": 3, "batchnorm": True, "activation": "relu"}
    ]
    layers += [{"type": "conv", "out": conv, "kernel": kernel, "activation": "relu"}] * extra_conv
    layers += [{"type": "maxpool", "size": 2}, {"type": "flatten"}]
    layers += [{"type": "dense", "out": dense, "activation": "relu"}] * (1 + extra_dense)
    layers += [{"type": "dense", "out": classes}]
    return Spec.from_dict({"input_shape": list(input_shape), "layers": layers})


def study_config(setup: Setup, ds: Dataset, seed: int, folder: Path) -> StudyConfig:
    largest = scratch_spec(
        ds.input_shape, ds.num_classes, MAX_CONV, MAX_EXTRA, 3, MAX_DENSE, MAX_EXTRA
    )
    seed_spec = Spec.from_dict(seed_model_dict(ds.input_shape, ds.num_classes))
    return parse_config(
        {
            "name": f"bench-grow-{seed}",
            "storage": f"sqlite:///{folder / f'grow-{seed}.db'}",
            "n_trials": setup.n_trials,
            "seed": seed,
            "data": {"dataset": setup.dataset, "batch_size": setup.batch_size},
            "model": seed_model_dict(ds.input_shape, ds.num_classes),
            "train": {
                "epochs_per_trial": setup.epochs,
                "optimizer": "sgd",
                "lr": setup.lr,
                "device": "cpu",
            },
            "search": {
                "operations": ["widen", "deepen"],
                "parent": "best",
                "max_params": largest.num_params,
                "max_depth": seed_spec.depth + 2 * MAX_EXTRA,
            },
            "checkpoint_dir": str(folder / "checkpoints"),
            # The worker's default (10) counts pruned trials as failures and can stop a study
            # before it has its n_trials COMPLETE trials; the budget must be the same for both.
            "workers": {"max_consecutive_failures": 10 * setup.n_trials},
        }
    )


def run_growsearch(setup: Setup, ds: Dataset, seed: int, folder: Path) -> Timeline:
    quiet_optuna()
    cfg = study_config(setup, ds, seed, folder)
    run_worker(cfg, device="cpu", reporter=Reporter(cfg.n_trials, quiet=True), dataset=ds)
    timeline = Timeline()
    with SQLLineageStore(cfg.storage, create=False) as store:
        for m in store.models(cfg.name):
            evals = store.evaluations(m.model_id)
            spec = Spec.from_dict(m.spec)
            timeline.add(
                m.val_accuracy if m.status == "finished" else None,
                len(evals),
                sum(e.seconds or 0.0 for e in evals),
                spec,
                f"{m.operation}: {spec.summary()}",
                _train_flops(spec, ds, len(evals)),
            )
    return timeline


def run_scratch(setup: Setup, ds: Dataset, seed: int, folder: Path) -> Timeline:
    """The Optuna study a user would write: sample an architecture, train it from scratch."""
    quiet_optuna()
    cfg = study_config(setup, ds, seed, folder)  # same sampler, pruner and training settings
    data = DeviceData(ds, torch.device("cpu"), setup.batch_size)
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(cfg), pruner=make_pruner(cfg)
    )
    timeline = Timeline()

    def objective(trial: optuna.Trial) -> float:
        spec = scratch_spec(
            ds.input_shape,
            ds.num_classes,
            trial.suggest_int("conv_width", SEED_CONV, MAX_CONV, log=True),
            trial.suggest_int("extra_conv", 0, MAX_EXTRA),
            trial.suggest_categorical("extra_conv_kernel", list(cfg.search.deepen_kernels)),
            trial.suggest_int("dense_width", SEED_DENSE, MAX_DENSE, log=True),
            trial.suggest_int("extra_dense", 0, MAX_EXTRA),
        )
        epochs: list[EpochResult] = []

        def on_epoch(r: EpochResult) -> None:
            epochs.append(r)
            trial.report(r.val_accuracy, r.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        order = cfg.seed * 100_003 + trial.number  # the same scheme growsearch's trials use
        model = build_model(spec, seed=order)
        acc: float | None = None
        try:
            result = train(
                model, data, cfg.train, epochs=setup.epochs, generator_seed=order, on_epoch=on_epoch
            )
            acc = result.final.val_accuracy
        finally:
            seconds = sum(e.seconds for e in epochs)
            flops = _train_flops(spec, ds, len(epochs))
            timeline.add(acc, len(epochs), seconds, spec, spec.summary(), flops)
        return acc

    def stop(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(done) >= setup.n_trials:
            study.stop()

    study.optimize(objective, n_trials=setup.n_trials * 5, callbacks=[stop])
    return timeline


def calibrate(timelines: list[Timeline], ds: Dataset, setup: Setup, rounds: int = 3) -> None:
    """Fill ``calibrated``: every architecture either search trained is re-timed for one epoch
    (training and validation) in CPU seconds of this process on one thread, the fastest of
    ``rounds`` round-robin passes; each trial is charged its epochs x that. CPU time does not
    count the time other processes of this shared machine hold the cores, and one thread spins
    on no barrier, so the figure is the architecture's own cost, comparable between searches."""
    data = DeviceData(ds, torch.device("cpu"), setup.batch_size)
    cfg = TrainConfig(optimizer="sgd", lr=setup.lr, device="cpu")
    specs = sorted({s for tl in timelines for s in tl.specs})
    times: dict[str, list[float]] = {s: [] for s in specs}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r in range(rounds):
            for text in specs if r % 2 == 0 else reversed(specs):
                model = build_model(Spec.from_json(text), seed=r)
                t0 = time.process_time()
                train(model, data, cfg, epochs=1)
                times[text].append(time.process_time() - t0)
    finally:
        torch.set_num_threads(threads)
    epoch_s = {s: min(t) for s, t in times.items()}
    for tl in timelines:
        tl.calibrated = [n * epoch_s[s] for n, s in zip(tl.epochs, tl.specs, strict=True)]


def _reach(timeline: Timeline, unit: str, level: float) -> float:
    for x, y in zip(*timeline.curve(unit), strict=True):
        if y >= level:
            return x
    return math.inf


def reach_ratio(grow: Timeline, scratch: Timeline, unit: str) -> dict[str, float]:
    """Compute growsearch needs to reach the scratch search's best accuracy, over the compute the
    scratch search needed to find it (and over its whole budget)."""
    level = scratch.best
    g = _reach(grow, unit, level)
    s = _reach(scratch, unit, level)
    return {
        "level": level,
        "growsearch": g,
        "scratch": s,
        "ratio": g / s,
        "ratio_to_scratch_budget": g / scratch.curve(unit)[0][-1],
    }


UNITS = {
    "calibrated": "cumulative training CPU seconds (1 thread, re-timed after the searches)",
    "seconds": "cumulative training seconds (as measured during the search)",
    "flops": "cumulative training FLOPs (3x fwd per train sample, 1x per val sample)",
}


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = common.plt()
    fig, axes = plt.subplots(1, len(UNITS), figsize=(16, 4.4), sharey=True)
    colours = {"growsearch": "tab:blue", "scratch": "tab:gray"}
    first = result["per_seed"][0]["seed"]
    for ax, (unit, xlabel) in zip(axes, UNITS.items(), strict=True):
        for run in result["per_seed"]:
            for method in ("growsearch", "scratch"):
                xs, ys = Timeline(**run[method]).curve(unit)
                pts = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
                ax.step(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    where="post",
                    color=colours[method],
                    alpha=0.8,
                    label=method if run["seed"] == first else None,
                    marker=".",
                    ms=4,
                )
        ax.set_xlabel(xlabel, fontsize=9)
        if unit == "flops":  # growsearch's models are 10-100x cheaper: a log axis shows both
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        ratio = result["summary"][unit]["median_ratio"]
        ax.set_title(f"median compute ratio to reach scratch's best: {_fmt(ratio)}", fontsize=9)
    axes[0].set_ylabel("best validation accuracy so far")
    s = result["setup"]
    fig.suptitle(
        f"growsearch vs from-scratch Optuna search on {s['dataset']}: "
        f"{s['n_trials']} complete trials x {s['epochs']} epochs each, "
        f"{len(result['per_seed'])} seeds (one line per seed)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(r: float | None) -> str:
    return "never" if r is None or not math.isfinite(r) else f"{r:.2f}"


def run(setup: Setup, out: Path, log: Any = print) -> dict[str, Any]:
    ds = load(
        setup.dataset,
        setup.idx_root,
        seed=0,
        batch_size=setup.batch_size,
        max_train=setup.max_train,
        max_val=setup.max_val,
    )
    pairs = []
    for seed in setup.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            grow = run_growsearch(setup, ds, seed, Path(tmp))
            scratch = run_scratch(setup, ds, seed, Path(tmp))
        log(
            f"seed {seed}: best growsearch {grow.best:.4f} ({len(grow.accuracy)} trials), "
            f"scratch {scratch.best:.4f} ({len(scratch.accuracy)} trials)"
        )
        pairs.append((seed, grow, scratch))
    calibrate([tl for _, g, s in pairs for tl in (g, s)], ds, setup)
    per_seed = []
    for seed, grow, scratch in pairs:
        ratios = {u: reach_ratio(grow, scratch, u) for u in UNITS}
        per_seed.append(
            {"seed": seed, "growsearch": asdict(grow), "scratch": asdict(scratch), "ratios": ratios}
        )
        log(
            f"seed {seed}: compute growsearch needs to reach {scratch.best:.4f} / scratch's: "
            + ", ".join(f"{_fmt(ratios[u]['ratio'])} ({u})" for u in UNITS)
        )
    summary: dict[str, Any] = {
        unit: {
            "median_ratio": common.median([e["ratios"][unit]["ratio"] for e in per_seed]),
            "per_seed_ratio": [e["ratios"][unit]["ratio"] for e in per_seed],
            "median_ratio_to_scratch_budget": common.median(
                [e["ratios"][unit]["ratio_to_scratch_budget"] for e in per_seed]
            ),
            "total_growsearch": [sum(e["growsearch"][unit]) for e in per_seed],
            "total_scratch": [sum(e["scratch"][unit]) for e in per_seed],
        }
        for unit in UNITS
    }
    summary["best_growsearch"] = [Timeline(**e["growsearch"]).best for e in per_seed]
    summary["best_scratch"] = [Timeline(**e["scratch"]).best for e in per_seed]
    summary["meets_target"] = summary["calibrated"]["median_ratio"] <= TARGET
    result: dict[str, Any] = {
        "setup": asdict(setup),
        "samples": {"train": ds.num_train, "val": ds.num_val},
        "per_seed": per_seed,
        "summary": summary,
    }
    result["plot"] = str(plot(result, out / f"{NAME}_{setup.dataset}.png"))
    return result


QUICK = Setup()
FULL = Setup(n_trials=30, epochs=3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=("digits", "mnist", "fashion_mnist"))
    parser.add_argument("--idx-root", default=None, help=IDX_HELP)
    parser.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="subsample the training split (IDX data on 2 cores: e.g. 6000)",
    )
    parser.add_argument("--max-val", type=int, default=None)
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redraw the PNG from the JSON in the output folder (no training)",
    )
    args = parser.parse_args(argv)
    out = common.out_dir(NAME, args.out)
    if args.replot:
        for path in sorted(out.glob(f"{NAME}_*.json")):
            print(
                f"redrew {plot(json.loads(path.read_text())['result'], path.with_suffix('.png'))}"
            )
        return 0
    setup = replace(
        FULL if args.mode == "full" else QUICK,
        dataset=args.dataset,
        idx_root=args.idx_root,
        max_train=args.max_train,
        max_val=args.max_val,
    )
    payload = {
        "benchmark": NAME,
        "command": common.command_line(NAME, argv),
        "mode": args.mode,
        "date": common.stamp(),
        "machine": common.machine(),
        "target": f"growsearch compute to reach the scratch search's best <= {TARGET:.3f} of "
        "the scratch search's compute to find it",
    }
    payload["result"] = run(setup, out)
    path = common.save_json(out / f"{NAME}_{setup.dataset}.json", payload)
    s = payload["result"]["summary"]
    print(f"\nwrote {path}")
    print(
        "median compute ratio: "
        + ", ".join(f"{_fmt(s[u]['median_ratio'])} ({u})" for u in UNITS)
        + f"; target <= {TARGET:.3f} (calibrated seconds): "
        + ("met" if s["meets_target"] else "MISSED")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
