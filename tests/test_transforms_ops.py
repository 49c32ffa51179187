"""deepen, widen_kernel and add_skip: explicit cases and refusals."""

from __future__ import annotations

import math

import pytest
import torch
from _arch_gen import grow, make, max_error

from growsearch.exceptions import NotExactError, TransformError
from growsearch.spec import Conv, Dense, Residual
from growsearch.transforms import Operation, apply_operation, places

CNN = [
    {"type": "conv", "name": "c1", "out": 3, "kernel": 3, "batchnorm": True, "activation": "relu6"},
    {
        "type": "conv",
        "name": "c2",
        "out": 4,
        "kernel": 3,
        "stride": 2,
        "padding": 0,
        "activation": "gelu",
        "dropout": 0.1,
    },
    {"type": "avgpool", "name": "pool", "size": 2},
    {"type": "flatten", "name": "flat"},
    {"type": "dense", "name": "d", "out": 5, "activation": "relu", "bias": False},
    {"type": "dense", "name": "out", "out": 3},
]
SHAPE = (2, 9, 11)


# ---- deepen ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_deepen_conv_inserts_an_identity_conv(kernel: int, batchnorm: bool) -> None:
    spec, model = make(CNN, list(SHAPE))
    op = Operation("deepen", "c1", {"kernel": kernel, "batchnorm": batchnorm})
    result, child = grow(spec, model, op)
    name = result.info["inserted"]
    assert name == spec.fresh_name("conv") and result.info["how"] == "identity"
    new = result.spec.find(name)
    assert isinstance(new, Conv) and new.kernel == kernel and new.pad == kernel // 2
    assert new.activation == "relu6" and new.batchnorm == batchnorm
    assert [layer.name for layer in result.spec.layers[:2]] == ["c1", name]
    w = result.state_dict[f"layers.{name}.conv.weight"]  # (3, 3, k, k)
    centre = torch.zeros_like(w)
    centre[range(3), range(3), kernel // 2, kernel // 2] = 1.0
    assert torch.equal(w, centre)
    if batchnorm:
        gamma = result.state_dict[f"layers.{name}.bn.weight"]
        assert torch.allclose(gamma, torch.full((3,), math.sqrt(1 + 1e-5)))
        assert torch.equal(result.state_dict[f"layers.{name}.bn.running_mean"], torch.zeros(3))
    err, tol = max_error(model, child, SHAPE)
    assert err <= tol


@pytest.mark.parametrize("batchnorm", [False, True])
def test_deepen_dense_inserts_an_identity_dense(batchnorm: bool) -> None:
    spec, model = make(CNN, list(SHAPE))
    result, child = grow(spec, model, Operation("deepen", "d", {"batchnorm": batchnorm}))
    new = result.spec.find(result.info["inserted"])
    assert isinstance(new, Dense) and new.out == 5 and new.activation == "relu"
    assert torch.equal(result.state_dict[f"layers.{new.name}.linear.weight"], torch.eye(5))
    err, tol = max_error(model, child, SHAPE)
    assert err <= tol


def test_deepen_after_tanh_inserts_a_zero_residual_block() -> None:
    spec, model = make(CNN, list(SHAPE))
    result, child = grow(spec, model, Operation("deepen", "c2"))  # gelu: not idempotent
    block = result.spec.find(result.info["inserted"])
    assert isinstance(block, Residual) and block.skip == "identity"
    first, last = block.layers
    assert first.activation == "gelu" and last.activation == "identity"
    assert result.info["new_layers"] == [block.name, first.name, last.name]
    assert not result.state_dict[f"layers.{last.name}.conv.weight"].any()
    err, tol = max_error(model, child, SHAPE)
    assert err <= tol


def test_deepen_after_tanh_refuses_when_residual_is_not_allowed() -> None:
    spec, model = make(
        [
            {"type": "dense", "name": "dense3", "out": 4, "activation": "tanh"},
            {"type": "dense", "name": "out", "out": 2},
        ],
        [3],
    )
    with pytest.raises(NotExactError) as err:
        apply_operation(
            spec, model.state_dict(), Operation("deepen", "dense3", {"allow_residual": False}), 0
        )
    msg = str(err.value)
    assert "cannot deepen after layer 'dense3'" in msg
    assert "activation 'tanh' is not idempotent" in msg
    assert places(spec, "deepen", {"allow_residual": False}) == []
    assert places(spec, "deepen") == ["dense3"]


@pytest.mark.parametrize("kernel", [2, 4, 0, 9])
def test_deepen_with_an_unsupported_kernel_is_refused(kernel: int) -> None:
    spec, model = make(CNN, list(SHAPE))
    with pytest.raises(TransformError) as err:
        apply_operation(spec, model.state_dict(), Operation("deepen", "c1", {"kernel": kernel}), 0)
    assert "'c1'" in str(err.value) and f"kernel {kernel}" in str(err.value)
    if kernel in (2, 4):
        assert "even" in str(err.value) and "no centre" in str(err.value)
    assert places(spec, "deepen", {"kernel": kernel}) == []


def test_deepen_refuses_the_output_layer_and_non_affine_layers() -> None:
    spec, model = make(CNN, list(SHAPE))
    with pytest.raises(TransformError, match=r"'out': it is the network's output layer"):
        apply_operation(spec, model.state_dict(), Operation("deepen", "out"), 0)
    with pytest.raises(TransformError, match=r"not after 'pool' \(avgpool\)"):
        apply_operation(spec, model.state_dict(), Operation("deepen", "pool"), 0)
    assert places(spec, "deepen") == ["c1", "c2", "d"]


def test_deepen_inside_a_residual_body() -> None:
    layers = [
        {"type": "conv", "name": "c", "out": 3, "activation": "relu"},
        {
            "type": "residual",
            "name": "res",
            "layers": [
                {"type": "conv", "name": "r1", "out": 3, "activation": "silu"},
                {"type": "conv", "name": "r2", "out": 3, "batchnorm": True},
            ],
        },
        {"type": "global_avgpool"},
        {"type": "dense", "name": "out", "out": 2},
    ]
    spec, model = make(layers, [1, 5, 3])
    for target in ("r1", "r2"):
        result, child = grow(spec, model, Operation("deepen", target, {"kernel": 5}))
        assert result.spec.parent_of(result.info["inserted"]).name == "res"
        err, tol = max_error(model, child, (1, 5, 3))
        assert err <= tol


# ---- widen_kernel ---------------------------------------------------------------------------
@pytest.mark.parametrize(("target", "kernel"), [("c1", 5), ("c1", 7), ("c2", 5), ("c2", 9)])
def test_widen_kernel_keeps_outputs(target: str, kernel: int) -> None:
    spec, model = make(CNN, list(SHAPE))
    old = spec.find(target)
    result, child = grow(spec, model, Operation("widen_kernel", target, {"kernel": kernel}))
    new = result.spec.find(target)
    extra = (kernel - old.kernel) // 2
    assert new.kernel == kernel and new.pad == old.pad + extra
    assert new.padding == (None if old.padding is None else old.padding + extra)
    w_old = model.state_dict()[f"layers.{target}.conv.weight"]
    w_new = result.state_dict[f"layers.{target}.conv.weight"]
    assert torch.equal(w_new[..., extra:-extra, extra:-extra], w_old)
    ring = w_new.clone()
    ring[..., extra:-extra, extra:-extra] = 0
    assert not ring.any()  # the new taps are zero
    err, tol = max_error(model, child, SHAPE)
    assert err <= tol


@pytest.mark.parametrize(
    ("kernel", "why"), [(4, "must be even"), (3, "already 3"), (1, "already 3")]
)
def test_widen_kernel_refusals(kernel: int, why: str) -> None:
    spec, model = make(CNN, list(SHAPE))
    with pytest.raises(TransformError) as err:
        apply_operation(
            spec, model.state_dict(), Operation("widen_kernel", "c1", {"kernel": kernel}), 0
        )
    assert "'c1'" in str(err.value) and why in str(err.value)
    with pytest.raises(TransformError, match=r"not to 'd' \(dense\)"):
        apply_operation(spec, model.state_dict(), Operation("widen_kernel", "d"), 0)
    assert places(spec, "widen_kernel") == ["c1", "c2"]


# ---- add_skip -------------------------------------------------------------------------------
@pytest.mark.parametrize(("target", "span"), [("c1", 1), ("c1", 2), ("d", 1)])
def test_add_skip_wraps_layers_with_a_zero_projection(target: str, span: int) -> None:
    layers = [*CNN[:1], {"type": "conv", "name": "c1b", "out": 2, "activation": "relu"}, *CNN[1:]]
    spec, model = make(layers, list(SHAPE))
    result, child = grow(spec, model, Operation("add_skip", target, {"span": span}))
    block = result.spec.find(result.info["inserted"])
    assert isinstance(block, Residual) and block.skip == "projection"
    assert [layer.name for layer in block.layers] == result.info["wrapped"]
    assert len(block.layers) == span and block.layers[0].name == target
    skip = result.state_dict[f"layers.{block.name}.skip.weight"]
    assert not skip.any()
    assert skip.shape[:2] == (
        result.spec.info[block.name].out_shape[0],
        result.spec.info[block.name].in_shape[0],
    )
    err, tol = max_error(model, child, SHAPE)
    assert err <= tol


def test_add_skip_refusals() -> None:
    spec, model = make(CNN, list(SHAPE))

    def refuse(target: str, span: int, *words: str) -> None:
        with pytest.raises(TransformError) as err:
            apply_operation(
                spec, model.state_dict(), Operation("add_skip", target, {"span": span}), 0
            )
        assert f"'{target}'" in str(err.value)
        for word in words:
            assert word in str(err.value)

    refuse("c2", 1, "spatial size", "[3, 9, 11] to [4, 4, 5]")  # stride 2, no padding
    refuse("c1", 3, "spatial size")  # over the pooling
    refuse("d", 2, "network's last layer 'out'")
    refuse("out", 1, "network's last layer")
    refuse("d", 5, "only 2 layer(s) follow")
    refuse("pool", 1, "no dense, conv or residual layer")
    assert places(spec, "add_skip") == ["c1", "d"]
    assert places(spec, "add_skip", {"span": 2}) == []
