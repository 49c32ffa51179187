"""docker/: no Docker engine runs here, so these check what can be checked without one: the
compose files parse and wire the right services and commands (which growsearch's own CLI
accepts), and the Dockerfile copies files that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from growsearch.cli import build_parser
from growsearch.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _defaults(value: Any) -> Any:
    """``value`` with every ${VAR:-default} replaced by its default, as compose would with an
    empty environment."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_defaults(v) for v in value]
    if isinstance(value, dict):
        return {k: _defaults(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _defaults(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


def test_compose_has_postgres_workers_and_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "worker", "dashboard"}
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    for name in ("worker", "dashboard"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (DOCKER / ".." / services[name]["build"]["dockerfile"]).is_file()
    assert int(services["worker"]["deploy"]["replicas"]) == 2
    assert set(compose["volumes"]) == {"pgdata", "checkpoints"}


def test_worker_and_dashboard_commands_are_valid_growsearch_commands(
    compose: dict[str, Any],
) -> None:
    parser = build_parser()
    services = compose["services"]
    worker = parser.parse_args(services["worker"]["command"])
    assert worker.command == "run" and worker.study_yaml == "/study/study.yaml"
    assert worker.storage == "postgresql://growsearch:growsearch@postgres:5432/growsearch"
    assert worker.checkpoint_dir == "/shared/checkpoints"
    mounts = dict(v.split(":")[:2] for v in services["worker"]["volumes"])
    assert mounts["./study.yaml"] == "/study/study.yaml"
    assert mounts["checkpoints"] == "/shared/checkpoints"
    dash = parser.parse_args(services["dashboard"]["command"])
    assert dash.command == "dashboard" and dash.host == "0.0.0.0" and dash.port == 8080
    assert dash.storage == worker.storage and dash.checkpoint_dir == worker.checkpoint_dir
    assert services["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    # Both see the same checkpoint volume: the dashboard serves the workers' artifacts.
    assert "checkpoints:/shared/checkpoints:ro" in services["dashboard"]["volumes"]


def test_the_mounted_study_is_valid() -> None:
    cfg = load_config(DOCKER / "study.yaml")
    cfg = cfg.with_overrides(storage="postgresql://u@postgres/db")
    assert cfg.checkpoint_dir == "/shared/checkpoints" and cfg.n_trials >= 1


def test_gpu_override_builds_the_cuda_variant() -> None:
    gpu = _defaults(yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text()))
    worker = gpu["services"]["worker"]
    assert "/whl/cu" in worker["build"]["args"]["TORCH_INDEX_URL"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    args = build_parser().parse_args(worker["command"])
    assert args.command == "run" and args.workers == 1
    assert gpu["services"]["dashboard"]["image"] == worker["image"] == "growsearch:cuda"


def test_dockerfile_copies_existing_files_and_installs_cpu_torch() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    copies = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY ")]
    sources = [s for c in copies for s in c]
    assert sources == ["pyproject.toml", "README.md", "growsearch", "studies"]
    for source in sources:
        assert (ROOT / source).exists(), source
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in lines
    assert 'RUN pip install --index-url "${TORCH_INDEX_URL}" torch' in lines
    # torch is installed before growsearch, so pip keeps the CPU (or CUDA) wheel.
    assert lines.index('RUN pip install --index-url "${TORCH_INDEX_URL}" torch') < next(
        i for i, ln in enumerate(lines) if ln.startswith("RUN pip install .")
    )
    assert 'ENTRYPOINT ["growsearch"]' in lines
    assert "USER growsearch" in lines
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything else stays out of the build context
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/" in ignore, source
