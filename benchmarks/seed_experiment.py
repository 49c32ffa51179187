"""The seed experiment: Net2Net's own ablation, teacher -> wider / deeper student.

A teacher CNN (conv w1 -> maxpool -> conv w2 -> maxpool -> dense w3 -> dense classes; the
article's widths are 64, 128, 128) trains for one epoch with SGD. Then:

- wider student: conv1, conv2 and the hidden dense layer are twice as wide. Arms: ``net2wider``
  (growsearch ``widen``, exact), ``random-pad`` (teacher weights kept, new units drawn from
  N(0, 0.1^2), biases 0.1) and ``scratch`` (the same architecture freshly initialised).
- deeper student: an extra dense layer (width w3, ReLU) after the hidden dense layer. Arms:
  ``net2deeper`` (growsearch ``deepen``, the identity), ``random-pad`` (the inserted layer
  random, the rest from the teacher) and ``scratch``.

Every arm of a family has the same architecture, optimiser, epochs and data order (one batch
generator seed); only the initialisation differs. Reported: validation accuracy per epoch (epoch 0
is before any student training) and the epochs and seconds the Net2Net student needs to reach the
scratch student's final accuracy, as a fraction of the scratch student's (target <= 0.25).

    python -m benchmarks.seed_experiment --quick [--idx-root DIR --idx-dataset mnist]
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import _common as common
from benchmarks._data import IDX_HELP, load, write_synthetic_idx
from growsearch.builder import build_model
from growsearch.data import Dataset, DeviceData
from growsearch.preservation import check_preservation
from growsearch.spec import Spec
from growsearch.training import TrainConfig, evaluate, seed_everything, train
from growsearch.transforms import Operation, apply_operations

__all__ = ["ArmCurve", "Setup", "family_summary", "run", "run_setup", "teacher_spec"]

NAME = "seed_experiment"
TARGET = 0.25
ARMS = {
    "wider": {"net2wider": "net2net", "random-pad": "random-pad", "scratch": "random-init"},
    "deeper": {"net2deeper": "net2net", "random-pad": "random-pad", "scratch": "random-init"},
}
NET2NET_ARM = {"wider": "net2wider", "deeper": "net2deeper"}


@dataclass(frozen=True)
class Setup:
    dataset: str = "digits"  # digits | mnist | fashion_mnist
    idx_root: str | None = None
    label: str = ""  # shown in titles; "synthetic" marks a code-path-only run
    widths: tuple[int, int, int] = (64, 128, 128)  # conv1, conv2, hidden dense
    widen_factor: int = 2
    teacher_epochs: int = 1
    student_epochs: int = 8
    seeds: tuple[int, ...] = (0,)
    optimizer: str = "sgd"
    lr: float = 0.05  # growsearch's TrainConfig defaults, not tuned for this benchmark
    momentum: float = 0.9
    batch_size: int = 64
    max_train: int | None = None
    max_val: int | None = None
    is_result: bool = True  # False for the synthetic IDX folder


@dataclass
class ArmCurve:
    accuracy: list[float]  # epoch 0 (before student training) .. student_epochs
    seconds: list[float]  # cumulative training + validation seconds, 0 at epoch 0
    preservation_error: float | None = None  # net2net arms: max |student(x) - teacher(x)|


def teacher_spec(input_shape: Sequence[int], widths: Sequence[int], classes: int) -> Spec:
    w1, w2, w3 = widths
    return Spec.from_dict(
        {
            "input_shape": list(input_shape),
            "layers": [
                {"type": "conv", "name": "conv1", "out": w1, "kernel": 3, "activation": "relu"},
                {"type": "maxpool", "name": "pool1", "size": 2},
                {"type": "conv", "name": "conv2", "out": w2, "kernel": 3, "activation": "relu"},
                {"type": "maxpool", "name": "pool2", "size": 2},
                {"type": "flatten", "name": "flatten"},
                {"type": "dense", "name": "fc1", "out": w3, "activation": "relu"},
                {"type": "dense", "name": "out", "out": classes},
            ],
        }
    )


def _operations(family: str, setup: Setup) -> list[Operation]:
    if family == "wider":
        f = setup.widen_factor
        return [
            Operation("widen", name, {"width": width * f})
            for name, width in zip(("conv1", "conv2", "fc1"), setup.widths, strict=True)
        ]
    return [Operation("deepen", "fc1", {})]


def _curve(
    model: torch.nn.Module, data: DeviceData, cfg: TrainConfig, epochs: int, order_seed: int
) -> ArmCurve:
    acc0, _ = evaluate(model, data.val_batches(), data.device)
    result = train(model, data, cfg, epochs=epochs, generator_seed=order_seed)
    accuracy, seconds, total = [acc0], [0.0], 0.0
    for epoch in result.epochs:
        total += epoch.seconds
        accuracy.append(epoch.val_accuracy)
        seconds.append(total)
    return ArmCurve(accuracy, seconds)


def run_setup(setup: Setup, ds: Dataset, seed: int, log: Any = print) -> dict[str, Any]:
    """Teacher and every arm of both families for one seed."""
    device = torch.device("cpu")
    data = DeviceData(ds, device, setup.batch_size)
    cfg = TrainConfig(optimizer=setup.optimizer, lr=setup.lr, momentum=setup.momentum)
    seed_everything(seed)
    spec = teacher_spec(ds.input_shape, setup.widths, ds.num_classes)
    teacher = build_model(spec, seed=seed)
    t_result = train(teacher, data, cfg, epochs=setup.teacher_epochs, generator_seed=seed)
    teacher_acc = t_result.final.val_accuracy
    log(
        f"  seed {seed}: teacher {spec.summary()} val_acc {teacher_acc:.4f} "
        f"({t_result.seconds:.1f}s)"
    )
    state = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    probe = data.probe(256)
    out: dict[str, Any] = {
        "teacher": {
            "spec": spec.summary(),
            "val_accuracy": teacher_acc,
            "seconds": t_result.seconds,
            "params": spec.num_params,
        },
        "families": {},
    }
    order_seed = 1000 + seed  # the students' data order: the same for every arm
    for family, arms in ARMS.items():
        curves: dict[str, ArmCurve] = {}
        student_spec = ""
        for arm, init in arms.items():
            grow = apply_operations(
                spec, state, _operations(family, setup), np.random.default_rng([seed, 7]), init=init
            )
            student = build_model(grow.spec)
            student.load_state_dict(grow.state_dict, strict=True)
            error = None
            if init == "net2net":
                error = check_preservation(teacher, student, probe).max_abs_error
            curve = _curve(student, data, cfg, setup.student_epochs, order_seed)
            curve.preservation_error = error
            curves[arm] = curve
            student_spec = grow.spec.summary()
            log(
                f"    {family:6s} {arm:10s} acc "
                + " ".join(f"{a:.3f}" for a in curve.accuracy)
                + f" ({curve.seconds[-1]:.1f}s)"
            )
        out["families"][family] = {
            "student": student_spec,
            "curves": {arm: asdict(c) for arm, c in curves.items()},
            "summary": family_summary(family, curves, setup.teacher_epochs, t_result.seconds),
        }
    return out


def _reach(curve: ArmCurve, level: float) -> int | None:
    for epoch, acc in enumerate(curve.accuracy):
        if acc >= level:
            return epoch
    return None


def family_summary(
    family: str, curves: dict[str, ArmCurve], teacher_epochs: int, teacher_seconds: float
) -> dict[str, Any]:
    """Epochs and seconds each warm-started arm needs to reach the scratch arm's final accuracy,
    as fractions of the scratch arm's epochs and seconds (inf: never reached)."""
    scratch = curves["scratch"]
    level = scratch.accuracy[-1]
    epochs = len(scratch.accuracy) - 1
    total_s = scratch.seconds[-1]
    arms = {}
    for arm, curve in curves.items():
        if arm == "scratch":
            continue
        e = _reach(curve, level)
        arms[arm] = {
            "epochs_to_reach": e,
            "epoch_ratio": math.inf if e is None else e / epochs,
            "seconds_ratio": math.inf if e is None else curve.seconds[e] / total_s,
            # Charging the warm start with the teacher's own training too:
            "epoch_ratio_with_teacher": math.inf if e is None else (e + teacher_epochs) / epochs,
            "seconds_ratio_with_teacher": math.inf
            if e is None
            else (curve.seconds[e] + teacher_seconds) / total_s,
            "final_accuracy": curve.accuracy[-1],
        }
    return {
        "scratch_final_accuracy": level,
        "scratch_epochs": epochs,
        "scratch_seconds": total_s,
        "arms": arms,
        "net2net_arm": NET2NET_ARM[family],
    }


def _aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    agg: dict[str, Any] = {}
    for family in ARMS:
        sums = [s["families"][family]["summary"] for s in per_seed]
        arms: dict[str, Any] = {}
        for arm in sums[0]["arms"]:
            arms[arm] = {
                key: common.median([s["arms"][arm][key] for s in sums])
                for key in (
                    "epoch_ratio",
                    "seconds_ratio",
                    "epoch_ratio_with_teacher",
                    "seconds_ratio_with_teacher",
                    "final_accuracy",
                )
            }
            arms[arm]["per_seed_epoch_ratio"] = [s["arms"][arm]["epoch_ratio"] for s in sums]
        n2n = arms[NET2NET_ARM[family]]
        agg[family] = {
            "scratch_final_accuracy": common.median([s["scratch_final_accuracy"] for s in sums]),
            "arms": arms,
            "net2net_epoch_ratio": n2n["epoch_ratio"],
            "net2net_seconds_ratio": n2n["seconds_ratio"],
            "meets_target": n2n["epoch_ratio"] <= TARGET,
        }
    return agg


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = common.plt()
    setup = result["setup"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = {"scratch": "tab:gray", "random-pad": "tab:orange"}
    for ax, family in zip(axes, ARMS, strict=True):
        runs = [s["families"][family] for s in result["per_seed"]]
        for arm in ARMS[family]:
            acc = np.array([r["curves"][arm]["accuracy"] for r in runs])
            x = np.arange(acc.shape[1])
            colour = colours.get(arm, "tab:blue")
            ax.plot(x, np.median(acc, axis=0), marker="o", ms=3, label=arm, color=colour)
            if acc.shape[0] > 1:
                ax.fill_between(x, acc.min(axis=0), acc.max(axis=0), alpha=0.15, color=colour)
        level = result["summary"][family]["scratch_final_accuracy"]
        ax.axhline(level, ls="--", lw=0.8, color="tab:gray")
        ratio = result["summary"][family]["net2net_epoch_ratio"]
        ax.set_title(
            f"{family} student: {_short(runs[0]['student'])}\n"
            f"{NET2NET_ARM[family]} reaches scratch's final accuracy in "
            f"{_fmt_ratio(ratio)} of its epochs",
            fontsize=9,
        )
        ax.set_xlabel("student epoch (0 = before training)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("validation accuracy")
    note = "" if setup["is_result"] else "  [SYNTHETIC DATA: code path only, NOT A RESULT]"
    fig.suptitle(
        f"Seed experiment on {setup['label'] or setup['dataset']}{note}\nteacher "
        f"{_short(result['per_seed'][0]['teacher']['spec'])} (1 epoch), "
        f"{len(result['per_seed'])} seed(s): median and range",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(summary: str) -> str:
    """``conv64k3 -> maxpool -> ... -> dense10`` without the pooling and flatten steps."""
    parts = [p for p in summary.split(" -> ") if p not in ("maxpool", "flatten")]
    return " -> ".join(parts)


def _fmt_ratio(r: float | None) -> str:
    return "never" if r is None or not math.isfinite(r) else f"{r:.2f}"


def run(setup: Setup, out: Path, tag: str, log: Any = print) -> dict[str, Any]:
    """Run every seed of ``setup``; write ``<tag>.json`` and ``<tag>.png`` into ``out``."""
    ds = load(
        setup.dataset,
        setup.idx_root,
        seed=0,
        batch_size=setup.batch_size,
        max_train=setup.max_train,
        max_val=setup.max_val,
    )
    log(
        f"{tag}: {setup.label or setup.dataset}: {ds.num_train} train / {ds.num_val} val samples,"
        f" input {list(ds.input_shape)}"
    )
    per_seed = [run_setup(setup, ds, seed, log) for seed in setup.seeds]
    result: dict[str, Any] = {
        "setup": asdict(setup),
        "samples": {"train": ds.num_train, "val": ds.num_val},
        "per_seed": per_seed,
        "summary": _aggregate(per_seed),
    }
    result["plot"] = str(plot(result, out / f"{tag}.png"))
    return result


# ---- command line ------------------------------------------------------------------------------
QUICK_DIGITS = Setup(
    dataset="digits", label="digits (scikit-learn, 8x8)", seeds=(0, 1, 2), student_epochs=8
)
FULL_DIGITS = replace(QUICK_DIGITS, seeds=(0, 1, 2, 3, 4), student_epochs=12)
# Quick mode scales the IDX network down 4x (16/32/32 instead of 64/128/128) and subsamples the
# data, so that it runs in minutes on 2 CPU cores.
QUICK_IDX = Setup(widths=(16, 32, 32), student_epochs=8, seeds=(0,), max_train=6000, max_val=2000)
FULL_IDX = Setup(widths=(64, 128, 128), student_epochs=10, seeds=(0, 1, 2))


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument(
        "--idx-root",
        default=None,
        help=IDX_HELP + " Without it the IDX path "
        "runs on a synthetic folder written by the benchmark (not a result).",
    )
    parser.add_argument(
        "--idx-dataset",
        default="mnist",
        choices=("mnist", "fashion_mnist"),
        help="which dataset the files in --idx-root hold (default: mnist)",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redraw the PNGs from the JSON files in the output folder (no training)",
    )
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds (overrides the mode's)"
    )
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-idx", action="store_true")
    args = parser.parse_args(argv)
    out = common.out_dir(NAME, args.out)
    if args.replot:
        for path in sorted(out.glob(f"{NAME}_*.json")):
            print(
                f"redrew {plot(json.loads(path.read_text())['result'], path.with_suffix('.png'))}"
            )
        return 0
    full = args.mode == "full"
    header: dict[str, Any] = {
        "benchmark": NAME,
        "command": common.command_line(NAME, argv),
        "mode": args.mode,
        "date": common.stamp(),
        "machine": common.machine(),
        "target": f"net2net epochs to reach scratch final accuracy <= {TARGET} of scratch epochs",
    }
    jobs: list[tuple[Setup, str]] = []
    if not args.skip_digits:
        jobs.append((FULL_DIGITS if full else QUICK_DIGITS, f"{NAME}_digits"))
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_idx:
            idx = FULL_IDX if full else QUICK_IDX
            if args.idx_root is None:
                root = write_synthetic_idx(Path(tmp) / "synthetic_idx")
                label = "SYNTHETIC IDX folder (code path only)"
                setup = replace(
                    idx, dataset="mnist", idx_root=str(root), is_result=False, label=label
                )
                jobs.append((setup, f"{NAME}_synthetic_idx"))
            else:
                label = f"{args.idx_dataset} ({args.idx_root})"
                setup = replace(idx, dataset=args.idx_dataset, idx_root=args.idx_root, label=label)
                jobs.append((setup, f"{NAME}_{args.idx_dataset}"))
        if args.seeds:
            seeds = tuple(int(x) for x in args.seeds.split(","))
            jobs = [(replace(setup, seeds=seeds), tag) for setup, tag in jobs]
        for setup, tag in jobs:  # one JSON and one PNG per dataset
            result = run(setup, out, tag)
            path = common.save_json(out / f"{tag}.json", {**header, "result": result})
            print(f"wrote {path}")
            report(tag, result)
    return 0


def report(tag: str, r: dict[str, Any]) -> None:
    flag = "" if r["setup"]["is_result"] else "  (synthetic: not a result)"
    for family, s in r["summary"].items():
        print(
            f"{tag} {family:6s}: net2net reaches the scratch final accuracy "
            f"{s['scratch_final_accuracy']:.4f} in {_fmt_ratio(s['net2net_epoch_ratio'])} "
            f"of the epochs, {_fmt_ratio(s['net2net_seconds_ratio'])} of the seconds "
            f"(target <= {TARGET}: {'met' if s['meets_target'] else 'MISSED'}){flag}"
        )


if __name__ == "__main__":
    sys.exit(main())
