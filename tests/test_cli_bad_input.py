"""Bad input: one clear message naming the problem and the fix, exit code 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from growsearch.cli import main

GOOD = {
    "name": "bad-input",
    "n_trials": 2,
    "data": {"dataset": "digits"},
    "model": {
        "input_shape": [1, 8, 8],
        "layers": [
            {"type": "conv", "out": 4, "activation": "relu"},
            {"type": "flatten"},
            {"type": "dense", "out": 10},
        ],
    },
    "train": {"epochs_per_trial": 1},
}


def _write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def _mutate(path: str, value: object) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if value is _DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return raw


_DELETE = object()


def _run_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    before = set(os.listdir(tmp_path))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("growsearch: error: ")
    assert "Traceback" not in err
    # Nothing written: no database, no checkpoint folder, no lock file.
    assert set(os.listdir(tmp_path)) == before
    return err


CASES = [
    ("name", _DELETE, "name: missing"),
    ("n_trials", 0, "n_trials: must be an integer >= 1"),
    ("n_trials", "ten", "n_trials: must be an integer >= 1"),
    ("trials", 3, "did you mean 'n_trials'"),
    ("data.dataset", "mnsit", "did you mean 'mnist'"),
    ("data.batch_size", -4, "data.batch_size"),
    ("data.val_fraction", 1.5, "data.val_fraction"),
    ("train.optimizer", "adan", "did you mean 'adam'"),
    ("train.lr", 0, "train.lr: must be a positive number"),
    ("train.epochs_per_trail", 2, "did you mean 'epochs_per_trial'"),
    ("search.operations", ["widen", "deepn"], "did you mean 'deepen'"),
    ("search.sampler", "tpee", "did you mean 'tpe'"),
    ("search.parent", "pareto", "'pareto' needs two or more search.objectives"),
    ("model.layers.0", {"type": "conv", "out": 0}, "must be a positive integer"),
    ("model.layers.0", {"type": "conv", "out": 4, "kernel": 9, "padding": 0}, "does not fit"),
    ("model.layers.2", {"type": "dense", "out": 7}, "has 7 outputs but the data has 10 classes"),
    ("model.input_shape", [1, 16, 16], "set model.input_shape: [1, 8, 8]"),
    ("workers.grace_period", 5, "grace_period"),
    ("workers.max_consecutive_pruned", 0, "workers.max_consecutive_pruned"),
    ("name", "x" * 600, "name: must be 1 to 512 characters"),
    ("seed", 2**70, "seed: must be an integer from 0 to 4294967295"),
    ("search.pruner_args", {"zzz": 1}, "search.pruner_args: "),
    ("search.sampler_args", {"foo": 1}, "search.sampler_args: "),
]


@pytest.mark.parametrize(
    ("path", "value", "needle"), CASES, ids=[c[0] + ":" + str(c[1])[:12] for c in CASES]
)
def test_bad_study_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, value: object, needle: str
) -> None:
    yaml_path = _write(tmp_path, _mutate(path, value))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    err = _run_bad(
        tmp_path,
        capsys,
        ["run", str(yaml_path), "--storage", url, "--checkpoint-dir", str(tmp_path / "ck")],
    )
    assert needle in err


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _mutate("train.optimizer", "adan")
    raw["n_trials"] = -1
    raw["data"]["dataset"] = "nope"
    yaml_path = _write(tmp_path, raw)
    err = _run_bad(tmp_path, capsys, ["validate", str(yaml_path)])
    assert "3 problems" in err
    assert "adan" in err and "n_trials" in err and "nope" in err


def test_validate_lists_data_problems_next_to_config_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A typo in train and a wrong data path: one pass of validate names both.
    raw = _mutate("train.lrr", 0.1)
    raw["data"] = {"dataset": "mnist", "root": str(tmp_path / "no-such-folder")}
    err = _run_bad(tmp_path, capsys, ["validate", str(_write(tmp_path, raw))])
    assert "2 problems" in err
    assert "train: unknown key 'lrr' (did you mean 'lr'?)" in err
    assert "data.root: folder not found" in err and "no-such-folder" in err


def test_validate_checks_the_seed_against_the_data_despite_other_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _mutate("storage", "sqlite://")  # refused, but the data can still be checked
    raw["model"]["input_shape"] = [1, 16, 16]
    err = _run_bad(tmp_path, capsys, ["validate", str(_write(tmp_path, raw))])
    assert "2 problems" in err
    assert "in-memory SQLite database" in err and "set model.input_shape: [1, 8, 8]" in err


def test_validate_prints_shapes_and_parameters_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default storage and checkpoint folder are relative
    yaml_path = _write(tmp_path, GOOD)
    before = set(os.listdir(tmp_path))
    assert main(["validate", str(yaml_path)]) == 0
    out = capsys.readouterr().out
    assert set(os.listdir(tmp_path)) == before  # no database, no checkpoints, no lock
    assert out.startswith(f"{yaml_path}: ok\n")
    assert "data 'digits': 1438 train / 359 validation samples, shape [1, 8, 8], 10 classes" in out
    # conv 1->4 (3x3, padding 1): 40 params; flatten 4*8*8 = 256; dense 256->10: 2,570.
    assert "seed: conv4k3 -> flatten -> dense10" in out
    assert "2,610 parameters" in out
    lines = [line.split() for line in out.splitlines()[5:]]
    assert [(w[0], w[-2]) for w in lines] == [
        ("conv0", "40"),
        ("flatten1", "0"),
        ("dense2", "2,570"),
    ]


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("checkpoint_dir", "study.yaml/ck", "not a folder"),
        ("storage", "sqlite://", "in-memory SQLite database"),
        ("storage", "postgresql://u:Secr3tPw@127.0.0.1:abc/x", "cannot be parsed"),
    ],
)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_storage_or_checkpoint_dir_in_the_yaml(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    path: str,
    value: str,
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    yaml_path = _write(tmp_path, _mutate(path, value))
    err = _run_bad(tmp_path, capsys, [command, str(yaml_path)])
    assert needle in err and "Secr3tPw" not in err


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: [unclosed", "not valid YAML at line 1"),
        ("", "the file is empty"),
        ("- just\n- a list\n", "must contain a YAML mapping"),
        ("name: x\nmodel: !!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_not_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    err = _run_bad(tmp_path, capsys, ["run", str(_write(tmp_path, text))])
    assert needle in err


def test_missing_yaml_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _run_bad(tmp_path, capsys, ["run", str(tmp_path / "nope.yaml")])
    assert "no such file" in err


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("oracle://scott@db/x", "unknown dialect"),
        ("sqlite:///{tmp}/missing-folder/g.db", "missing-folder"),
        ("not a url", "storage"),
    ],
)
def test_bad_storage_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, needle: str
) -> None:
    yaml_path = _write(tmp_path, GOOD)
    err = _run_bad(tmp_path, capsys, ["run", str(yaml_path), "--storage", url.format(tmp=tmp_path)])
    assert needle in err


@pytest.mark.postgres
def test_postgres_wrong_credentials_never_print_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_admin: object
) -> None:
    yaml_path = _write(tmp_path, GOOD)
    url = "postgresql://nosuchuser:s3cr3tpw@127.0.0.1:5432/test"
    err = _run_bad(tmp_path, capsys, ["run", str(yaml_path), "--storage", url])
    assert "s3cr3tpw" not in err
    assert "***" in err or "nosuchuser" in err


def test_unreachable_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml_path = _write(tmp_path, GOOD)
    url = "postgresql://u:hunter2@127.0.0.1:1/db"  # nothing listens on port 1
    err = _run_bad(tmp_path, capsys, ["run", str(yaml_path), "--storage", url])
    assert "hunter2" not in err
    assert "127.0.0.1" in err


def test_resume_with_a_mistyped_path_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    err = _run_bad(tmp_path, capsys, ["resume", "--storage", url, "--study", "x"])
    assert "typo.db" in err
    assert not (tmp_path / "typo.db").exists()


def test_mnist_without_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _mutate("data.dataset", "mnist")
    err = _run_bad(tmp_path, capsys, ["run", str(_write(tmp_path, raw))])
    assert "data.root" in err


def _tables(url: str) -> set[str]:
    import sqlalchemy as sa

    from growsearch.storage_url import make_engine

    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", ["resume", "worker"])
def test_resume_on_a_database_without_lineage_tables_writes_nothing(
    storage_url: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing database that holds no growsearch study (only Optuna's tables here): the
    lineage tables must not be created by a command that then refuses to run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="optuna-only", storage=storage_url)
    before = _tables(storage_url)
    assert main([command, "--storage", storage_url, "--study", "optuna-only"]) == 2
    err = capsys.readouterr().err
    assert "holds no growsearch lineage tables" in err
    assert _tables(storage_url) == before


@pytest.mark.postgres
def test_resume_with_a_mistyped_database_name_creates_nothing(
    postgresql_url: str, postgres_admin: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlalchemy as sa

    typo = sa.make_url(postgresql_url).set(database="gs_no_such_db_typo")
    url = typo.render_as_string(hide_password=False)
    assert main(["resume", "--storage", url, "--study", "x"]) == 2
    err = capsys.readouterr().err
    assert "database 'gs_no_such_db_typo' does not exist" in err
    with postgres_admin.connect() as conn:  # type: ignore[attr-defined]
        names = conn.execute(sa.text("SELECT datname FROM pg_database")).scalars().all()
    assert "gs_no_such_db_typo" not in names
