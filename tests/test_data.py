"""The data layer: registry, loaders (digits, IDX, tables), split, checks and device batches."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _datafiles import (
    IDX_NAMES,
    has_pyarrow,
    image_index,
    make_idx_folder,
    synthetic_images,
    tabular_frame,
    write_csv,
    write_idx,
    write_parquet,
)

from growsearch.data import (
    FASHION_CLASSES,
    DataConfig,
    Dataset,
    DeviceData,
    TabularEncoder,
    _registry,
    check_dataset,
    data_config,
    list_datasets,
    load_dataset,
    register_dataset,
    stratified_split,
)
from growsearch.exceptions import ConfigError, UserError


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*"))


def load_error(cfg: DataConfig, tmp_path: Path) -> str:
    """The message of the ConfigError ``load_dataset`` raises; asserts nothing was written and
    that ``check_dataset`` reports the same problems without raising."""
    before = files_under(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_dataset(cfg)
    assert files_under(tmp_path) == before
    assert check_dataset(cfg) == info.value.problems
    return str(info.value)


# ---- registry and digits ----------------------------------------------------------------


def test_registry_lists_the_builtin_datasets() -> None:
    assert set(list_datasets()) >= {"digits", "mnist", "fashion_mnist", "csv", "parquet"}
    assert list_datasets() == sorted(list_datasets())


def test_register_dataset_adds_a_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    @register_dataset("toy", check=lambda cfg: ["data.root: toy wants none"] if cfg.root else [])
    def _toy(cfg: DataConfig, seed: int) -> Dataset:
        x = torch.arange(8, dtype=torch.float32).reshape(4, 2)
        y = torch.tensor([0, 1, 0, 1])
        return Dataset("toy", (2,), 2, x, y, x, y, None, None, None, ["a", "b"])

    assert "toy" in list_datasets()
    assert load_dataset(DataConfig(dataset="toy")).num_train == 4
    assert check_dataset(DataConfig(dataset="toy", root="x")) == ["data.root: toy wants none"]
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy")(_toy)


def test_digits_loads_all_samples_scaled_and_split() -> None:
    ds = load_dataset(DataConfig(), seed=0)
    assert ds.name == "digits"
    assert ds.input_shape == (1, 8, 8)
    assert ds.num_classes == 10 and ds.class_names == [str(d) for d in range(10)]
    assert ds.x_train.shape == (1438, 1, 8, 8) and ds.x_val.shape == (359, 1, 8, 8)
    assert ds.num_train + ds.num_val == 1797
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    both = torch.cat([ds.x_train, ds.x_val])
    assert both.max().item() == 1.0 and both.min().item() == 0.0
    # Every value is an original 0..16 count divided by 16.
    assert torch.equal(both * 16, (both * 16).round())
    assert ds.x_test is None and ds.y_test is None and not ds.has_test
    # Stratified: each class keeps its share of the validation split to within one sample.
    total = torch.bincount(torch.cat([ds.y_train, ds.y_val]), minlength=10)
    val = torch.bincount(ds.y_val, minlength=10)
    assert torch.all((val - total * 0.2).abs() <= 1)


def test_digits_split_is_deterministic_in_the_seed() -> None:
    a, b = load_dataset(DataConfig(), seed=3), load_dataset(DataConfig(), seed=3)
    c = load_dataset(DataConfig(), seed=4)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_val, c.x_val)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.9])
def test_stratified_split_partitions_the_indices(fraction: float) -> None:
    y = np.array([0] * 50 + [1] * 30 + [2] * 7 + [3] * 1)
    train, val = stratified_split(y, fraction, seed=0)
    assert len(val) == round(len(y) * fraction)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(y)))
    for c, n in ((0, 50), (1, 30), (2, 7)):
        assert abs(int((y[val] == c).sum()) - n * fraction) <= 1
    assert (y[train] == 3).sum() == 1  # a one-sample class stays in training
    assert np.array_equal(stratified_split(y, fraction, seed=0)[1], val)


def test_data_config_reads_a_study_section() -> None:
    class Section:
        dataset, root, target, val_fraction, batch_size = "csv", "t.csv", "y", 0.3, 16

    class Study:
        data = Section()

    cfg = data_config(Study())
    assert cfg == DataConfig("csv", "t.csv", "y", 0.3, 16)


# ---- common configuration problems ------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (DataConfig(dataset="mnsit"), "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
        (DataConfig(val_fraction=0.0), "data.val_fraction: must be a number strictly between 0"),
        (DataConfig(val_fraction=1.0), "data.val_fraction"),
        (DataConfig(val_fraction=True), "data.val_fraction"),  # type: ignore[arg-type]
        (DataConfig(batch_size=0), "data.batch_size: must be a positive integer, got 0"),
        (DataConfig(root="somewhere"), "data.root: the digits dataset does not use it"),
        (DataConfig(target="label"), "data.target: the digits dataset does not use it"),
    ],
)
def test_bad_config_is_reported_before_loading(
    cfg: DataConfig, expected: str, tmp_path: Path
) -> None:
    assert expected in load_error(cfg, tmp_path)


def test_every_problem_is_reported_at_once() -> None:
    problems = check_dataset(DataConfig(dataset="nope", val_fraction=2, batch_size=-1))
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == [
        "data.dataset",
        "data.val_fraction",
        "data.batch_size",
    ]
    with pytest.raises(UserError) as info:
        load_dataset(DataConfig(dataset="nope", val_fraction=2, batch_size=-1))
    assert "3 problems" in str(info.value)


def test_check_dataset_accepts_good_configs(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "m")
    write_csv(tmp_path / "t.csv", tabular_frame(40))
    assert check_dataset(DataConfig()) == []
    assert check_dataset(DataConfig(dataset="mnist", root=str(tmp_path / "m"))) == []
    assert (
        check_dataset(DataConfig(dataset="csv", root=str(tmp_path / "t.csv"), target="species"))
        == []
    )


# ---- IDX ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_idx_round_trip_with_test_split(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_folder(tmp_path, n_train=60, n_test=20, gz=gz)
    ds = load_dataset(DataConfig(dataset="mnist", root=str(tmp_path), val_fraction=0.25), seed=1)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert (ds.num_train, ds.num_val) == (45, 15)
    x = torch.cat([ds.x_train, ds.x_val]).numpy()
    y = torch.cat([ds.y_train, ds.y_val]).numpy()
    idx = image_index(x)
    assert sorted(idx.tolist()) == list(range(60))  # every image once, none twice
    np.testing.assert_array_equal(np.rint(x[:, 0] * 255), arrays["train_images"][idx])
    np.testing.assert_array_equal(y, arrays["train_labels"][idx])
    assert x.min() >= 0.0 and x.max() <= 1.0
    # The test split is the t10k files, in file order.
    assert ds.x_test is not None and ds.y_test is not None
    np.testing.assert_array_equal(np.rint(ds.x_test.numpy()[:, 0] * 255), arrays["test_images"])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"])


def test_idx_without_test_files_and_in_torchvision_layout(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "FashionMNIST" / "raw", n_train=30, test=False)
    ds = load_dataset(DataConfig(dataset="fashion_mnist", root=str(tmp_path)))
    assert ds.num_train + ds.num_val == 30 and ds.x_test is None
    assert ds.class_names == FASHION_CLASSES and ds.class_names[9] == "Ankle boot"


def test_idx_images_need_not_be_28_pixels(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, n_train=20, n_test=5, size=12)
    ds = load_dataset(DataConfig(dataset="mnist", root=str(tmp_path)))
    assert ds.input_shape == (1, 12, 12) and ds.x_test is not None
    assert ds.x_test.shape == (5, 1, 12, 12)


def test_mnist_without_root(tmp_path: Path) -> None:
    msg = load_error(DataConfig(dataset="mnist"), tmp_path)
    assert "data.root: the mnist dataset needs the folder" in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg


def test_mnist_root_not_found_or_a_file(tmp_path: Path) -> None:
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path / "nowhere")), tmp_path)
    assert "data.root: folder not found" in msg and "nowhere" in msg
    (tmp_path / "f.txt").write_text("x")
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path / "f.txt")), tmp_path)
    assert "is a file" in msg


def test_missing_idx_files_are_named(tmp_path: Path) -> None:
    make_idx_folder(tmp_path)
    (tmp_path / (IDX_NAMES["train_labels"] + ".gz")).unlink()
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path)
    assert "lacks train-labels-idx1-ubyte" in msg and "(or the same name + .gz)" in msg
    # Half a test split is a broken download, not an absent test split.
    (tmp_path / (IDX_NAMES["test_images"] + ".gz")).unlink()
    make_idx_folder(tmp_path, test=False)
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path)
    assert "lacks t10k-images-idx3-ubyte" in msg


def test_bad_idx_magic(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, gz=False)
    images, _ = synthetic_images(60)
    write_idx(tmp_path / IDX_NAMES["train_images"], images, magic=0x00000801 + 0x1000)
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path)
    assert "not an IDX images file (magic 0x00001801, expected 0x00000803)" in msg
    # Labels and images swapped: the magic tells them apart.
    _, labels = synthetic_images(60)
    write_idx(tmp_path / IDX_NAMES["train_images"], labels)
    assert "not an IDX images file (magic 0x00000801" in load_error(
        DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path
    )


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_truncated_idx_file(tmp_path: Path, gz: bool) -> None:
    make_idx_folder(tmp_path, gz=gz, test=False)
    images, _ = synthetic_images(60)
    write_idx(tmp_path / (IDX_NAMES["train_images"] + (".gz" if gz else "")), images, cut=100)
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path)
    assert "truncated IDX file" in msg and "47040 bytes for shape (60, 28, 28)" in msg
    assert "holds 46940" in msg


def test_gzip_cut_short(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, test=False)
    path = tmp_path / (IDX_NAMES["train_images"] + ".gz")
    path.write_bytes(path.read_bytes()[:-200])
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path)
    assert "damaged or truncated" in msg and path.name in msg


def test_image_and_label_counts_must_match(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, test=False)
    _, labels = synthetic_images(59)
    write_idx(tmp_path / (IDX_NAMES["train_labels"] + ".gz"), labels)
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path)
    assert "holds 60 images but train-labels-idx1-ubyte.gz holds 59 labels" in msg


def test_idx_labels_out_of_range_or_one_class(tmp_path: Path) -> None:
    make_idx_folder(tmp_path, test=False)
    label_file = tmp_path / (IDX_NAMES["train_labels"] + ".gz")
    write_idx(label_file, np.full(60, 12, dtype=np.uint8))
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path)
    assert "holds label 12; mnist labels are 0..9" in msg
    write_idx(label_file, np.full(60, 3, dtype=np.uint8))
    msg = load_error(DataConfig(dataset="mnist", root=str(tmp_path)), tmp_path)
    assert "fewer than 2 classes" in msg


# ---- tables -----------------------------------------------------------------------------


def csv_cfg(path: Path, **kw: object) -> DataConfig:
    fields: dict[str, object] = {"target": "species", **kw}
    return DataConfig(dataset="csv", root=str(path), **fields)  # type: ignore[arg-type]


def test_csv_standardised_with_training_statistics(tmp_path: Path) -> None:
    frame = tabular_frame(200)
    n_gaps = int(frame["height"].isna().sum())
    write_csv(tmp_path / "t.csv", frame)
    expected = rf"imputed {n_gaps} missing \(or infinite\) numeric values"
    with pytest.warns(UserWarning, match=expected):
        ds = load_dataset(csv_cfg(tmp_path / "t.csv"), seed=0)
    enc = ds.preprocessing
    assert enc is not None
    assert ds.feature_names == [
        "id",
        "height",
        "weight",
        "colour=blue",
        "colour=green",
        "colour=red",
    ]
    assert ds.input_shape == (6,) and ds.num_classes == 3 and ds.class_names == ["0", "1", "2"]
    numeric = ds.x_train[:, :3].double()
    np.testing.assert_allclose(numeric.mean(0).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(numeric.std(0, unbiased=False).numpy(), 1.0, atol=1e-5)
    # The statistics are those of the training rows only: recover the rows from the id column.
    train_ids = np.rint(ds.x_train[:, 0].double().numpy() * enc.stds[0] + enc.means[0])
    val_ids = np.rint(ds.x_val[:, 0].double().numpy() * enc.stds[0] + enc.means[0])
    assert sorted([*train_ids, *val_ids]) == list(range(200))
    train_rows = frame.set_index("id").loc[train_ids.astype(int)]
    assert enc.means[1] == pytest.approx(train_rows["height"].mean())  # NaN skipped
    assert enc.means[2] == pytest.approx(train_rows["weight"].mean())
    assert enc.means[1] != pytest.approx(frame["height"].mean(), rel=1e-9)
    # Imputed heights sit at the training mean: 0 after standardisation.
    gaps = train_rows["height"].isna().to_numpy()
    assert gaps.any() and torch.all(ds.x_train[torch.tensor(gaps), 1] == 0)
    # One-hot colours: one 1 per row, all zeros where the colour is missing.
    onehot = ds.x_train[:, 3:]
    missing = torch.tensor(train_rows["colour"].isna().to_numpy())
    assert torch.all(onehot.sum(1) == (~missing).float())
    assert torch.equal(
        ds.y_train, torch.from_numpy(train_rows["species"].to_numpy().astype(np.int64))
    )


def test_csv_test_split_reuses_training_statistics(tmp_path: Path) -> None:
    frame = tabular_frame(120, seed=1)
    test = tabular_frame(30, seed=2)
    test.loc[0, "colour"] = "purple"  # unseen category -> all zeros
    write_csv(tmp_path / "train.csv", frame)
    write_csv(tmp_path / "test.csv", test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_dataset(csv_cfg(tmp_path / "train.csv", test=str(tmp_path / "test.csv")))
    enc = ds.preprocessing
    assert enc is not None and ds.x_test is not None and ds.y_test is not None
    weight = (test["weight"].to_numpy() - enc.means[2]) / enc.stds[2]
    np.testing.assert_allclose(ds.x_test[:, 2].numpy(), weight, rtol=1e-5, atol=1e-5)
    assert torch.all(ds.x_test[0, 3:] == 0)
    assert torch.equal(ds.y_test, torch.from_numpy(test["species"].to_numpy().astype(np.int64)))
    # The encoder survives JSON and encodes the same way.
    again = TabularEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert again == enc
    np.testing.assert_array_equal(again.transform(test)[0], ds.x_test.numpy())


def test_csv_string_labels_and_unseen_test_label(tmp_path: Path) -> None:
    frame = tabular_frame(60).assign(species=lambda f: f["species"].map({0: "b", 1: "a", 2: "c"}))
    write_csv(tmp_path / "t.csv", frame)
    test = frame.head(5).assign(species=["a", "a", "zebra", "b", "c"])
    write_csv(tmp_path / "test.csv", test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_dataset(csv_cfg(tmp_path / "t.csv"))
        assert ds.class_names == ["a", "b", "c"]
        with pytest.raises(ConfigError, match=r"data\.test: labels zebra of column 'species'"):
            load_dataset(csv_cfg(tmp_path / "t.csv", test=str(tmp_path / "test.csv")))


def test_csv_target_missing_or_misspelt(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", tabular_frame(20))
    msg = load_error(csv_cfg(tmp_path / "t.csv", target=None), tmp_path)
    assert "data.target: the csv dataset needs the name of the label column" in msg
    assert "id, height, weight, colour, species" in msg
    msg = load_error(
        DataConfig(dataset="csv", root=str(tmp_path / "t.csv"), target="specie"), tmp_path
    )
    assert "no column 'specie'" in msg and "(did you mean 'species'?)" in msg
    assert "id, height, weight, colour, species" in msg


def test_csv_path_problems(tmp_path: Path) -> None:
    msg = load_error(DataConfig(dataset="csv", target="y"), tmp_path)
    assert "data.root: the csv dataset needs the path" in msg
    msg = load_error(csv_cfg(tmp_path / "absent.csv"), tmp_path)
    assert "data.root: file not found" in msg and "absent.csv" in msg
    msg = load_error(csv_cfg(tmp_path), tmp_path)
    assert "is a folder; the csv dataset needs a file path" in msg


def test_a_file_that_is_not_csv(tmp_path: Path) -> None:
    (tmp_path / "img.csv").write_bytes(bytes(range(256)) * 4)
    msg = load_error(csv_cfg(tmp_path / "img.csv"), tmp_path)
    assert "is not a CSV file (it holds binary data)" in msg
    write_parquet(tmp_path / "t.parquet", tabular_frame(10))
    msg = load_error(csv_cfg(tmp_path / "t.parquet"), tmp_path)
    assert "is a Parquet file, not CSV; set data.dataset: parquet" in msg
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in load_error(csv_cfg(tmp_path / "empty.csv"), tmp_path)


def test_csv_with_one_class_or_a_regression_target(tmp_path: Path) -> None:
    write_csv(tmp_path / "one.csv", tabular_frame(20).assign(species=7))
    msg = load_error(csv_cfg(tmp_path / "one.csv"), tmp_path)
    assert "column 'species' has 1 class (7); a classifier needs at least 2" in msg
    write_csv(tmp_path / "reg.csv", tabular_frame(20).assign(species=lambda f: f["weight"]))
    msg = load_error(csv_cfg(tmp_path / "reg.csv"), tmp_path)
    assert "holds non-integer numbers" in msg
    assert "the target must be a column of class labels" in msg


def test_csv_test_file_lacking_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", tabular_frame(20))
    write_csv(tmp_path / "test.csv", tabular_frame(5).drop(columns=["weight"]))
    msg = load_error(csv_cfg(tmp_path / "t.csv", test=str(tmp_path / "test.csv")), tmp_path)
    assert "data.test" in msg and "lacks columns of the training file: weight" in msg


def test_rows_without_a_label_are_dropped_with_a_warning(tmp_path: Path) -> None:
    frame = tabular_frame(50).astype({"species": "float64"})
    frame.loc[[3, 9], "species"] = np.nan
    write_csv(tmp_path / "t.csv", frame)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(csv_cfg(tmp_path / "t.csv"))
    assert any("dropped 2 rows without a value" in str(w.message) for w in caught)
    assert ds.num_train + ds.num_val == 48 and ds.class_names == ["0", "1", "2"]


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_parquet(tmp_path / "t.parquet", tabular_frame(20))
    monkeypatch.setattr("growsearch.data._tabular._has_pyarrow", lambda: False)
    cfg = DataConfig(dataset="parquet", root=str(tmp_path / "t.parquet"), target="species")
    msg = load_error(cfg, tmp_path)
    assert msg.startswith("data.root: reading Parquet files needs pyarrow, which is not installed")
    assert "`pip install pyarrow`" in msg and "data.dataset: csv" in msg


@pytest.mark.skipif(not has_pyarrow(), reason="needs pyarrow (pip install -e '.[dev]')")
def test_parquet(tmp_path: Path) -> None:
    frame, test = tabular_frame(60), tabular_frame(15, seed=3)
    write_parquet(tmp_path / "t.parquet", frame)
    write_parquet(tmp_path / "test.parquet", test)
    cfg = DataConfig(
        dataset="parquet",
        root=str(tmp_path / "t.parquet"),
        target="species",
        test=str(tmp_path / "test.parquet"),
    )
    write_csv(tmp_path / "t.csv", frame)
    write_csv(tmp_path / "test.csv", test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_parquet = load_dataset(cfg)
        from_csv = load_dataset(csv_cfg(tmp_path / "t.csv", test=str(tmp_path / "test.csv")))
    assert torch.equal(from_parquet.x_train, from_csv.x_train)
    assert torch.equal(from_parquet.y_val, from_csv.y_val)
    assert from_parquet.x_test is not None and from_csv.x_test is not None
    assert torch.equal(from_parquet.x_test, from_csv.x_test)
    assert from_parquet.feature_names == from_csv.feature_names


def test_text_given_as_parquet(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.parquet", tabular_frame(10))
    cfg = DataConfig(dataset="parquet", root=str(tmp_path / "t.parquet"), target="species")
    assert "is not a Parquet file (it looks like text: use data.dataset: csv)" in load_error(
        cfg, tmp_path
    )


# ---- device batches ---------------------------------------------------------------------


def toy_dataset(n_train: int, n_val: int = 10) -> Dataset:
    x = torch.arange(n_train, dtype=torch.float32)[:, None].repeat(1, 3)  # row i holds i
    xv = -torch.arange(1, n_val + 1, dtype=torch.float32)[:, None].repeat(1, 3)
    return Dataset(
        "toy",
        (3,),
        2,
        x,
        torch.arange(n_train) % 2,
        xv,
        torch.arange(n_val) % 2,
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize("max_bytes", [1 << 30, 0], ids=["on-device", "streamed"])
def test_train_batches_cover_each_sample_once_and_reshuffle(max_bytes: int) -> None:
    data = DeviceData(toy_dataset(21), torch.device("cpu"), 5, max_device_bytes=max_bytes)
    assert data.on_device == (max_bytes > 0)
    gen = torch.Generator().manual_seed(0)
    first = [xb[:, 0].long() for xb, _ in data.train_batches(gen)]
    second = torch.cat([xb[:, 0].long() for xb, _ in data.train_batches(gen)])
    assert [len(b) for b in first] == [5, 5, 5, 5]  # 21 = 4 * 5 + 1: the single is dropped
    assert data.samples_per_epoch == 20 and data.steps_per_epoch == 4
    order = torch.cat(first)
    assert len(set(order.tolist())) == 20 and len(set(second.tolist())) == 20
    assert not torch.equal(order, second)  # a new order each epoch
    again = torch.cat(
        [xb[:, 0].long() for xb, _ in data.train_batches(torch.Generator().manual_seed(0))]
    )
    assert torch.equal(order, again)  # ... but the same order for the same seed
    for xb, yb in data.train_batches(gen):
        assert torch.equal(yb, xb[:, 0].long() % 2)  # inputs and labels stay paired


@pytest.mark.parametrize("max_bytes", [1 << 30, 0], ids=["on-device", "streamed"])
def test_val_batches_and_probe(max_bytes: int) -> None:
    ds = toy_dataset(8, n_val=10)
    data = DeviceData(ds, "cpu", 2, max_device_bytes=max_bytes, eval_batch_size=4)
    batches = list(data.val_batches())
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), ds.x_val)
    assert torch.equal(data.probe(3), ds.x_val[:3])
    assert data.probe(3) is data.probe(3)


def test_batch_size_one_keeps_every_sample() -> None:
    data = DeviceData(toy_dataset(5), "cpu", 1)
    assert sum(len(x) for x, _ in data.train_batches(torch.Generator())) == 5


def test_test_batches(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="the digits dataset has no test split"):
        next(DeviceData(load_dataset(DataConfig()), "cpu", 64).test_batches())
    make_idx_folder(tmp_path, n_train=20, n_test=7)
    ds = load_dataset(DataConfig(dataset="mnist", root=str(tmp_path)))
    got = torch.cat([y for _, y in DeviceData(ds, "cpu", 2).test_batches()])
    assert ds.y_test is not None and torch.equal(got, ds.y_test)
