"""Property test: every exact operation, at every place ``places()`` offers, on hundreds of
random architectures, preserves the function (max |child - parent| <= 1e-5 * max(1, |parent|))."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from _arch_gen import prepare_model, random_spec

from growsearch.builder import build_model
from growsearch.exceptions import TransformError
from growsearch.spec import ACTIVATIONS, Spec
from growsearch.transforms import Operation, apply_operation, get_operation, places

N_ARCHS = 320
CHUNKS = 4
OPS = ("widen", "deepen", "widen_kernel", "add_skip")
STATS: Counter[str] = Counter()
WORST = [0.0]  # the largest error / tolerance seen, printed with the coverage summary


def _random_args(name: str, rng: np.random.Generator) -> dict:
    if name == "widen":
        if rng.random() < 0.5:
            return {"factor": float(rng.choice([1.3, 1.5, 2.0, 2.0, 3.0]))}
        return {"width": None}  # filled in from the target's width
    if name == "deepen":
        return {"kernel": int(rng.choice([1, 3, 5, 7])), "batchnorm": bool(rng.random() < 0.4)}
    if name == "widen_kernel":
        return {"kernel": None}
    return {"span": int(rng.choice([1, 1, 2]))}


def _pick(spec: Spec, rng: np.random.Generator) -> Operation | None:
    names = [n for n in OPS if places(spec, n)]
    if not names:
        return None
    name = names[int(rng.integers(len(names)))]
    args = _random_args(name, rng)
    where = places(spec, name, {k: v for k, v in args.items() if v is not None})
    if not where:  # e.g. no span of 2 fits anywhere: fall back to the defaults
        args, where = {}, places(spec, name)
    target = where[int(rng.integers(len(where)))]
    layer = spec.find(target)
    if args.get("width", 0) is None:
        args["width"] = spec.info[target].out_shape[0] + int(rng.integers(1, 4))
    if "kernel" in args and args["kernel"] is None:
        args["kernel"] = layer.kernel + int(rng.choice([2, 4]))  # type: ignore[union-attr]
    return Operation(name, target, args)


def _features(spec: Spec) -> set[str]:
    """What one architecture exercises, to show the run covered every variation it claims."""
    found = {"tabular input"}
    if len(spec.input_shape) == 3:
        _, h, w = spec.input_shape
        found = {"non-square input" if h != w else "square input"}
    layers = [layer for _, layer in spec.walk()]
    affine = [x for x in layers if x.kind in ("dense", "conv")]
    found |= {"with bias" if x.bias else "without bias" for x in affine}  # type: ignore[union-attr]
    bn = any(x.kind == "batchnorm" or getattr(x, "batchnorm", False) for x in layers)
    found.add("with batchnorm" if bn else "without batchnorm")
    if any(x.kind == "dropout" or getattr(x, "dropout", 0) > 0 for x in layers):
        found.add("dropout")
    found |= {f"residual {x.skip}" for x in layers if x.kind == "residual"}  # type: ignore[union-attr]
    found |= {x.kind for x in layers if x.kind in ("concat", "flatten", "global_avgpool")}
    found |= {f"activation {getattr(x, 'activation', getattr(x, 'fn', ''))}" for x in layers}
    return found - {"activation "}


def _check_places_consistent(spec: Spec) -> None:
    """Every layer not in places() is refused with a TransformError naming it."""
    for name in OPS:
        listed = set(places(spec, name))
        for layer in spec.names():
            if layer in listed:
                continue
            with pytest.raises(TransformError) as err:
                get_operation(name).check(spec, layer)
            assert f"'{layer}'" in str(err.value)


def _run_case(seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = random_spec(rng)
    STATS.update(_features(spec))
    model, opt_state = prepare_model(spec, rng)
    state = model.state_dict()
    x = torch.randn((8, *spec.input_shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x)
    tol = 1e-5 * max(1.0, ref.abs().max().item())
    if seed % 4 == 0:
        _check_places_consistent(spec)
    ops = []
    for _ in range(int(rng.integers(1, 5))):
        op = _pick(spec, rng)
        if op is None:
            break
        before = {k: v.clone() for k, v in state.items()}
        opt_before = {k: {kk: vv.clone() for kk, vv in e.items()} for k, e in opt_state.items()}
        result = apply_operation(spec, state, op, rng, optimizer_state=opt_state)
        ops.append(str(op))
        context = f"seed {seed}, ops {ops}, spec {spec.to_json()}"
        assert result.exact, context
        # the parent is untouched, bit for bit (weights and optimiser state)
        assert state.keys() == before.keys()
        assert all(torch.equal(state[k], before[k]) for k in state), context
        assert all(
            torch.equal(v, opt_before[k][kk]) for k, e in opt_state.items() for kk, v in e.items()
        ), context
        # the child is built from its own (round-tripped) spec and loads strictly
        child_spec = Spec.from_json(result.spec.to_json())
        assert child_spec == result.spec
        child = build_model(child_spec)
        child.load_state_dict(result.state_dict, strict=True)
        child.eval()
        with torch.no_grad():
            out = child(x)
        err = (out - ref).abs().max().item()
        assert err <= tol, f"error {err:.3e} > {tol:.3e}; {context}"
        WORST[0] = max(WORST[0], err / tol)
        # the optimiser state follows the child's parameters
        params = dict(child.named_parameters())
        assert result.optimizer_state is not None
        for k, entry in result.optimizer_state.items():
            assert entry["momentum_buffer"].shape == params[k].shape, (k, context)
        json.dumps(result.info)  # JSON-safe
        STATS[op.name] += 1
        STATS["ops"] += 1
        spec, state, opt_state = result.spec, result.state_dict, result.optimizer_state
    STATS["archs"] += 1
    STATS["sequences"] += bool(ops)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_architectures_grow_exactly(chunk: int) -> None:
    for seed in range(chunk, N_ARCHS, CHUNKS):
        _run_case(seed)


def test_property_run_covered_everything() -> None:
    """Runs after the chunks (file order): the random run really exercised every operation."""
    if STATS["archs"] < N_ARCHS:
        pytest.skip("the property chunks did not all run in this session")
    print(
        f"\nproperty test: {STATS['archs']} architectures, {STATS['sequences']} op sequences, "
        f"{STATS['ops']} operations: "
        + ", ".join(f"{n} {STATS[n]}" for n in OPS)
        + f"; largest error / tolerance {WORST[0]:.3g}"
    )
    assert STATS["archs"] >= 300
    assert STATS["sequences"] >= 290
    for name in OPS:
        assert STATS[name] >= 40, (name, STATS)
    for feature in (
        "non-square input",
        "square input",
        "tabular input",
        "with bias",
        "without bias",
        "with batchnorm",
        "without batchnorm",
        "dropout",
        "residual identity",
        "residual projection",
        "concat",
        "flatten",
        "global_avgpool",
        *(f"activation {a}" for a in ACTIVATIONS),
    ):
        assert STATS[feature] >= 10, (feature, STATS)
