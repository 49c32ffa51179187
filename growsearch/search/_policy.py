"""Parent selection over the finished models of the lineage store."""

from __future__ import annotations

import optuna

from growsearch.config import SearchSection
from growsearch.store import LineageStore, ModelRecord

__all__ = ["candidate_parents", "select_parent"]


def candidate_parents(
    store: LineageStore, study: str, search: SearchSection, directions: list[str]
) -> list[ModelRecord]:
    """The models a policy chooses among, best first. Failed, diverged, pruned, killed models
    and models whose checkpoint was lost are never candidates (the store returns finished only)."""
    if search.parent == "best":
        best = store.best(study)
        return [best] if best is not None else []
    if search.parent == "pareto":
        return store.pareto(study, directions)
    ranked = sorted(
        store.models(study, status="finished"),
        key=lambda m: (-(m.val_accuracy or 0.0), m.num_params, m.model_id),
    )
    return ranked[: search.top_k]


def select_parent(
    trial: optuna.Trial,
    store: LineageStore,
    study: str,
    search: SearchSection,
    directions: list[str],
) -> ModelRecord | None:
    candidates = candidate_parents(store, study, search, directions)
    if not candidates:
        return None
    if len(candidates) == 1 and search.parent == "best":
        return candidates[0]
    # The sampler picks among the candidates (best first), so it can learn to explore.
    pick = trial.suggest_float("parent_pick", 0.0, 1.0)
    return candidates[min(int(pick * len(candidates)), len(candidates) - 1)]
