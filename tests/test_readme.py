"""What the README shows works as shown: its study.yaml example validates, and numbers written
as `1e-5` (a string to YAML 1.1) are read as numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from growsearch.cli import main
from growsearch.config import load_config

README = Path(__file__).resolve().parent.parent / "README.md"


def _yaml_blocks() -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def test_the_readme_study_yaml_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = _yaml_blocks()
    assert blocks, "README.md should show a study.yaml"
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme-{i}.yaml"
        path.write_text(block, encoding="utf-8")
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err
        cfg = load_config(path)
        assert isinstance(cfg.search.preservation_rtol, float)


def test_exponent_floats_are_numbers_and_names_stay_strings(tmp_path: Path) -> None:
    text = (README.parent / "studies" / "digits_mlp.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^name: .*$", "name: 1e5", text)
    text = re.sub(r"(?m)^(\s+)lr: .*$", r"\1lr: 5e-2", text)
    text = re.sub(r"(?m)^search:\n", "search:\n  preservation_rtol: 2E-6\n", text)
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.name == "1e5"
    assert cfg.train.lr == 0.05 and cfg.search.preservation_rtol == 2e-6
