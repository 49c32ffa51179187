"""The training loop, evaluation, devices, seeding and optimiser state keyed by name."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from growsearch.builder import build_model
from growsearch.data import DataConfig, Dataset, DeviceData, load_dataset
from growsearch.exceptions import ConfigError, TrainingDivergedError
from growsearch.spec import Spec
from growsearch.training import (
    EpochResult,
    TrainConfig,
    TrainResult,
    check_train_config,
    evaluate,
    load_optimizer_state_by_name,
    make_optimizer,
    optimizer_state_by_name,
    seed_everything,
    select_device,
    train,
)

CPU = torch.device("cpu")
MLP = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "flatten"},
        {"type": "dense", "out": 32, "activation": "relu"},
        {"type": "dense", "out": 10},
    ],
}
CNN = {
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv", "out": 4, "kernel": 3, "batchnorm": True, "activation": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "out": 10},
    ],
}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataConfig(), seed=0)


@pytest.fixture(scope="module")
def data(digits: Dataset) -> DeviceData:
    return DeviceData(digits, CPU, 64)


def mlp(seed: int = 0) -> nn.Module:
    return build_model(Spec.from_dict(MLP), seed=seed)


# ---- the loop ---------------------------------------------------------------------------


def test_tiny_mlp_learns_digits(data: DeviceData) -> None:
    seen: list[EpochResult] = []
    result = train(mlp(), data, TrainConfig(), epochs=3, on_epoch=seen.append)
    assert isinstance(result, TrainResult)
    assert [e.epoch for e in seen] == [1, 2, 3] and seen == result.epochs
    assert result.final is result.epochs[-1]
    assert result.final.val_accuracy > 0.8
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss
    assert all(e.samples == 1438 and e.seconds > 0 for e in result.epochs)
    assert result.samples_per_second > 0 and result.seconds >= sum(e.seconds for e in seen) * 0.99


def test_reported_validation_matches_evaluate(data: DeviceData) -> None:
    model = mlp()
    result = train(model, data, TrainConfig(optimizer="adam", lr=0.01), epochs=2)
    acc, loss = evaluate(model, data.val_batches(), CPU)
    assert acc == pytest.approx(result.final.val_accuracy)
    assert loss == pytest.approx(result.final.val_loss)
    assert acc > 0.8


def test_training_is_deterministic_on_cpu(data: DeviceData) -> None:
    a = train(mlp(1), data, TrainConfig(), epochs=2, generator_seed=5)
    b = train(mlp(1), data, TrainConfig(), epochs=2, generator_seed=5)
    c = train(mlp(1), data, TrainConfig(), epochs=2, generator_seed=6)
    assert [e.val_loss for e in a.epochs] == [e.val_loss for e in b.epochs]
    assert a.final.train_loss != c.final.train_loss


def test_on_epoch_exceptions_propagate(data: DeviceData) -> None:
    class Pruned(Exception):
        pass

    calls: list[int] = []

    def prune(e: EpochResult) -> None:
        calls.append(e.epoch)
        raise Pruned

    with pytest.raises(Pruned):
        train(mlp(), data, TrainConfig(), epochs=3, on_epoch=prune)
    assert calls == [1]


def test_infinite_weights_raise_diverged(data: DeviceData) -> None:
    model = mlp()
    with torch.no_grad():
        model.layers["dense1"].linear.weight[0, 0] = float("inf")
    expected = "in epoch 1: the training loss became nan"
    with pytest.raises(TrainingDivergedError, match=expected) as e:
        train(model, data, TrainConfig(), epochs=2)
    assert e.value.epoch == 1  # type: ignore[attr-defined]
    assert "lower train.lr (now 0.05)" in str(e.value)


def test_divergence_names_the_epoch_it_happened_in(data: DeviceData) -> None:
    model = mlp()

    def poison(e: EpochResult) -> None:  # after epoch 1, as a blown-up step would
        with torch.no_grad():
            model.layers["dense2"].linear.bias[0] = float("nan")

    with pytest.raises(TrainingDivergedError, match="in epoch 2") as e:
        train(model, data, TrainConfig(), epochs=3, on_epoch=poison)
    assert e.value.epoch == 2  # type: ignore[attr-defined]


def test_bf16_autocast_and_batchnorm_model(data: DeviceData) -> None:
    model = build_model(Spec.from_dict(CNN), seed=0)
    result = train(model, data, TrainConfig(amp="bf16", lr=0.1), epochs=2)
    assert np.isfinite(result.final.val_loss) and result.final.val_accuracy > 0.5
    assert next(model.parameters()).dtype == torch.float32  # autocast leaves weights alone


def test_streamed_data_trains_the_same(digits: Dataset, data: DeviceData) -> None:
    streamed = DeviceData(digits, CPU, 64, max_device_bytes=0)
    assert not streamed.on_device
    a = train(mlp(), data, TrainConfig(), epochs=1)
    b = train(mlp(), streamed, TrainConfig(), epochs=1)
    # Same permutation stream, same batches: the same numbers.
    assert a.final.val_loss == pytest.approx(b.final.val_loss, rel=1e-6)


def test_lr_override_and_given_optimizer(data: DeviceData) -> None:
    model = mlp()
    opt = make_optimizer(model, TrainConfig(), lr=0.02)
    assert opt.param_groups[0]["lr"] == 0.02
    before = model.layers["dense1"].linear.weight.detach().clone()
    train(model, data, TrainConfig(), epochs=1, optimizer=opt)
    assert not torch.equal(before, model.layers["dense1"].linear.weight)
    assert opt.state  # the given optimiser did the steps
    train(model, data, TrainConfig(), epochs=1, optimizer=opt, lr=0.001)
    assert opt.param_groups[0]["lr"] == 0.001
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train(model, data, TrainConfig(), epochs=0)


# ---- evaluate ---------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_exact_values_and_restores_mode(training: bool) -> None:
    model = nn.Sequential(nn.Identity(), nn.Dropout(0.9))  # dropout would scramble train mode
    model.train(training)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.5, 0.2]])
    labels = torch.tensor([0, 1, 1, 0])
    batches = [(logits[:3], labels[:3]), (logits[3:], labels[3:])]
    acc, loss = evaluate(model, batches, CPU)
    assert acc == 0.75
    assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert model.training is training
    assert all(m.training is training for m in model.modules())


def test_evaluate_restores_mode_after_an_error() -> None:
    model = nn.Linear(2, 2).train()
    with pytest.raises(RuntimeError):
        evaluate(model, [(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))], CPU)
    assert model.training


# ---- optimiser state by name ------------------------------------------------------------


def two_layers(order: tuple[str, str]) -> nn.Module:
    shapes = {"a": (3, 4), "b": (4, 2)}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layers = {k: nn.Linear(*shapes[k]) for k in sorted(order)}
    return nn.ModuleDict({k: layers[k] for k in order})


def run(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(5, 3, generator=gen)
        loss = model["b"](torch.relu(model["a"](x))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_state_round_trip_by_name(optimizer: str) -> None:
    cfg = TrainConfig(optimizer=optimizer, lr=0.01, weight_decay=0.01)
    src = two_layers(("a", "b"))
    opt = make_optimizer(src, cfg)
    run(src, opt, 3)
    state = optimizer_state_by_name(opt, src)
    assert set(state) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    keys = {"sgd": {"momentum_buffer"}, "adam": {"exp_avg", "exp_avg_sq", "step"}}
    assert set(state["a.weight"]) == keys.get(optimizer, keys["adam"])
    # The parameters registered in the other order: positions differ, names do not.
    dst = two_layers(("b", "a"))
    dst.load_state_dict(src.state_dict())
    dst_opt = make_optimizer(dst, cfg)
    load_optimizer_state_by_name(dst_opt, dst, state)
    restored = optimizer_state_by_name(dst_opt, dst)
    for name, entry in state.items():
        for key, value in entry.items():
            assert torch.equal(restored[name][key], value), (name, key)
    # ... and training on continues exactly as the source would.
    run(src, opt, 2)
    run(dst, dst_opt, 2)
    for name, p in src.named_parameters():
        assert torch.equal(p, dict(dst.named_parameters())[name]), name


def test_exported_state_is_a_copy() -> None:
    model = two_layers(("a", "b"))
    opt = make_optimizer(model, TrainConfig())
    run(model, opt, 1)
    state = optimizer_state_by_name(opt, model)
    saved = state["a.weight"]["momentum_buffer"].clone()
    run(model, opt, 1)
    assert torch.equal(state["a.weight"]["momentum_buffer"], saved)


def test_missing_params_start_fresh_and_shapes_must_match() -> None:
    model = two_layers(("a", "b"))
    opt = make_optimizer(model, TrainConfig(optimizer="adam"))
    run(model, opt, 1)
    state = optimizer_state_by_name(opt, model)
    fresh = make_optimizer(model, TrainConfig(optimizer="adam"))
    partial = {k: v for k, v in state.items() if k.startswith("a.")} | {"gone.weight": {}}
    load_optimizer_state_by_name(fresh, model, partial)
    assert set(optimizer_state_by_name(fresh, model)) == {"a.weight", "a.bias"}
    wrong = {"b.weight": {"exp_avg": torch.zeros(3, 3), "step": torch.tensor(1.0)}}
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 'b\.weight' has shape \(3, 3\)"):
        load_optimizer_state_by_name(fresh, model, wrong)


# ---- configuration, devices, seeding ----------------------------------------------------


def test_make_optimizer_follows_the_config() -> None:
    model = mlp()
    sgd = make_optimizer(model, TrainConfig(momentum=0.5, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.5 and sgd.param_groups[0]["weight_decay"] == 1e-4
    assert isinstance(make_optimizer(model, TrainConfig(optimizer="adam")), torch.optim.Adam)
    adamw = make_optimizer(model, TrainConfig(optimizer="adamw", lr=0.003))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 0.003
    with pytest.raises(ConfigError, match=r"unknown optimizer 'adma' \(did you mean 'adam'\?\)"):
        make_optimizer(model, TrainConfig(optimizer="adma"))


def test_check_train_config_lists_every_problem() -> None:
    assert check_train_config(TrainConfig()) == []
    bad = TrainConfig(
        epochs_per_trial=0,
        optimizer="rmsprop",
        lr=-1.0,
        momentum=1.0,
        weight_decay=-0.1,
        seed_epochs=0,
        amp="fp8",
        device="tpu",
    )
    fields = [p.split(":")[0] for p in check_train_config(bad)]
    assert fields == [
        "train.epochs_per_trial",
        "train.seed_epochs",
        "train.optimizer",
        "train.lr",
        "train.momentum",
        "train.weight_decay",
        "train.amp",
        "train.device",
    ]
    assert TrainConfig(epochs_per_trial=3).epochs_for_seed == 3
    assert TrainConfig(epochs_per_trial=3, seed_epochs=5).epochs_for_seed == 5


def test_select_device() -> None:
    assert select_device("cpu") == CPU
    auto = select_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda" and auto.index is not None
    elif not torch.backends.mps.is_available():
        assert auto == CPU
    with pytest.raises(ConfigError, match=r"train\.device: unknown device 'gpu0'"):
        select_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"'cuda:1' requested .* use device: auto or cpu"):
            select_device("cuda:1")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="MPS is not available"):
            select_device("mps")


def test_seed_everything_repeats_every_generator() -> None:
    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(11)
    first = draw()
    seed_everything(11)
    assert draw() == first
    seed_everything(12)
    assert draw() != first
