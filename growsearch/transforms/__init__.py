"""Growth operations: pure, function-preserving transforms of a spec and its weights.

``apply_operation(spec, state_dict, Operation("widen", "conv1", {"factor": 2}), rng)`` returns the
child spec and new tensors; the parent's tensors are never modified. ``places(spec, name)`` lists
where an operation applies exactly; anywhere else it raises TransformError/NotExactError naming
the layer and the reason.
"""

# Importing the operation modules registers them (in this order).
from growsearch.transforms import _widen, _deepen, _kernel, _skip  # noqa: F401  # isort: skip
from growsearch.transforms._apply import (
    INIT_MODES,
    GrowResult,
    Operation,
    OptimizerState,
    apply_operation,
    apply_operations,
    child_spec,
    places,
)
from growsearch.transforms._channel_map import ChannelMap
from growsearch.transforms._registry import (
    OperationDef,
    get_operation,
    list_operations,
    register_operation,
)

__all__ = [
    "INIT_MODES",
    "ChannelMap",
    "GrowResult",
    "Operation",
    "OperationDef",
    "OptimizerState",
    "apply_operation",
    "apply_operations",
    "child_spec",
    "get_operation",
    "list_operations",
    "places",
    "register_operation",
]
