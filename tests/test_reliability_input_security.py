"""Bad input the CLI must refuse without writing anything (an Optuna schema of another version),
and the security promises: nothing in the package loads pickles or evaluates strings, YAML tags
cannot run code, the dashboard listens on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import ast
import os
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest

import growsearch
from growsearch.cli import build_parser, main
from growsearch.exceptions import StorageError
from growsearch.search._optuna_schema import check_optuna_schema, optuna_revisions
from growsearch.store import SQLLineageStore
from tests._searchkit import tiny_study

PACKAGE = Path(growsearch.__file__).parent


# ---- an Optuna schema of another version -------------------------------------------------------
def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("revision", "needles"),
    [
        ("v3.0.0.d", ["older schema (v3.0.0.d", "optuna storage upgrade --storage 'sqlite:///"]),
        ("v9.9.9.z", ["schema v9.9.9.z, which Optuna", "pip install -U optuna"]),
    ],
)
def test_optuna_tables_of_another_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], revision: str, needles: list[str]
) -> None:
    head, known = optuna_revisions()
    assert revision != head and (revision in known) == revision.startswith("v3")
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="someone-elses", storage=url)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    conn.close()
    path, _ = tiny_study(tmp_path, url, n_trials=1)
    before_files, before_rows = sorted(os.listdir(tmp_path)), _dump(db)
    code = main(["run", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("growsearch: error: the Optuna tables in sqlite:///")
    assert "Nothing was written" in err and "Traceback" not in err
    for needle in needles:
        assert needle in err
    # Nothing written: the same rows (no lineage tables, no study), no lock file, no checkpoints.
    assert _dump(db) == before_rows
    assert sorted(os.listdir(tmp_path)) == before_files


def test_optuna_tables_without_a_version_pass_only_while_they_may_be_being_created(
    tmp_path: Path,
) -> None:
    db = tmp_path / "g.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="x", storage=url)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DROP TABLE alembic_version")
    conn.close()
    check_optuna_schema(url, strict=False)  # before the admission lock: another worker's
    with pytest.raises(StorageError, match="schema without a version"):
        check_optuna_schema(url)  # under the lock: nobody is creating them


def test_tables_interrupted_before_their_version_was_stamped_are_taken_as_new(
    tmp_path: Path,
) -> None:
    # Ctrl-C between Optuna creating its tables and stamping their version: no study yet, so
    # nothing can be lost, and the resumed run must not refuse them.
    db = tmp_path / "g.db"
    url = f"sqlite:///{db}"
    optuna.storages.RDBStorage(url)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM version_info")
        conn.execute("DELETE FROM alembic_version")
    conn.close()
    check_optuna_schema(url)
    optuna.create_study(study_name="x", storage=url)  # Optuna stamps them on opening


def test_the_current_optuna_schema_passes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    path, _ = tiny_study(tmp_path, url, n_trials=1)
    assert main(["run", str(path), "--quiet"]) == 0
    assert main(["run", str(path), "--quiet", "--n-trials", "2"]) == 0  # and on the next run


# ---- security ----------------------------------------------------------------------------------
# Anything that can turn bytes into running code. Found in the syntax tree, so a docstring that
# says "no pickle" or a module's ``model.eval()`` is not a match.
UNSAFE_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "shelve",
    "marshal",
    "joblib",
}
UNSAFE_CALLS = {
    "torch.load": "unpickles",
    "torch.jit.load": "unpickles",
    "yaml.load": "can construct Python objects",
    "yaml.unsafe_load": "can construct Python objects",
    "yaml.full_load": "can construct Python objects",
    "yaml.load_all": "can construct Python objects",
    "eval": "runs a string",
    "exec": "runs a string",
}
# (file relative to the package, finding): why it is harmless. Empty: nothing needs one.
ALLOWED: dict[tuple[str, str], str] = {}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in UNSAFE_MODULES or any(f"{node.module}.{a.name}" in UNSAFE_CALLS
                                             for a in node.names):  # fmt: skip
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in UNSAFE_CALLS:
                found.append(f"{name}(): {UNSAFE_CALLS[name]}")
            risky = {"allow_pickle": True, "weights_only": False}
            for kw in node.keywords:
                value = kw.value.value if isinstance(kw.value, ast.Constant) else None
                if kw.arg in risky and value is risky[kw.arg]:
                    found.append(f"{name}({kw.arg}={value})")
    return found


def test_nothing_in_the_package_can_load_a_pickle_or_evaluate_a_string() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30  # the whole package is scanned
    found = [
        f"{path.relative_to(PACKAGE).as_posix()}: {finding}"
        for path in files
        for finding in unsafe(path.read_text(encoding="utf-8"))
        if (path.relative_to(PACKAGE).as_posix(), finding) not in ALLOWED
    ]
    assert found == []


def test_the_scan_would_catch_them() -> None:
    bad = [
        "state = torch.load(path)",
        "import pickle",
        "from dill import loads",
        "from torch import load",
        "cfg = yaml.load(text, Loader=yaml.Loader)",
        "value = eval(expression)",
        "np.load(p, allow_pickle=True)",
        "torch.serialization.load(p, weights_only=False)",
    ]
    for line in bad:
        assert unsafe(line), line
    fine = [
        "model.eval()",
        "yaml.safe_load(text)",
        "safetensors.torch.load(data)",
        '"""No pickle."""',
        "torch.export.save(program, path)",
    ]
    for line in fine:
        assert not unsafe(line), line


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_yaml_tag_cannot_run_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    marker = tmp_path / "pwned.marker"
    path = tmp_path / "study.yaml"
    path.write_text(
        f"name: evil\nmodel: !!python/object/apply:os.system ['touch {marker}']\n"
        f"data: !!python/object/apply:pathlib.Path.touch ['{marker}']\n"
    )
    before = sorted(os.listdir(tmp_path))
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "python/object" in err
    assert not marker.exists()
    assert sorted(os.listdir(tmp_path)) == before


def _dashboard_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import optuna_dashboard

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        optuna_dashboard, "run_server", lambda storage, **kwargs: calls.append(kwargs)
    )
    return calls


def test_the_dashboard_listens_on_localhost_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with SQLLineageStore(url) as store:
        store.create_study("s", {"checkpoint_dir": str(tmp_path / "ckpt")})
    args = build_parser().parse_args(["dashboard", "--storage", url])
    assert args.host == "127.0.0.1"
    calls = _dashboard_calls(monkeypatch)
    assert main(["dashboard", "--storage", url]) == 0
    assert main(["dashboard", "--storage", url, "--host", "0.0.0.0", "--port", "9000"]) == 0
    assert [(c["host"], c["port"]) for c in calls] == [("127.0.0.1", 8080), ("0.0.0.0", 9000)]
    assert "http://127.0.0.1:8080/" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "folder"), [("..", "_."), (".", "_"), ("a/../b", "a_.._b")])
def test_a_study_name_never_leaves_the_checkpoint_folder(name: str, folder: str) -> None:
    from growsearch.search._objective import _safe

    assert _safe(name) == folder
