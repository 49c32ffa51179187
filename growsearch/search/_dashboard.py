"""What optuna-dashboard shows: per-trial notes and checkpoint artifacts, the lineage figure."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from growsearch.spec import Spec, spec_diff
from growsearch.store import LineageStore, ModelRecord

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["lineage_figure", "publish_lineage", "publish_trial", "trial_note"]


def trial_note(child: Any, acc: float) -> str:
    """Markdown for the trial's note: mutation, architecture and the parent -> child diff."""
    lines = [f"### {child.spec.summary()}", ""]
    if child.parent is None:
        lines.append("**Seed** model trained from scratch.")
    else:
        ops = ", ".join(
            f"`{op.name}` on `{op.target}` {op.args or ''}" for op in child.proposal.operations
        )
        lines += [
            f"**Parent**: trial {child.parent.trial_number} (model {child.parent.model_id}, "
            f"val_accuracy {child.parent.val_accuracy:.4f})",
            f"**Mutation**: {ops}",
            f"**Preservation error** before training: {child.preservation_error:.3e}",
            "",
            "```diff",
            *spec_diff(Spec.from_dict(child.parent.spec), child.spec),
            "```",
        ]
    lines += ["", f"**Parameters**: {child.spec.num_params:,} · **FLOPs**: {child.spec.flops:,}"]
    lines += [f"**Validation accuracy**: {acc:.4f}"]
    return "\n".join(lines)


def publish_trial(
    trial: optuna.Trial, artifact_store: Any | None, checkpoint: Path, child: Any, acc: float
) -> None:
    from optuna_dashboard import save_note

    save_note(trial, trial_note(child, acc))
    if artifact_store is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=artifact_store,
                file_path=str(checkpoint),
                study_or_trial=trial,
                mimetype="application/octet-stream",
            )
        trial.set_user_attr("checkpoint_artifact", artifact_id)


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
