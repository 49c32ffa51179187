"""Architecture specs: JSON-serialisable, hashable descriptions of a network."""

from growsearch.spec._diff import spec_diff
from growsearch.spec._layers import (
    ACTIVATIONS,
    IDEMPOTENT_ACTIVATIONS,
    LAYER_TYPES,
    Activation,
    AvgPool,
    BatchNorm,
    Concat,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    MaxPool,
    Residual,
)
from growsearch.spec._shapes import LayerInfo
from growsearch.spec._spec import LayerPath, Spec

__all__ = [
    "ACTIVATIONS",
    "IDEMPOTENT_ACTIVATIONS",
    "LAYER_TYPES",
    "Activation",
    "AvgPool",
    "BatchNorm",
    "Concat",
    "Conv",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LayerInfo",
    "LayerNorm",
    "LayerPath",
    "MaxPool",
    "Residual",
    "Spec",
    "spec_diff",
]
