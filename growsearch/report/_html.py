"""The report page: one self-contained HTML file (inline CSS, no scripts, no remote resources);
the figures are PNG files next to it or, with ``embed``, data URIs inside it."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape

from growsearch.report._history import History, op_label
from growsearch.spec import Spec
from growsearch.store import ModelRecord

__all__ = ["FIGURES", "render_html"]

# file name -> (heading, what the figure shows)
FIGURES = {
    "lineage.png": (
        "Lineage tree",
        "Every model, left to right by generation. Each branch is labelled with the operation "
        "that grew the child (above) and the child's trial number and validation accuracy "
        "(below). Colour is validation accuracy; the best model's ancestry is red.",
    ),
    "progress.png": (
        "Best accuracy vs cumulative training time",
        "The best validation accuracy found so far against the training time spent on every "
        "model so far (pruned and failed models count: their time was spent).",
    ),
    "generations.png": (
        "Accuracy per generation",
        "Validation accuracy of every finished model by its distance from the seed.",
    ),
}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { font-weight: bold; background: #fff4f0; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.2em; }
dl.summary dt { color: #555; } dl.summary dd { margin: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
code { font-size: 0.95em; }
"""


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _arch(m: ModelRecord) -> str:
    try:
        return Spec.from_dict(m.spec).summary()
    except Exception:  # a spec of a newer growsearch: show the report anyway
        return "?"


def _models_table(models: Sequence[ModelRecord], history: History, best_id: int | None) -> str:
    head = ("model", "parent", "trial", "gen", "operation", "status", "val acc", "pres. error",
            "params", "train s", "architecture")  # fmt: skip
    out = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for m in models:
        cells = [
            (str(m.model_id), True),
            ("–" if m.parent_id is None else str(m.parent_id), True),
            (str(m.trial_number), True),
            (str(m.generation), True),
            (op_label(m, limit=80), False),
            (m.status if not m.reason else f"{m.status}: {m.reason[:120]}", False),
            (_num(m.val_accuracy, ".4f"), True),
            (_num(m.preservation_error, ".1e"), True),
            (f"{m.num_params:,}", True),
            (_num(history.seconds.get(m.model_id), ".2f"), True),
            (_arch(m), False),
        ]
        row_class = ' class="best"' if m.model_id == best_id else ""
        tds = "".join(
            f'<td class="num">{escape(c)}</td>' if num else f"<td>{escape(c)}</td>"
            for c, num in cells
        )
        out.append(f"<tr{row_class}>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _summary(history: History) -> Iterable[tuple[str, str]]:
    cfg = history.config
    data = cfg.get("data") or {}
    dataset = str(data.get("dataset", "?"))
    if data.get("root"):
        dataset += f" ({data['root']})"
    yield "dataset", dataset
    counts = ", ".join(f"{n} {s}" for s, n in sorted(history.status_counts().items()))
    models = f"{len(history.models)} ({counts})" if history.models else "none yet"
    yield "models", f"{models}; study n_trials: {cfg.get('n_trials', '?')}"
    best = history.best
    if best is not None:
        yield (
            "best model",
            (
                f"model {best.model_id} (trial {best.trial_number}, generation {best.generation}): "
                f"validation accuracy {best.val_accuracy:.4f}, {best.num_params:,} parameters"
            ),
        )
        yield "best architecture", _arch(best)
        yield "best checkpoint", f"{best.checkpoint} (sha256 {best.sha256})"
    yield "training time", f"{history.total_seconds:.1f} s over all models"
    span = history.wall_clock()
    if span is not None:
        start, end = span
        yield (
            "wall clock",
            (f"{_when(start)} to {_when(end)} ({(end - start).total_seconds():.1f} s)"),
        )


def _img_src(name: str, png: bytes | None) -> str:
    if png is None:
        return escape(name)  # a file next to the page
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(
    history: History,
    pngs: Mapping[str, bytes],
    *,
    embed: bool = False,
    generated_by: str = "growsearch",
    storage: str | None = None,
) -> str:
    """The page for ``history``; ``pngs`` maps FIGURES names to their bytes."""
    study = escape(history.study)
    best = history.best
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>growsearch report: {study}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>growsearch report: study <code>{study}</code></h1>",
        '<dl class="summary">',
    ]
    parts += [f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in _summary(history)]
    if storage:
        parts.append(f"<dt>storage</dt><dd><code>{escape(storage)}</code></dd>")
    parts.append("</dl>")
    for name, (heading, caption) in FIGURES.items():
        src = _img_src(name, pngs[name] if embed else None)
        parts += [
            f"<h2>{escape(heading)}</h2>",
            f'<figure><img src="{src}" alt="{escape(heading)}">',
            f"<figcaption>{escape(caption)}</figcaption></figure>",
        ]
    if best is not None:
        parts += [
            f"<h2>Ancestry of the best model ({len(history.ancestry(best.model_id))} "
            "models, seed first)</h2>",
            _models_table(history.ancestry(best.model_id), history, best.model_id),
        ]
    parts += [
        f"<h2>All models ({len(history.models)})</h2>",
        _models_table(history.models, history, best.model_id if best else None),
        f'<p style="color:#777;font-size:0.8em">Generated by {escape(generated_by)}.</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
