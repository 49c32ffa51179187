"""Architecture spec: parsing, JSON round trip, stable hash, shapes, parameter and FLOP counts."""

from __future__ import annotations

import json

import pytest
import torch

from growsearch.builder import build_model
from growsearch.exceptions import SpecError
from growsearch.spec import Conv, Dense, Spec, spec_diff

CNN = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv", "out": 8, "kernel": 3, "batchnorm": True, "activation": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "out": 32, "activation": "relu"},
        {"type": "dense", "out": 10},
    ],
}
MLP = {
    "input_shape": [64],
    "layers": [
        {"type": "dense", "out": 32, "activation": "tanh", "bias": False},
        {"type": "dropout", "p": 0.1},
        {"type": "dense", "out": 10},
    ],
}
RICH = {
    "input_shape": [3, 9, 6],
    "layers": [
        {"type": "conv", "out": 4, "kernel": 3, "batchnorm": True, "activation": "relu"},
        {
            "type": "residual",
            "activation": "relu",
            "layers": [
                {"type": "conv", "out": 5, "batchnorm": True, "activation": "relu"},
                {"type": "conv", "out": 4, "batchnorm": True},
            ],
        },
        {"type": "concat", "branches": [[{"type": "conv", "out": 2, "kernel": 1}], []]},
        {"type": "avgpool", "size": 3},
        {"type": "global_avgpool"},
        {"type": "layernorm"},
        {"type": "dense", "out": 7},
    ],
}


@pytest.mark.parametrize("raw", [CNN, MLP, RICH], ids=["cnn", "mlp", "rich"])
def test_json_round_trip_and_stable_hash(raw: dict) -> None:
    spec = Spec.from_dict(raw)
    again = Spec.from_json(spec.to_json())
    assert again == spec
    assert again.hash == spec.hash
    assert len(spec.hash) == 64
    # Canonical JSON: key order of the input does not matter.
    shuffled = json.loads(json.dumps(spec.to_dict()))
    shuffled["layers"] = [dict(reversed(list(layer.items()))) for layer in shuffled["layers"]]
    assert Spec.from_dict(shuffled).hash == spec.hash


@pytest.mark.parametrize("raw", [CNN, MLP, RICH], ids=["cnn", "mlp", "rich"])
def test_param_count_matches_torch_and_output_shape(raw: dict) -> None:
    spec = Spec.from_dict(raw)
    model = build_model(spec, seed=0)
    assert spec.num_params == sum(p.numel() for p in model.parameters())
    out = model(torch.randn(2, *spec.input_shape))
    assert tuple(out.shape) == (2, spec.num_classes)


def test_cnn_numbers_by_hand() -> None:
    spec = Spec.from_dict(CNN)
    # conv: 1*8*9 + 8 bias + 16 bn; dense: 128*32 + 32; out: 32*10 + 10
    assert spec.num_params == 72 + 8 + 16 + 4096 + 32 + 330
    assert spec.flops == 2 * (1 * 9 * 8 * 64) + 2 * 128 * 32 + 2 * 32 * 10
    assert spec.info["flatten2"].out_shape == (128,)
    assert spec.depth == 3
    assert spec.names() == ["conv0", "maxpool1", "flatten2", "dense3", "dense4"]


def test_different_specs_hash_differently() -> None:
    a = Spec.from_dict(CNN)
    b = a.replace_layer("dense3", Dense(name="dense3", out=33, activation="relu"))
    assert a.hash != b.hash
    assert spec_diff(a, b) == ["~ dense3: out 32 -> 33"]


def test_weights_are_named_by_layer_name() -> None:
    spec = Spec.from_dict(CNN)
    keys = set(build_model(spec).state_dict())
    assert "layers.conv0.conv.weight" in keys
    assert "layers.conv0.bn.running_var" in keys
    assert "layers.dense4.linear.bias" in keys
    grown = spec.insert_after(
        "conv0", Conv(name="conv9", out=8, kernel=3, batchnorm=False, activation="relu")
    )
    # Inserting a layer renames nothing else.
    assert keys < set(build_model(grown).state_dict())


def test_explicit_names_are_kept_and_auto_names_avoid_them() -> None:
    raw = {
        "input_shape": [4],
        "layers": [{"type": "dense", "out": 3}, {"type": "dense", "out": 2, "name": "dense0"}],
    }
    spec = Spec.from_dict(raw)
    assert spec.names()[1] == "dense0"
    assert spec.names()[0] != "dense0"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"input_shape": [1, 8, 8], "layers": [{"type": "dense", "out": 10}]}, "put a 'flatten'"),
        (
            {"input_shape": [1, 8, 8], "layers": [{"type": "conv", "out": 4, "kernal": 3}]},
            "did you mean 'kernel'",
        ),
        (
            {"input_shape": [1, 8, 8], "layers": [{"type": "conv2d", "out": 4}]},
            "did you mean 'conv'",
        ),
        ({"input_shape": [8], "layers": [{"type": "dense", "out": 0}]}, "positive integer"),
        (
            {"input_shape": [8], "layers": [{"type": "dense", "out": 4, "activation": "rleu"}]},
            "did you mean 'relu'",
        ),
        (
            {
                "input_shape": [1, 2, 2],
                "layers": [{"type": "maxpool", "size": 3}, {"type": "flatten"}],
            },
            "does not fit",
        ),
        ({"input_shape": [8], "layers": []}, "at least one layer"),
        ({"input_shape": [0, 8], "layers": [{"type": "dense", "out": 2}]}, "input_shape"),
        (
            {
                "input_shape": [4],
                "layers": [
                    {"type": "dense", "out": 2, "name": "a"},
                    {"type": "dense", "out": 2, "name": "a"},
                ],
            },
            "used twice",
        ),
        (
            {
                "input_shape": [2, 4, 4],
                "layers": [{"type": "residual", "layers": [{"type": "conv", "out": 3}]}],
            },
            "identity skip needs the same shape",
        ),
    ],
)
def test_bad_specs_name_the_problem(raw: dict, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        Spec.from_dict(raw)
    assert needle in str(err.value)


def test_several_problems_are_reported_together() -> None:
    raw = {"input_shape": [8], "layers": [{"type": "dense", "outt": 3}, {"type": "nope"}]}
    with pytest.raises(SpecError) as err:
        Spec.from_dict(raw)
    text = str(err.value)
    assert "problems" in text and "outt" in text and "nope" in text
