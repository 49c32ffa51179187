"""growsearch: neural architecture search by growing networks with exact function-preserving
transforms (Net2Net), driven by Optuna, with a SQL lineage of every model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from growsearch.builder import build_model
    from growsearch.spec import Spec

__all__ = ["Spec", "build_model"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): importing the package must not import torch (seconds), so that the
    # command line can install its Ctrl-C handling before the heavy imports start.
    if name == "Spec":
        from growsearch.spec import Spec

        return Spec
    if name == "build_model":
        from growsearch.builder import build_model

        return build_model
    raise AttributeError(f"module 'growsearch' has no attribute {name!r}")
