"""Smoke runs of every benchmark's code path at tiny sizes, with checks on the values they
produce. They prove the benchmarks work, not the figures: those are in benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

# The benchmarks package sits next to tests/ at the repository root, outside the installed
# distribution; plain `pytest` (unlike `python -m pytest`) does not put the root on sys.path.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _common as common  # noqa: E402
from benchmarks import gpu_overhead, lineage_scale, overhead, search_vs_scratch  # noqa: E402
from benchmarks import seed_experiment as seed_exp  # noqa: E402
from benchmarks._data import load, write_synthetic_idx  # noqa: E402
from benchmarks._profile import PhaseProfiler  # noqa: E402
from growsearch.config import load_config  # noqa: E402
from growsearch.store import SQLLineageStore  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: str | Path) -> bool:
    data = Path(path).read_bytes()
    return data.startswith(PNG_MAGIC) and len(data) > 1000


# ---- helpers ----------------------------------------------------------------------------------
def test_median_treats_inf_as_never_reached() -> None:
    assert common.median([0.5, math.inf, 0.25]) == 0.5
    assert common.median([math.inf, math.inf, 0.25]) == math.inf
    assert common.median([0.2, 0.4]) == pytest.approx(0.3)


def test_command_line_quotes_arguments() -> None:
    line = common.command_line("overhead", ["--out", "my dir", "--quick"])
    assert line == "python -m benchmarks.overhead --out 'my dir' --quick"


def test_phase_profiler_charges_only_the_innermost_phase() -> None:
    prof = PhaseProfiler()
    with prof.phase("outer"):
        sum(range(20_000))
        with prof.phase("inner"):
            sum(range(200_000))
    assert set(prof.seconds) == {"outer", "inner"}
    assert prof.seconds["inner"] > prof.seconds["outer"] > 0  # inner work is not outer's
    assert prof.calls == {"outer": 1, "inner": 1}


# ---- seed experiment ----------------------------------------------------------------------------
def test_family_summary_counts_epochs_and_seconds_to_reach_scratch() -> None:
    curves = {
        "scratch": seed_exp.ArmCurve([0.1, 0.5, 0.8, 0.9], [0.0, 1.0, 2.0, 4.0]),
        "net2wider": seed_exp.ArmCurve([0.7, 0.85, 0.9, 0.95], [0.0, 1.0, 3.0, 4.0]),
        "random-pad": seed_exp.ArmCurve([0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 2.0, 3.0]),
    }
    s = seed_exp.family_summary("wider", curves, teacher_epochs=1, teacher_seconds=1.0)
    n2n = s["arms"]["net2wider"]
    assert s["scratch_final_accuracy"] == 0.9
    assert n2n["epochs_to_reach"] == 2
    assert n2n["epoch_ratio"] == pytest.approx(2 / 3)
    assert n2n["seconds_ratio"] == pytest.approx(3 / 4)
    assert n2n["epoch_ratio_with_teacher"] == pytest.approx(1.0)
    assert n2n["seconds_ratio_with_teacher"] == pytest.approx(1.0)
    assert s["arms"]["random-pad"]["epochs_to_reach"] is None
    assert s["arms"]["random-pad"]["epoch_ratio"] == math.inf


TINY_SEED = seed_exp.Setup(
    widths=(4, 8, 8), student_epochs=2, seeds=(0,), max_train=240, max_val=80, batch_size=32
)


def test_seed_experiment_digits_smoke(tmp_path: Path) -> None:
    r = seed_exp.run(replace(TINY_SEED, dataset="digits"), tmp_path, "tiny", log=lambda _: None)
    assert _is_png(r["plot"])
    run0 = r["per_seed"][0]
    teacher_acc = run0["teacher"]["val_accuracy"]
    for family, n2n in seed_exp.NET2NET_ARM.items():
        fam = run0["families"][family]
        for arm, curve in fam["curves"].items():
            assert len(curve["accuracy"]) == 3  # epoch 0 and two student epochs
            assert all(0.0 <= a <= 1.0 for a in curve["accuracy"])
            assert curve["seconds"][0] == 0.0 and curve["seconds"][2] > curve["seconds"][1] > 0
            assert (curve["preservation_error"] is None) == (arm != n2n)
        # The Net2Net student starts as the teacher's exact function: same accuracy.
        assert fam["curves"][n2n]["preservation_error"] < 1e-5
        assert fam["curves"][n2n]["accuracy"][0] == pytest.approx(teacher_acc)
    assert run0["families"]["wider"]["student"].startswith("conv8k3 -> maxpool -> conv16k3")
    assert "dense8 -> dense8 -> dense10" in run0["families"]["deeper"]["student"]
    assert set(r["summary"]) == {"wider", "deeper"}
    json.dumps(r, default=str)  # everything in it is JSON data


def test_seed_experiment_runs_the_idx_path_on_a_synthetic_folder(tmp_path: Path) -> None:
    root = write_synthetic_idx(tmp_path / "idx", n_train=300, n_test=50)
    assert sorted(p.name for p in root.iterdir())[0] == "t10k-images-idx3-ubyte.gz"
    setup = replace(
        TINY_SEED, dataset="mnist", idx_root=str(root), is_result=False, student_epochs=1
    )
    r = seed_exp.run(setup, tmp_path, "synthetic", log=lambda _: None)
    assert r["samples"] == {"train": 240, "val": 60}  # 300 * 0.2 = 60 val < max_val 80
    assert r["per_seed"][0]["teacher"]["spec"].startswith("conv4k3")
    assert _is_png(tmp_path / "synthetic.png")


# ---- search vs scratch --------------------------------------------------------------------------
def test_reach_ratio_against_the_scratch_search() -> None:
    grow = search_vs_scratch.Timeline(
        accuracy=[0.5, None, 0.9],
        seconds=[1.0, 1.0, 1.0],
        flops=[1.0, 1.0, 1.0],
        calibrated=[2.0, 2.0, 2.0],
    )
    scratch = search_vs_scratch.Timeline(
        accuracy=[0.6, 0.85], seconds=[5.0, 5.0], flops=[10.0, 10.0], calibrated=[4.0, 4.0]
    )
    r = search_vs_scratch.reach_ratio(grow, scratch, "seconds")
    assert r["level"] == 0.85
    assert (r["growsearch"], r["scratch"], r["ratio"]) == (3.0, 10.0, 0.3)
    assert search_vs_scratch.reach_ratio(grow, scratch, "flops")["ratio"] == pytest.approx(0.15)
    assert search_vs_scratch.reach_ratio(scratch, grow, "calibrated")["ratio"] == math.inf


def test_search_vs_scratch_smoke(tmp_path: Path) -> None:
    setup = search_vs_scratch.Setup(n_trials=3, epochs=1, seeds=(0,), max_train=240, max_val=80)
    r = search_vs_scratch.run(setup, tmp_path, log=lambda _: None)
    assert _is_png(r["plot"])
    (entry,) = r["per_seed"]
    for method in ("growsearch", "scratch"):
        tl = search_vs_scratch.Timeline(**entry[method])
        assert sum(a is not None for a in tl.accuracy) == 3  # the same COMPLETE-trial budget
        assert len(tl.calibrated) == len(tl.seconds) == len(tl.flops) == len(tl.accuracy)
        _, best = tl.curve("calibrated")
        assert best == sorted(best)  # best-so-far never decreases
    grow = search_vs_scratch.Timeline(**entry["growsearch"])
    assert grow.labels[0] == "seed: conv8k3 -> maxpool -> flatten -> dense32 -> dense10"
    assert all(label.split(":")[0] in ("widen", "deepen") for label in grow.labels[1:])
    scratch = search_vs_scratch.Timeline(**entry["scratch"])
    assert entry["ratios"]["flops"]["level"] == scratch.best
    assert r["summary"]["best_scratch"] == [scratch.best]


# ---- overhead ---------------------------------------------------------------------------------
def test_study_overhead_accounts_for_the_whole_run(tmp_path: Path) -> None:
    base = load_config(overhead.STUDY_YAML)
    ds = load("digits", batch_size=32, max_train=200, max_val=60)
    setup = replace(overhead.QUICK, n_trials=2)
    r = overhead.study_overhead(base, ds, seed=0, setup=setup)
    assert r["trials_completed"] == 2
    # Exclusive phases add up to the whole run (the profiler's outer phase wraps run_worker).
    assert r["accounted_seconds"] == pytest.approx(r["wall_seconds"], rel=1e-3)
    phases = r["seconds_by_phase"]
    assert phases["training"] > 0 and phases["setup"] > 0
    assert r["calls_by_phase"]["checkpoint save"] == 2  # one checkpoint per finished trial
    assert r["calls_by_phase"]["training"] == 2
    assert 0 < r["overhead_share"] < r["overhead_share_with_setup"] < 1
    assert "growsearch.search._objective.train" in r["wrapped"]


def test_plain_loop_and_throughput_compare_like_with_like() -> None:
    base = load_config(overhead.STUDY_YAML)
    ds = load("digits", batch_size=32, max_train=161, max_val=40)  # 161 = 5 * 32 + 1
    setup = replace(overhead.QUICK, throughput_pairs=4, throughput_warmup=1)
    t = overhead.throughput(base.model, ds, setup, batch_size=32)
    assert t["samples_per_epoch"] == 160  # the lone last sample is dropped, by both loops
    assert len(t["per_pair_ratio"]) == 4 and all(r > 0 for r in t["per_pair_ratio"])
    assert t["median_ratio"] == pytest.approx(statistics.median(t["per_pair_ratio"]))
    assert min(t["growsearch_samples_per_s"]) > 0 and min(t["plain_samples_per_s"]) > 0
    # The plain loop really trains: the loss falls on a batch it keeps seeing.
    from growsearch.builder import build_model

    model = build_model(base.model, seed=0)
    loop = overhead.PlainLoop(
        model, ds.x_train, ds.y_train, batch_size=32, lr=0.05, momentum=0.9, amp="none", seed=0
    )
    before = torch.nn.functional.cross_entropy(model(ds.x_train), ds.y_train).item()
    for _ in range(3):
        loop.epoch()
    after = torch.nn.functional.cross_entropy(model(ds.x_train), ds.y_train).item()
    assert after < before


# ---- lineage scale ----------------------------------------------------------------------------
TINY_LINEAGE = lineage_scale.Setup(sizes=(60,), window=5, reps=2, export_reps=1)


def test_lineage_scale_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    r = lineage_scale.time_backend(url, 60, TINY_LINEAGE)
    assert r["n"] == 60 and r["ancestry_length"] == r["deepest_generation"] + 1 > 5
    assert r["best_seconds"] > 0 and r["dataframe_seconds"] > 0
    with SQLLineageStore(url, create=False) as store:
        models = store.models(lineage_scale.STUDY)
        assert len(models) == 60 and models[0].parent_id is None
        assert all(
            m.parent_id is not None and m.model_id - 5 <= m.parent_id < m.model_id
            for m in models[1:]
        )


def test_lineage_scale_main_writes_json_and_plot(tmp_path: Path) -> None:
    argv = [
        "--quick",
        "--sizes",
        "40,80",
        "--out",
        str(tmp_path),
        "--pg-admin-url",
        "postgresql://nobody@127.0.0.1:1/none",
    ]
    assert lineage_scale.main(argv) == 0
    payload = json.loads((tmp_path / "lineage_scale.json").read_text())
    assert payload["command"].startswith("python -m benchmarks.lineage_scale --quick --sizes")
    rows = payload["result"]["backends"]["sqlite"]
    assert [row["n"] for row in rows] == [40, 80]
    assert payload["result"]["backends"]["postgresql"].startswith("skipped: PostgreSQL at")
    assert _is_png(tmp_path / "lineage_scale.png")


@pytest.mark.postgres
def test_lineage_scale_postgresql(postgresql_url: str) -> None:
    r = lineage_scale.time_backend(postgresql_url, 60, TINY_LINEAGE)
    assert r["ancestry_length"] == r["deepest_generation"] + 1
    assert r["best_seconds"] > 0


# ---- GPU ----------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-GPU path")
def test_gpu_overhead_without_cuda_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu"
    assert gpu_overhead.main(["--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("python -m benchmarks.gpu_overhead: error: no CUDA device: ")
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    assert gpu_overhead.cuda_problem() in captured.err  # the reason: no CUDA build, or no GPU
    assert not out.exists()  # nothing measured, nothing written
    with pytest.raises(RuntimeError, match="no CUDA device"):
        gpu_overhead.run("quick", tmp_path)


@pytest.mark.gpu
def test_gpu_overhead_smoke(tmp_path: Path) -> None:
    base = load_config(overhead.STUDY_YAML)
    ds = load("digits", batch_size=32, max_train=200, max_val=60)
    setup = replace(overhead.QUICK, n_trials=2, device="cuda", amp="bf16")
    r = overhead.study_overhead(base, ds, seed=0, setup=setup)
    assert r["trials_completed"] == 2 and r["seconds_by_phase"]["training"] > 0
    t = overhead.throughput(
        base.model, ds, replace(setup, throughput_pairs=2, throughput_warmup=1), batch_size=32
    )
    assert min(t["growsearch_samples_per_s"]) > 0 and min(t["plain_samples_per_s"]) > 0
