"""The preservation check: detects a changed child, passes an exact one, restores modes."""

from __future__ import annotations

import pytest
import torch
from _arch_gen import grow, make

from growsearch.preservation import PreservationResult, check_preservation, tolerance_for
from growsearch.transforms import Operation

LAYERS = [
    {
        "type": "conv",
        "name": "c",
        "out": 3,
        "batchnorm": True,
        "activation": "relu",
        "dropout": 0.3,
    },
    {"type": "flatten"},
    {"type": "dense", "name": "d", "out": 4, "activation": "relu", "dropout": 0.5},
    {"type": "dense", "name": "out", "out": 2},
]
SHAPE = (1, 3, 5)


def probe() -> torch.Tensor:
    return torch.randn((8, *SHAPE), generator=torch.Generator().manual_seed(0))


def test_tolerance_is_relative_above_one_and_absolute_below() -> None:
    assert tolerance_for(0.01) == pytest.approx(1e-5)
    assert tolerance_for(250.0) == pytest.approx(2.5e-3)
    assert tolerance_for(3.0, rtol=1e-3) == pytest.approx(3e-3)


def test_exact_child_passes() -> None:
    spec, parent = make(LAYERS, list(SHAPE))
    _, child = grow(spec, parent, Operation("widen", "c", {"factor": 2}))
    result = check_preservation(parent, child, probe())
    assert isinstance(result, PreservationResult)
    assert result.ok and result.max_abs_error <= result.tolerance
    assert result.max_parent_output > 0
    assert result.tolerance == tolerance_for(result.max_parent_output)


def test_perturbed_child_is_detected() -> None:
    spec, parent = make(LAYERS, list(SHAPE))
    _, child = grow(spec, parent, Operation("widen", "c", {"factor": 2}))
    with torch.no_grad():
        child.layers["out"].linear.bias[1] += 1e-4  # ten times the tolerance
    result = check_preservation(parent, child, probe())
    assert not result.ok and result.max_abs_error == pytest.approx(1e-4, rel=1e-2)
    # a random-pad child is not exact either
    _, padded = grow(spec, parent, Operation("widen", "d"), init="random-pad")
    assert not check_preservation(parent, padded, probe()).ok


def test_nan_output_is_never_ok() -> None:
    spec, parent = make(LAYERS, list(SHAPE))
    _, child = grow(spec, parent, Operation("deepen", "d"))
    with torch.no_grad():
        child.layers["out"].linear.bias[0] = float("nan")
    assert not check_preservation(parent, child, probe()).ok


def test_modes_are_restored_per_module_and_eval_is_used() -> None:
    spec, parent = make(LAYERS, list(SHAPE))
    _, child = grow(spec, parent, Operation("widen", "c", {"factor": 2}))
    parent.train()
    child.train()
    child.layers["d"].eval()  # a mixed model keeps its mix
    result = check_preservation(parent, child, probe())
    # dropout and batch statistics are off during the check, else the outputs would differ
    assert result.ok
    assert parent.training and all(m.training for m in parent.modules())
    assert child.training and not child.layers["d"].training
    assert all(m.training for n, m in child.named_modules() if not n.startswith("layers.d"))
    parent.eval()
    child.eval()
    check_preservation(parent, child, probe())
    assert not parent.training and not any(m.training for m in child.modules())


def _tf32() -> tuple:
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision, cudnn.conv.fp32_precision
    return matmul.allow_tf32, cudnn.allow_tf32  # older PyTorch


def test_tf32_is_off_during_the_check_and_restored() -> None:
    before = _tf32()
    spec, parent = make(LAYERS, list(SHAPE))
    _, child = grow(spec, parent, Operation("deepen", "c"))
    seen = []
    hook = parent.register_forward_hook(lambda *_: seen.append(_tf32()))
    check_preservation(parent, child, probe())
    hook.remove()
    off = (
        ("ieee", "ieee")
        if hasattr(torch.backends.cuda.matmul, "fp32_precision")
        else (False, False)
    )
    assert seen == [off]  # full float32 during the check
    assert _tf32() == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grow_and_check_on_cuda() -> None:
    spec, parent = make(LAYERS, list(SHAPE))
    parent = parent.cuda()
    result, child = grow(spec, parent, Operation("widen", "c", {"factor": 2}))
    assert all(t.is_cuda for t in result.state_dict.values())
    check = check_preservation(parent, child.cuda(), probe())
    assert check.ok


def test_output_shape_mismatch_is_an_error() -> None:
    _, parent = make(LAYERS, list(SHAPE))
    _, other = make([*LAYERS[:-1], {"type": "dense", "name": "out", "out": 3}], list(SHAPE))
    with pytest.raises(ValueError, match="output shape"):
        check_preservation(parent, other, probe())
