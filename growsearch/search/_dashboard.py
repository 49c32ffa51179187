"""What optuna-dashboard shows: per-trial notes and checkpoint artifacts, the lineage figure.

All of it is written cheaply: a trial's note goes into the same transaction as the trial's other
attributes (optuna_dashboard.save_note would read every note of the study twice, then write),
and the lineage figure is rebuilt only now and then, since its cost grows with the study.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from growsearch.spec import Spec, spec_diff
from growsearch.store import LineageStore, ModelRecord

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "LineagePublisher",
    "lineage_figure",
    "note_attrs",
    "publish_lineage",
    "trial_note",
    "upload_checkpoint",
]

LINEAGE_MIN_INTERVAL_S = 30.0  # a worker rebuilds the lineage figure at most this often ...
LINEAGE_MAX_SHARE = 0.02  # ... and spends at most this share of its time on it


def trial_note(child: Any, acc: float) -> str:
    """Markdown for the trial's note: mutation, architecture and the parent -> child diff."""
    lines = [f"### {child.spec.summary()}", ""]
    if child.parent is None:
        lines.append("**Seed** model trained from scratch.")
    else:
        ops = ", ".join(
            f"`{op.name}` on `{op.target}` {op.args or ''}" for op in child.proposal.operations
        )
        extra = []
        if child.proposal.lr is not None:
            extra.append(f"lr {child.proposal.lr:.3g}")
        if child.proposal.epochs is not None:
            extra.append(f"{child.proposal.epochs} epochs")
        lines += [
            f"**Parent**: trial {child.parent.trial_number} (model {child.parent.model_id}, "
            f"val_accuracy {child.parent.val_accuracy:.4f})",
            f"**Mutation**: {ops}" + (f" ({', '.join(extra)})" if extra else ""),
            f"**Preservation error** before training: {child.preservation_error:.3e}",
            "",
            "```diff",
            *spec_diff(Spec.from_dict(child.parent.spec), child.spec),
            "```",
        ]
    lines += ["", f"**Parameters**: {child.spec.num_params:,} · **FLOPs**: {child.spec.flops:,}"]
    lines += [f"**Validation accuracy**: {acc:.4f}"]
    return "\n".join(lines)


def note_attrs(trial: optuna.Trial, body: str) -> dict[str, str | int] | None:
    """The study system attributes that make ``body`` the trial's note, in optuna-dashboard's
    own format, to write with the trial's other attributes. A trial is new, so there is no
    older version to bump or clear. None if that format moved (use ``save_note`` then)."""
    try:
        from optuna_dashboard._note import note_ver_key, split_body
    except ImportError:  # pragma: no cover - another optuna-dashboard layout
        return None
    return {note_ver_key(trial._trial_id): 1, **split_body(body, trial._trial_id)}


def upload_checkpoint(trial: optuna.Trial, artifact_store: Any, checkpoint: Path) -> str:
    """The checkpoint as the trial's artifact (a hard link with our artifact store)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.artifacts.upload_artifact(
            artifact_store=artifact_store,
            file_path=str(checkpoint),
            study_or_trial=trial,
            mimetype="application/octet-stream",
        )


def lineage_figure(models: list[ModelRecord], title: str = "lineage") -> go.Figure:
    """Tree of models: x = generation, colour = validation accuracy, label = operation."""
    import plotly.graph_objects as go

    finished = [m for m in models if m.status == "finished"]
    by_id = {m.model_id: m for m in finished}
    rows: dict[int, int] = {}
    pos: dict[int, tuple[float, float]] = {}
    for m in sorted(finished, key=lambda m: (m.generation, m.model_id)):
        y = rows.get(m.generation, 0)
        rows[m.generation] = y + 1
        pos[m.model_id] = (float(m.generation), float(y))
    edge_x: list[float | None] = []
    edge_y: list[float | None] = []
    for m in finished:
        if m.parent_id in pos:
            (x0, y0), (x1, y1) = pos[m.parent_id], pos[m.model_id]
            edge_x += [x0, x1, None]
            edge_y += [y0, y1, None]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=edge_x,
            y=edge_y,
            mode="lines",
            line={"color": "#999"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    ids = list(pos)
    fig.add_trace(
        go.Scatter(
            x=[pos[i][0] for i in ids],
            y=[pos[i][1] for i in ids],
            mode="markers+text",
            text=[f"#{by_id[i].trial_number} {by_id[i].operation}" for i in ids],
            textposition="top center",
            marker={
                "size": 14,
                "color": [by_id[i].val_accuracy for i in ids],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": "val acc"},
            },
            hovertext=[
                f"trial {by_id[i].trial_number}<br>{by_id[i].operation}<br>"
                f"acc {by_id[i].val_accuracy:.4f}<br>params {by_id[i].num_params:,}"
                for i in ids
            ],
            hoverinfo="text",
            showlegend=False,
        )
    )
    fig.update_layout(title=title, xaxis_title="generation", yaxis={"visible": False})
    return fig


def publish_lineage(study: optuna.Study, store: LineageStore) -> None:
    from optuna_dashboard import save_plotly_graph_object

    fig = lineage_figure(store.models(study.study_name), title=f"{study.study_name}: lineage")
    save_plotly_graph_object(study, fig, graph_object_id="lineage")


class LineagePublisher:
    """Rebuilds the lineage figure at most every ``LINEAGE_MIN_INTERVAL_S`` and never for more
    than ``LINEAGE_MAX_SHARE`` of the worker's time; the worker also rebuilds it when it stops."""

    def __init__(self, store: LineageStore) -> None:
        self.store = store
        self.last = time.perf_counter()  # of the last rebuild (or of the worker's start)
        self.cost = 0.0  # seconds the last rebuild took
        self.count = 0

    def due(self) -> bool:
        wait = max(LINEAGE_MIN_INTERVAL_S, self.cost / LINEAGE_MAX_SHARE)
        return time.perf_counter() - self.last >= wait

    def publish(self, study: optuna.Study) -> None:
        start = time.perf_counter()
        publish_lineage(study, self.store)
        self.last = time.perf_counter()
        self.cost = self.last - start
        self.count += 1

    def maybe_publish(self, study: optuna.Study) -> bool:
        if not self.due():
            return False
        self.publish(study)
        return True
