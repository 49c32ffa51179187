"""What the README shows works as shown: its study.yaml example validates, numbers written
as `1e-5` (a string to YAML 1.1) are read as numbers, it opens with the two commands (CI runs the
second), each shipped study names the command that runs it, the operator table matches the
registry and the hand-growing example runs and prints what it says."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import pytest

from growsearch.cli import main
from growsearch.config import load_config
from growsearch.transforms import list_operations

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


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    text = README.read_text(encoding="utf-8")
    run = re.search(r"<!-- run-command -->\n```bash\n(.*)\n```", text)
    tests = re.search(r"<!-- test-command -->\n```bash\n(.*)\n```", text)
    assert run and tests and run.start() < tests.start() < text.index("\n---\n")
    assert run.group(1).endswith("growsearch run studies/digits.yaml")
    assert tests.group(1).endswith("python -m pytest")
    # .ci/run reads the command with this awk line; it must find exactly the README's.
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    awk = re.search(r"cmd=\$\(awk '(.*)' README.md\)", ci)
    assert awk, ".ci/run should read the test command from README.md"
    found = subprocess.run(
        ["awk", awk.group(1), str(README)], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == tests.group(1)


@pytest.mark.parametrize("name", ["digits.yaml", "digits_mlp.yaml"])
def test_each_study_opens_with_the_command_that_runs_it(name: str) -> None:
    first = (README.parent / "studies" / name).read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# Run: growsearch run studies/{name}"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end != -1 else len(text)]


def test_the_operator_table_matches_the_registry() -> None:
    section = _section("## Exactness: the operators")
    table = section[section.index("| operation |") :].split("\n\n")[0]
    rows = re.findall(r"^\| `(\w+)` \(([^)]*)\) \| [^|]+ \| ([^|]+) \|", table, re.M)
    ops = list_operations()
    assert [name for name, _, _ in rows] == [o.name for o in ops]
    for (name, args, exact), op in zip(rows, ops, strict=True):
        assert set(re.findall(r"`(\w+)`", args)) == set(op.args), name
        assert exact.strip().startswith("yes" if op.exact else "no"), name


def test_the_hand_growing_example_runs_as_shown() -> None:
    section = _section("### Growing a network by hand")
    code = re.search(r"^```python\n(.*?)^```", section, re.M | re.S)
    assert code, "the README should show the standalone transforms example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "['conv1', 'hidden']"
    exact, ok, error = lines[1].split()
    assert (exact, ok) == ("True", "True") and float(error) < 1e-5
    assert lines[2] == "conv16k3 -> maxpool -> flatten -> dense32 -> dense32 -> dense10"
