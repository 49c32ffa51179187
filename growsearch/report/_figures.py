"""The report's three figures as PNG bytes: lineage tree, best accuracy against cumulative
training time, accuracy per generation.

Figures are built on matplotlib's object API with the Agg canvas: no pyplot, so no global
backend switch, no display needed, and nothing left open between calls.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from growsearch.report._history import History, accuracy_range, op_label
from growsearch.report._tree import tree_layout
from growsearch.store import ModelRecord

__all__ = ["generation_png", "lineage_png", "progress_png"]

CMAP = "viridis"
BEST_COLOUR = "#d62728"
EDGE_COLOUR = "#9a9a9a"
MUTED = "#b0b0b0"
DPI = 110
LABELLED_MODELS = 150  # above this, only the best model's ancestry is labelled in the tree
_STUB = 0.1  # generation units between a parent and the fork to its children


def _png(fig: Figure, dpi: int) -> bytes:
    FigureCanvasAgg(fig)  # attaches itself to the figure
    buf = io.BytesIO()
    # No "Software" entry: the same study gives the same bytes on every matplotlib version.
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _empty(title: str, message: str, dpi: int) -> bytes:
    fig = Figure(figsize=(7, 2.2))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)
    ax.text(0.5, 0.45, message, ha="center", va="center", fontsize=10, color="#555")
    return _png(fig, dpi)


# ---- lineage tree ---------------------------------------------------------------------------


def lineage_png(history: History, dpi: int = DPI) -> bytes:
    """The lineage tree: x = generation, node colour = validation accuracy, each branch labelled
    with the operation that grew the child; the best model's ancestry in red."""
    title = f"Lineage of study '{history.study}'"
    models = history.models
    if not models:
        return _empty(title, "no models yet: run the study first", dpi)
    pos = tree_layout(models)
    rows = max(y for _, y in pos.values()) + 1
    generations = int(max(x for x, _ in pos.values())) + 1
    best = history.best
    on_path = {m.model_id for m in history.ancestry(best.model_id)} if best else set()
    labelled = len(models) <= LABELLED_MODELS
    row_in = 0.42 if labelled else 0.16
    fig = Figure(
        figsize=(min(1.2 + 2.2 * generations + 1.6, 40), min(1.9 + row_in * rows, 60)),
        layout="constrained",
    )
    ax = fig.add_subplot()

    # Edges: parent -> fork -> child, drawn as elbows so siblings share one vertical bar.
    plain: list[list[tuple[float, float]]] = []
    highlighted: list[list[tuple[float, float]]] = []
    for m in models:
        if m.parent_id not in pos:
            continue
        (xp, yp), (xc, yc) = pos[m.parent_id], pos[m.model_id]
        elbow = [(xp, yp), (xp + _STUB, yp), (xp + _STUB, yc), (xc, yc)]
        (highlighted if m.model_id in on_path else plain).append(elbow)
    ax.add_collection(LineCollection(plain, colors=EDGE_COLOUR, linewidths=1.0, zorder=1))
    ax.add_collection(LineCollection(highlighted, colors=BEST_COLOUR, linewidths=2.2, zorder=2))

    done = [m for m in models if m.status == "finished" and m.val_accuracy is not None]
    other = [m for m in models if m not in done]
    accs = [float(m.val_accuracy) for m in done]  # type: ignore[arg-type]
    norm = Normalize(*accuracy_range(accs)) if accs else Normalize(0, 1)
    size = 70 if labelled else 22
    if done:
        plain_done = [m for m in done if best is None or m.model_id != best.model_id]
        points = ax.scatter(
            [pos[m.model_id][0] for m in plain_done],
            [pos[m.model_id][1] for m in plain_done],
            c=[float(m.val_accuracy) for m in plain_done],  # type: ignore[arg-type]
            cmap=CMAP,
            norm=norm,
            s=size,
            edgecolors="white",
            linewidths=0.6,
            zorder=3,
        )
        if best is not None:
            ax.scatter(
                [pos[best.model_id][0]],
                [pos[best.model_id][1]],
                c=[float(best.val_accuracy)],  # type: ignore[arg-type]
                cmap=CMAP,
                norm=norm,
                s=size * 4,
                marker="*",
                edgecolors="black",
                linewidths=0.8,
                zorder=4,
            )
        # At most ~6 inches tall, at the top, so a tall tree keeps a readable scale.
        shrink = min(1.0, 6.0 / fig.get_figheight())
        bar = fig.colorbar(
            points,
            ax=ax,
            fraction=0.035,
            pad=0.02,
            aspect=30 * shrink,
            shrink=shrink,
            anchor=(0.0, 1.0),
        )
        bar.set_label("validation accuracy")
    if other:
        ax.scatter(
            [pos[m.model_id][0] for m in other],
            [pos[m.model_id][1] for m in other],
            s=size,
            facecolors="white",
            edgecolors=MUTED,
            linewidths=1.2,
            zorder=3,
        )

    for m in models:
        if labelled or m.model_id in on_path:
            parent_xy = pos.get(m.parent_id) if m.parent_id is not None else None
            _label_node(ax, m, pos[m.model_id], parent_xy, m.model_id in on_path)

    ax.set_xlim(-0.95, generations - 1 + 0.35)
    ax.set_ylim(rows - 0.4, -0.9)  # row 0 at the top
    ax.set_xticks(range(generations))
    ax.set_xlabel("generation")
    ax.tick_params(axis="y", left=False, labelleft=False)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    for g in range(generations):
        ax.axvline(g, color="#eeeeee", linewidth=0.8, zorder=0)
    counts = history.status_counts()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    ax.set_title(f"{title}: {len(models)} models ({summary})", fontsize=11, loc="left")
    fig.legend(
        handles=[
            Line2D([], [], color=BEST_COLOUR, linewidth=2.2, label="ancestry of the best model"),
            Line2D(
                [],
                [],
                marker="*",
                color="w",
                markerfacecolor="#888",
                markeredgecolor="k",
                markersize=12,
                label="best model",
            ),
            Line2D(
                [],
                [],
                marker="o",
                color="w",
                markerfacecolor="w",
                markeredgecolor=MUTED,
                markersize=7,
                label="pruned / failed / running",
            ),
        ],
        loc="outside lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    return _png(fig, dpi)


def _label_node(
    ax: Axes,
    m: ModelRecord,
    xy: tuple[float, float],
    parent_xy: tuple[float, float] | None,
    on_path: bool,
) -> None:
    x, y = xy
    weight = "bold" if on_path else "normal"
    if m.status == "finished" and m.val_accuracy is not None:
        below = f"#{m.trial_number}  {m.val_accuracy:.4f}"
    else:
        below = f"#{m.trial_number}  {m.status}"
    if parent_xy is None:  # a root: its label sits to its left
        above, centre = op_label(m), x - 0.5
    else:
        above, centre = op_label(m, limit=34), (parent_xy[0] + _STUB + x) / 2
    style = {"ha": "center", "fontsize": 7.5, "fontweight": weight, "textcoords": "offset points"}
    ax.annotate(above, (centre, y), xytext=(0, 2.5), va="bottom", **style)  # type: ignore[arg-type]
    ax.annotate(
        below,
        (centre, y),
        xytext=(0, -2.5),
        va="top",
        color="#444",
        **style,  # type: ignore[arg-type]
    )


# ---- best accuracy against training time ---------------------------------------------------


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 3 * 3600:
        return 3600.0, "hours"
    if seconds >= 600:
        return 60.0, "minutes"
    return 1.0, "seconds"


def progress_png(history: History, dpi: int = DPI) -> bytes:
    """Best validation accuracy so far against the training time spent on every model so far
    (each finished model a dot, each new best a red marker labelled with its trial)."""
    title = "Best validation accuracy vs cumulative training time"
    points = [p for p in history.progress() if p.best_so_far is not None]
    if not points:
        return _empty(title, "no finished model yet", dpi)
    total = history.progress()[-1].cumulative_seconds
    scale, unit = _time_unit(total)
    xs = [p.cumulative_seconds / scale for p in points]
    best = [float(p.best_so_far) for p in points]  # type: ignore[arg-type]
    fig = Figure(figsize=(8, 4.4))
    ax = fig.add_subplot()
    done = [p for p in points if p.model.status == "finished"]
    ax.scatter(
        [p.cumulative_seconds / scale for p in done],
        [float(p.model.val_accuracy) for p in done],  # type: ignore[arg-type]
        s=18,
        color="#7f9fbf",
        alpha=0.7,
        label="a finished model",
        zorder=2,
    )
    ax.step(
        [*xs, total / scale],
        [*best, best[-1]],
        where="post",
        color=BEST_COLOUR,
        linewidth=2,
        label="best so far",
        zorder=3,
    )
    records = [p for i, p in enumerate(points) if i == 0 or best[i] > best[i - 1]]
    ax.scatter(
        [p.cumulative_seconds / scale for p in records],
        [float(p.best_so_far) for p in records],  # type: ignore[arg-type]
        s=36,
        color=BEST_COLOUR,
        zorder=4,
    )
    for p in records[-10:]:  # the last ten improvements are enough to read the story
        ax.annotate(
            f"#{p.model.trial_number}",
            (p.cumulative_seconds / scale, float(p.best_so_far)),  # type: ignore[arg-type]
            xytext=(3, 5),
            textcoords="offset points",
            fontsize=7.5,
            color=BEST_COLOUR,
        )
    top = history.best
    assert top is not None
    ax.set_title(
        f"{title}\nbest {top.val_accuracy:.4f}: model {top.model_id} (trial {top.trial_number}),"
        f" {top.num_params:,} parameters; {total / scale:.1f} {unit} of training in total",
        fontsize=10,
        loc="left",
    )
    ax.set_xlabel(f"cumulative training time ({unit})")
    ax.set_ylabel("validation accuracy")
    ax.set_xlim(left=0)
    ax.grid(True, color="#eeeeee")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _png(fig, dpi)


# ---- accuracy per generation ---------------------------------------------------------------


def _jitter(n: int, width: float = 0.28) -> Sequence[float]:
    # Deterministic spread, so the same study draws the same picture.
    return [0.0] if n == 1 else list(np.linspace(-width / 2, width / 2, n))


def generation_png(history: History, dpi: int = DPI) -> bytes:
    """Validation accuracy of every finished model per generation, with the best and the median
    of each generation."""
    title = "Validation accuracy per generation"
    per_gen = history.by_generation()
    if not per_gen:
        return _empty(title, "no finished model yet", dpi)
    gens = list(per_gen)
    fig = Figure(figsize=(min(max(6.0, 1.2 + 0.8 * len(gens)), 30), 4.2))
    ax = fig.add_subplot()
    for g, accs in per_gen.items():
        ax.scatter(
            [g + j for j in _jitter(len(accs))],
            sorted(accs),
            s=20,
            color="#7f9fbf",
            alpha=0.8,
            zorder=2,
        )
    bar = 700 if len(gens) <= 30 else 150
    for values, colour, style, label, z in (
        ([max(per_gen[g]) for g in gens], BEST_COLOUR, "-", "best in generation", 5),
        ([float(np.median(per_gen[g])) for g in gens], "#555", "--", "median", 4),
    ):
        # A bar across each generation's points, joined by a thin line to show the trend.
        ax.plot(gens, values, linestyle=style, color=colour, linewidth=1, alpha=0.7, zorder=3)
        ax.scatter(
            gens, values, marker="_", s=bar, linewidths=2.2, color=colour, label=label, zorder=z
        )
    ax.scatter([], [], s=20, color="#7f9fbf", label="a finished model")
    ax.set_xticks(gens)
    step = max(1, len(gens) // 25)  # keep tick labels readable on very deep lineages
    ax.set_xticklabels(
        [f"{g}\nn={len(per_gen[g])}" if i % step == 0 else "" for i, g in enumerate(gens)],
        fontsize=8,
    )
    ax.set_xlabel("generation (n = finished models)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{title} of study '{history.study}'", fontsize=10, loc="left")
    ax.grid(True, axis="y", color="#eeeeee")
    ax.legend(loc="best", fontsize=8)  # a fixed corner can hide the points of a generation
    fig.tight_layout()
    return _png(fig, dpi)
