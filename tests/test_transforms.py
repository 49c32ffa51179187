"""Widen and the public API of growsearch.transforms (explicit cases; the property test is
test_transforms_property.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _arch_gen import grow, make, max_error

from growsearch.builder import build_model
from growsearch.exceptions import NotExactError, TransformError
from growsearch.transforms import (
    INIT_MODES,
    Operation,
    apply_operation,
    apply_operations,
    child_spec,
    get_operation,
    list_operations,
    places,
)
from growsearch.transforms._channel_map import widen_map

MLP = [
    {"type": "dense", "name": "d1", "out": 4, "batchnorm": True, "activation": "relu"},
    {"type": "dense", "name": "d2", "out": 5, "activation": "tanh", "dropout": 0.2},
    {"type": "dense", "name": "out", "out": 3},
]


# ---- registry and Operation ------------------------------------------------------------------
def test_registry_lists_every_operation_with_docs() -> None:
    ops = {o.name: o for o in list_operations()}
    assert list(ops) == ["widen", "deepen", "widen_kernel", "add_skip"]
    assert all(o.exact and o.description and o.args for o in ops.values())
    assert get_operation("deepen").defaults["kernel"] == 3
    assert INIT_MODES == ("net2net", "random-pad", "random-init")
    with pytest.raises(TransformError, match=r"unknown operation 'widn'.*did you mean 'widen'"):
        get_operation("widn")


def test_operation_round_trips_through_json_dicts() -> None:
    op = Operation("widen", "d1", {"factor": 1.5})
    assert Operation.from_dict(op.to_dict()) == op
    assert len({op, Operation.from_dict(op.to_dict())}) == 1  # hashable despite the args dict
    assert str(op) == "widen(d1, factor=1.5)"
    with pytest.raises(TransformError, match="an operation must look like"):
        Operation.from_dict({"name": "widen", "layer": "d1"})


def test_unknown_argument_and_init_mode_are_refused() -> None:
    spec, model = make(MLP, [6])
    with pytest.raises(TransformError, match=r"'widen' has no argument\(s\) 'facter'"):
        apply_operation(spec, model.state_dict(), Operation("widen", "d1", {"facter": 2}), 0)
    with pytest.raises(TransformError, match="unknown init mode 'zeros'"):
        apply_operation(spec, model.state_dict(), Operation("widen", "d1"), 0, init="zeros")


def test_state_dict_that_does_not_match_the_spec_is_refused() -> None:
    spec, model = make(MLP, [6])
    state = dict(model.state_dict())
    state.pop("layers.d2.linear.bias")
    with pytest.raises(TransformError, match=r"missing \['layers.d2.linear.bias'\]"):
        apply_operation(spec, state, Operation("widen", "d1"), 0)


# ---- widen: dense ----------------------------------------------------------------------------
def test_widen_factor_two_copies_every_unit_once_with_unequal_exact_split() -> None:
    spec, model = make(MLP, [6])
    result, child = grow(spec, model, Operation("widen", "d1", {"factor": 2}))
    err, tol = max_error(model, child, (6,))
    assert err <= tol
    assert result.exact and result.info["new_width"] == 8 and result.info["noise"] == 0.0
    assert result.spec.find("d1").out == 8
    p, c = model.state_dict(), result.state_dict
    w_old, w_new = p["layers.d1.linear.weight"], c["layers.d1.linear.weight"]  # (4, 6) -> (8, 6)
    assert torch.equal(w_new[:4], w_old)
    # every new row is an exact copy of a distinct old row (balanced replication)
    src = [next(u for u in range(4) if torch.equal(w_new[j], w_old[u])) for j in range(4, 8)]
    assert sorted(src) == [0, 1, 2, 3]
    for j, u in zip(range(4, 8), src, strict=True):
        assert c["layers.d1.linear.bias"][j] == p["layers.d1.linear.bias"][u]
        for part in ("weight", "bias", "running_mean", "running_var"):
            assert c[f"layers.d1.bn.{part}"][j] == p[f"layers.d1.bn.{part}"][u]
        # consumer: the two columns split the old one unequally and sum back to it
        col_old = p["layers.d2.linear.weight"][:, u]
        a, b = c["layers.d2.linear.weight"][:, u], c["layers.d2.linear.weight"][:, j]
        torch.testing.assert_close(a + b, col_old, rtol=1e-6, atol=1e-7)
        share = (a / col_old).mean().item()
        assert 0.2 < share < 0.8 and abs(share - 0.5) > 1e-4
    assert torch.equal(c["layers.d1.bn.num_batches_tracked"], p["layers.d1.bn.num_batches_tracked"])


@pytest.mark.parametrize(("old", "new"), [(4, 8), (3, 7), (5, 17), (2, 8)])
def test_copies_of_one_unit_get_shares_apart_by_a_margin(old: int, new: int) -> None:
    """Near-equal shares would leave copies almost in step under training: the k copies of a
    unit draw from disjoint strata, so their raw shares differ by >= 0.16 / k."""
    for seed in range(50):
        m = widen_map(old, new, np.random.default_rng(seed))
        for u in range(old):
            shares = m.frac[m.src == u]
            k = shares.numel()
            assert torch.isclose(shares.sum(), torch.tensor(1.0, dtype=torch.float64))
            if k == 1:
                continue
            gaps = shares.sort().values.diff()
            assert gaps.min().item() >= 0.16 / k / (0.7 * k) - 1e-12, (seed, u, shares)


@pytest.mark.parametrize(
    ("args", "width"),
    [({"factor": 1.5}, 6), ({"factor": 3}, 12), ({"width": 5}, 5), ({"factor": 1.01}, 5)],
)
def test_widen_to_any_width(args: dict, width: int) -> None:
    spec, model = make(MLP, [6])
    result, child = grow(spec, model, Operation("widen", "d1", args))
    assert result.spec.find("d1").out == width
    err, tol = max_error(model, child, (6,))
    assert err <= tol


@pytest.mark.parametrize(
    "args",
    [{"factor": 1.0}, {"factor": "2"}, {"width": 4}, {"width": 2}, {"width": 6, "factor": 2}],
)
def test_widen_bad_width_is_refused(args: dict) -> None:
    spec, model = make(MLP, [6])
    with pytest.raises(TransformError, match="d1"):
        apply_operation(spec, model.state_dict(), Operation("widen", "d1", args), 0)


# ---- widen: conv -> flatten -> dense with a non-square map --------------------------------
def test_widen_conv_before_flatten_with_non_square_map() -> None:
    layers = [
        {
            "type": "conv",
            "name": "c1",
            "out": 3,
            "kernel": 3,
            "batchnorm": True,
            "activation": "relu",
        },
        {"type": "maxpool", "size": 2},  # (3, 4, 6) -> (3, 2, 3): 6 features per channel
        {"type": "flatten"},
        {"type": "dense", "name": "d", "out": 5, "activation": "relu"},
        {"type": "dense", "name": "out", "out": 2},
    ]
    spec, model = make(layers, [1, 4, 6])
    assert spec.info["c1"].out_shape == (3, 4, 6)
    result, child = grow(spec, model, Operation("widen", "c1", {"width": 5}))
    err, tol = max_error(model, child, (1, 4, 6))
    assert err <= tol
    p, c = model.state_dict(), result.state_dict
    assert c["layers.d.linear.weight"].shape == (5, 30)
    w_old, w_new = p["layers.c1.conv.weight"], c["layers.c1.conv.weight"]
    dense_old, dense_new = p["layers.d.linear.weight"], c["layers.d.linear.weight"]
    for j in (3, 4):
        u = next(u for u in range(3) if torch.equal(w_new[j], w_old[u]))
        block_new = dense_new[:, j * 6 : (j + 1) * 6]  # channel j owns 6 consecutive features
        block_src = dense_new[:, u * 6 : (u + 1) * 6]
        torch.testing.assert_close(block_new + block_src, dense_old[:, u * 6 : (u + 1) * 6])


# ---- widen through residual and concat blocks -------------------------------------------------
RES_IDENTITY = [
    {"type": "conv", "name": "stem", "out": 3, "batchnorm": True, "activation": "relu"},
    {
        "type": "residual",
        "name": "res",
        "activation": "relu",
        "layers": [
            {"type": "conv", "name": "r1", "out": 4, "batchnorm": True, "activation": "relu"},
            {"type": "conv", "name": "r2", "out": 3, "batchnorm": True},
        ],
    },
    {"type": "batchnorm", "name": "bn"},
    {"type": "global_avgpool"},
    {"type": "dense", "name": "out", "out": 2},
]


@pytest.mark.parametrize("target", ["stem", "r2"])
def test_widen_stream_of_identity_residual_widens_every_producer(target: str) -> None:
    spec, model = make(RES_IDENTITY, [2, 5, 4])
    result, child = grow(spec, model, Operation("widen", target, {"factor": 2}))
    assert result.info["widened"] == ["stem", "r2"]  # both sides of the add, the same map
    assert result.info["consumers"] == ["r1", "out"]
    assert result.state_dict["layers.bn.bn.running_var"].shape == (6,)
    err, tol = max_error(model, child, (2, 5, 4))
    assert err <= tol


def test_widen_inside_residual_body_only_touches_the_body() -> None:
    spec, model = make(RES_IDENTITY, [2, 5, 4])
    result, child = grow(spec, model, Operation("widen", "r1", {"factor": 1.5}))
    assert result.info["widened"] == ["r1"] and result.info["consumers"] == ["r2"]
    err, tol = max_error(model, child, (2, 5, 4))
    assert err <= tol


def test_widen_through_projection_skip() -> None:
    layers = [
        {"type": "dense", "name": "a", "out": 4, "activation": "relu"},
        {
            "type": "residual",
            "name": "res",
            "skip": "projection",
            "activation": "tanh",
            "layers": [
                {"type": "dense", "name": "b", "out": 5, "activation": "gelu"},
                {"type": "dense", "name": "c", "out": 3, "batchnorm": True},
            ],
        },
        {"type": "dense", "name": "out", "out": 2},
    ]
    spec, model = make(layers, [6])
    for target, dims in (("a", (3, 8)), ("c", (6, 4))):
        result, child = grow(spec, model, Operation("widen", target, {"factor": 2}))
        assert result.state_dict["layers.res.skip.weight"].shape == dims
        err, tol = max_error(model, child, (6,))
        assert err <= tol


def test_widen_inside_concat_and_through_a_pass_through_branch() -> None:
    layers = [
        {"type": "conv", "name": "a", "out": 2, "activation": "relu"},
        {
            "type": "concat",
            "name": "cat",
            "branches": [
                [{"type": "conv", "name": "b", "out": 3, "kernel": 1, "activation": "silu"}],
                [{"type": "activation", "fn": "relu"}],  # passes a's channels through
            ],
        },
        {"type": "flatten"},
        {"type": "dense", "name": "out", "out": 2},
    ]
    spec, model = make(layers, [1, 3, 2])
    for target, width in (("a", 4), ("b", 5)):
        result, child = grow(spec, model, Operation("widen", target, {"factor": 2}))
        err, tol = max_error(model, child, (1, 3, 2))
        assert err <= tol
        # the dense layer's input: (3 + 2 channels) x 6 features, one branch grown
        assert result.state_dict["layers.out.linear.weight"].shape == (2, (3 + 2 + width - 2) * 6)
    # growing b: its new channels sit inside b's slice, a's slice is unchanged
    result, _ = grow(spec, model, Operation("widen", "b", {"width": 4}))
    old, new = (
        model.state_dict()["layers.out.linear.weight"],
        result.state_dict["layers.out.linear.weight"],
    )
    assert torch.equal(new[:, 4 * 6 :], old[:, 3 * 6 :])


# ---- refusals -------------------------------------------------------------------------------
def test_widen_through_layernorm_is_refused_and_never_offered() -> None:
    layers = [
        {"type": "dense", "name": "d1", "out": 4, "activation": "relu"},
        {"type": "layernorm", "name": "ln"},
        {"type": "dense", "name": "d2", "out": 4, "activation": "relu"},
        {"type": "dense", "name": "out", "out": 2},
    ]
    spec, model = make(layers, [3])
    with pytest.raises(NotExactError) as err:
        apply_operation(spec, model.state_dict(), Operation("widen", "d1"), 0)
    assert "'d1'" in str(err.value) and "layernorm 'ln'" in str(err.value)
    assert "normalises" in str(err.value)
    assert places(spec, "widen") == ["d2"]


def test_widening_the_output_layer_is_refused() -> None:
    spec, model = make(MLP, [6])
    with pytest.raises(TransformError) as err:
        apply_operation(spec, model.state_dict(), Operation("widen", "out"), 0)
    assert "'out'" in str(err.value) and "network's output (3 values" in str(err.value)
    assert "out" not in places(spec, "widen")


def test_unknown_layer_is_refused_with_a_suggestion() -> None:
    spec, model = make(MLP, [6])
    for name in ("widen", "deepen", "add_skip"):
        with pytest.raises(TransformError) as err:
            apply_operation(spec, model.state_dict(), Operation(name, "d22"), 0)
        assert "'d22'" in str(err.value) and "no layer named" in str(err.value)
        assert "did you mean 'd2'" in str(err.value)


def test_widen_tied_to_the_network_input_is_refused() -> None:
    layers = [
        {
            "type": "residual",
            "name": "res",
            "layers": [
                {"type": "dense", "name": "a", "out": 3, "activation": "relu"},
                {"type": "dense", "name": "b", "out": 4},
            ],
        },
        {"type": "dense", "name": "out", "out": 2},
    ]
    spec, model = make(layers, [4])
    with pytest.raises(NotExactError) as err:
        apply_operation(spec, model.state_dict(), Operation("widen", "b"), 0)
    assert "'b'" in str(err.value) and "network input" in str(err.value)
    assert "residual block 'res'" in str(err.value)
    assert places(spec, "widen") == ["a"]


def test_widen_tied_to_a_concat_output_is_refused() -> None:
    layers = [
        {
            "type": "concat",
            "name": "cat",
            "branches": [
                [{"type": "dense", "name": "a", "out": 2}],
                [{"type": "dense", "name": "b", "out": 2}],
            ],
        },
        {
            "type": "residual",
            "name": "res",
            "layers": [
                {"type": "dense", "name": "c", "out": 4, "activation": "relu"},
            ],
        },
        {"type": "dense", "name": "out", "out": 2},
    ]
    spec, model = make(layers, [4])
    with pytest.raises(NotExactError, match=r"'c'.*output of concat 'cat'.*'res'"):
        apply_operation(spec, model.state_dict(), Operation("widen", "c"), 0)
    # widening a branch is fine: the residual's body then follows the concatenated map
    assert places(spec, "widen") == ["a", "b"]
    result, child = grow(spec, model, Operation("widen", "a", {"width": 3}))
    assert result.info["widened"] == ["a", "c"]
    err, tol = max_error(model, child, (4,))
    assert err <= tol


# ---- purity and reproducibility -------------------------------------------------------------
@pytest.mark.parametrize(
    "op",
    [
        Operation("widen", "d1", {"factor": 2}),
        Operation("deepen", "d1", {"batchnorm": True}),
        Operation("deepen", "d2"),
        Operation("add_skip", "d2"),
    ],
)
@pytest.mark.parametrize("init", INIT_MODES)
def test_parent_is_untouched_and_same_seed_same_child(op: Operation, init: str) -> None:
    spec, model = make(MLP, [6])
    state = model.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    a = apply_operation(spec, state, op, np.random.default_rng(7), init=init)
    b = apply_operation(spec, state, op, 7, init=init)
    assert all(torch.equal(state[k], before[k]) for k in before)
    assert a.spec == b.spec and a.info == b.info
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    # the child never shares storage with the parent, so training it cannot reach the parent
    parent_ptrs = {t.data_ptr() for t in state.values()}
    assert not parent_ptrs & {t.data_ptr() for t in a.state_dict.values()}


def test_different_seeds_give_different_splits() -> None:
    spec, model = make(MLP, [6])
    op = Operation("widen", "d1", {"factor": 2})
    a = apply_operation(spec, model.state_dict(), op, 1).state_dict["layers.d2.linear.weight"]
    b = apply_operation(spec, model.state_dict(), op, 2).state_dict["layers.d2.linear.weight"]
    assert not torch.equal(a, b)


def test_float64_weights_stay_float64() -> None:
    spec, model = make(MLP, [6])
    model = model.double()
    result = apply_operation(spec, model.state_dict(), Operation("deepen", "d1"), 0)
    assert result.state_dict["layers.d1.linear.weight"].dtype == torch.float64
    assert (
        result.state_dict[f"layers.{result.info['inserted']}.linear.weight"].dtype == torch.float64
    )


# ---- sequences ------------------------------------------------------------------------------
def test_apply_operations_in_sequence() -> None:
    spec, model = make(MLP, [6])
    ops = [
        Operation("widen", "d1", {"factor": 2}),
        Operation("deepen", "d1"),
        Operation("widen", "dense3", {"width": 9}),
        Operation("add_skip", "d2"),
    ]
    result = apply_operations(spec, model.state_dict(), ops, 3)
    child = build_model(result.spec)
    child.load_state_dict(result.state_dict, strict=True)
    err, tol = max_error(model, child.eval(), (6,))
    assert err <= tol
    assert result.exact and [s["operation"] for s in result.info["steps"]] == [
        "widen",
        "deepen",
        "widen",
        "add_skip",
    ]
    assert result.spec.find("dense3").out == 9 and result.spec.find("d1").out == 8
    planned = spec
    for op in ops:
        planned = child_spec(planned, op)
    assert planned == result.spec  # the same child spec, without any tensors
    mixed = apply_operations(spec, model.state_dict(), ops[:1], 3, init="random-pad")
    assert not mixed.exact
    empty = apply_operations(spec, model.state_dict(), [], 3)
    assert empty.exact and empty.spec == spec
    assert all(torch.equal(empty.state_dict[k], v) for k, v in model.state_dict().items())
