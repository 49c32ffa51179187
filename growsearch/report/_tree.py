"""Where each model of a lineage sits in the tree drawing: x is its generation, y its row.

Leaves take consecutive rows in depth-first order (children by trial number) and a parent sits
half-way between its first and last child, so no two branches ever cross. The walk is iterative:
a lineage can be deeper than Python's recursion limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from growsearch.store import ModelRecord

__all__ = ["tree_layout"]


def tree_layout(models: Sequence[ModelRecord]) -> dict[int, tuple[float, float]]:
    """``model_id -> (generation, row)``; rows start at 0. A model whose parent is not among
    ``models`` starts a tree of its own, below the trees before it."""
    ids = {m.model_id for m in models}
    children: dict[int | None, list[ModelRecord]] = defaultdict(list)
    for m in sorted(models, key=lambda m: (m.trial_number, m.model_id)):
        children[m.parent_id if m.parent_id in ids else None].append(m)
    rows: dict[int, float] = {}
    next_row = 0
    stack: list[tuple[ModelRecord, bool]] = [(root, False) for root in reversed(children[None])]
    while stack:
        model, expanded = stack.pop()
        kids = children.get(model.model_id, [])
        if not kids:
            rows[model.model_id] = float(next_row)
            next_row += 1
        elif not expanded:
            stack.append((model, True))
            stack.extend((kid, False) for kid in reversed(kids))
        else:
            rows[model.model_id] = (rows[kids[0].model_id] + rows[kids[-1].model_id]) / 2
    return {m.model_id: (float(m.generation), rows[m.model_id]) for m in models}
