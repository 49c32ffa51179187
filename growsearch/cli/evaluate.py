"""``growsearch evaluate MODEL_ID``: a stored model's accuracy and loss on the held-out test split.

The data come from the study's stored config (the same dataset, split seed and, for tables, the
same preprocessing fitted on the training split), so nothing but the database and the files it
names is needed. The test split never guides the search: this is the number to report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any

from growsearch.cli._common import add_storage_args
from growsearch.cli._study import open_store
from growsearch.exceptions import ConfigError, UserError
from growsearch.storage_url import redact

__all__ = ["add_parser", "evaluate_model"]

SPLITS = ("test", "val")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evaluate",
        help="accuracy and loss of a stored model on the dataset's test split",
        description="Load the model's checkpoint (sha256 verified) and the study's data config "
        "from the database, and print accuracy and cross-entropy on the official test split "
        "(mnist/fashion_mnist: the t10k files; csv/parquet: data.test). Writes nothing.",
    )
    p.add_argument("model_id", type=int, metavar="MODEL_ID", help="see growsearch lineage")
    add_storage_args(p, study_required=False)
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="test (default) or val: the validation split the search selected on",
    )
    p.add_argument(
        "--data-root",
        metavar="PATH",
        help="override the stored data.root (the data moved, or the study ran in another folder)",
    )
    p.add_argument(
        "--test-file",
        metavar="PATH",
        help="csv/parquet: a test file with the training file's columns (overrides data.test)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)


def _data_config(stored: dict[str, Any], root: str | None, test: str | None) -> Any:
    from growsearch.data import DataConfig

    names = {f.name for f in dataclasses.fields(DataConfig)}
    cfg = DataConfig(**{k: v for k, v in (stored.get("data") or {}).items() if k in names})
    if root is not None:
        cfg = dataclasses.replace(cfg, root=root)
    if test is not None:
        if cfg.dataset not in ("csv", "parquet"):
            raise UserError(
                f"--test-file is for csv/parquet data; the {cfg.dataset} dataset takes its test "
                "split from its own files (mnist: the t10k files in data.root)"
            )
        cfg = dataclasses.replace(cfg, test=test)
    return cfg


def _no_test_split(dataset: str, study: str) -> UserError:
    val = (
        "score the validation split with --split val (optimistic: the search selected models on it)"
    )
    if dataset in ("csv", "parquet"):
        fix = f"give one with --test-file PATH (a {dataset} file with the training file's columns)"
    elif dataset in ("mnist", "fashion_mnist"):
        fix = (
            "put t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (or .gz) next to the training "
            "files (or pass --data-root FOLDER)"
        )
    else:
        return UserError(
            f"the {dataset} dataset of study '{study}' comes without a test split, so no "
            f"held-out data is left to evaluate on: {val}, or grow on data with a test split "
            "(mnist/fashion_mnist with the t10k files, csv/parquet with data.test)"
        )
    return UserError(
        f"the {dataset} data of study '{study}' has no test split, so no held-out data is left "
        f"to evaluate on: {fix}; or {val}"
    )


def evaluate_model(
    store: Any,
    model_id: int,
    *,
    study: str | None = None,
    split: str = "test",
    data_root: str | None = None,
    test_file: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a stored model; returns a JSON-safe dict (accuracy, loss, samples, ...)."""
    from growsearch.checkpoints import load_model
    from growsearch.data import DeviceData, check_dataset, load_dataset
    from growsearch.fit import model_data_problems
    from growsearch.training import evaluate, select_device

    record = store.get_model(model_id) if 0 < model_id < 2**63 else None  # SQL's BIGINT
    if record is None or (study is not None and record.study != study):
        where = f"study '{study}'" if study is not None else "this storage"
        raise UserError(
            f"no model with id {model_id} in {where}; list the models with growsearch lineage "
            "--storage URL --study NAME"
        )
    if record.status != "finished" or not record.checkpoint:
        raise UserError(
            f"model {model_id} has status '{record.status}' and no usable checkpoint; evaluate a "
            "finished model (growsearch best shows the best one)"
        )
    stored = store.get_study(record.study).config
    source = f"study '{record.study}' (stored data config)"
    data_cfg = _data_config(stored, data_root, test_file)
    problems = check_dataset(data_cfg)
    if problems:
        problems.append(
            "evaluate reads the data section stored with the study; relative paths are relative "
            "to the folder you run it in: run it where the study ran, or pass --data-root "
            "(and --test-file for tables)"
        )
        raise ConfigError(problems, source)
    ds = load_dataset(data_cfg, seed=int(stored.get("seed", 0)))
    if split == "test" and not ds.has_test:
        raise _no_test_split(ds.name, record.study)
    torch_device = select_device(device)
    spec, model = load_model(record.checkpoint, expected_sha256=record.sha256, device=torch_device)
    problems = model_data_problems(spec, ds.input_shape, ds.num_classes)
    if problems:
        raise ConfigError(
            [*problems, "the data differ from those the model was trained on; point "
             "--data-root / --test-file at the study's files"],
            source,
        )  # fmt: skip
    # Nothing of the training split is needed: keep it on the host (max_device_bytes=0).
    data = DeviceData(ds, torch_device, data_cfg.batch_size, max_device_bytes=0)
    batches = data.test_batches() if split == "test" else data.val_batches()
    accuracy, loss = evaluate(model, batches, torch_device)
    samples = ds.y_test.shape[0] if split == "test" else ds.num_val  # type: ignore[union-attr]
    return {
        "model_id": record.model_id,
        "study": record.study,
        "trial_number": record.trial_number,
        "dataset": ds.name,
        "split": split,
        "samples": int(samples),
        "accuracy": accuracy,
        "loss": loss if math.isfinite(loss) else None,  # a diverged model: JSON has no NaN
        "val_accuracy": record.val_accuracy,
        "num_params": record.num_params,
        "checkpoint": record.checkpoint,
        "sha256": record.sha256,
        "device": str(torch_device),
    }


def _num(value: float | None) -> str:
    return "n/a (not finite)" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    store = open_store(args.storage, args.study)
    result = evaluate_model(
        store,
        args.model_id,
        study=args.study,
        split=args.split,
        data_root=args.data_root,
        test_file=args.test_file,
        device=args.device,
    )
    if args.format == "json":
        print(json.dumps(result, indent=2, allow_nan=False))
        return 0
    split = "test" if args.split == "test" else "validation"
    print(
        f"model {result['model_id']} of study '{result['study']}' (trial "
        f"{result['trial_number']}, {result['num_params']:,} parameters) in "
        f"{redact(args.storage)}"
    )
    print(
        f"  {split} split of {result['dataset']}: {result['samples']:,} samples: "
        f"accuracy {result['accuracy']:.4f}, loss {_num(result['loss'])}"
    )
    print(f"  (validation accuracy recorded by the search: {result['val_accuracy']:.4f})")
    return 0
