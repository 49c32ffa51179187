"""growsearch: neural architecture search by growing networks with exact function-preserving
transforms (Net2Net), driven by Optuna, with a SQL lineage of every model."""

from growsearch.builder import build_model
from growsearch.spec import Spec

__all__ = ["Spec", "build_model"]
