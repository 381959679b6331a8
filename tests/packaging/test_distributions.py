"""The three distributions as a release builds them (hatchling, as the build backend does) and as a user installs
them: each sdist holds its own distribution only, every one carries the license, the metadata a package index
shows makes sense there, versions are bound so that mismatched releases cannot be installed together; and the core
wheel installed into a fresh venv with the pip a new Python 3.11 venv has (23.2) answers --version, --help and the
demo without a traceback. Cost: about 3 s to build, about 10 s for the venv (its dependencies come from the package
index, or pip's cache)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email import message_from_string
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {
    "appevents": (ROOT, "appevents"),
    "appevents-exporter-dapr": (ROOT / "exporters" / "dapr", "appevents_exporter_dapr"),
    "appevents-exporter-segment": (ROOT / "exporters" / "segment", "appevents_exporter_segment"),
}
VERSION = "0.1.0"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for project, _ in PROJECTS.values():
        subprocess.run(
            [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
            cwd=project,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return out


def _file_name(name: str) -> str:
    return name.replace("-", "_")


def _metadata(dist: Path, name: str) -> Message:
    with zipfile.ZipFile(dist / f"{_file_name(name)}-{VERSION}-py3-none-any.whl") as wheel:
        return message_from_string(wheel.read(f"{_file_name(name)}-{VERSION}.dist-info/METADATA").decode())


@pytest.mark.parametrize("name", list(PROJECTS))
def test_each_sdist_holds_only_its_own_distribution(dist: Path, name: str) -> None:
    _, package = PROJECTS[name]
    with tarfile.open(dist / f"{_file_name(name)}-{VERSION}.tar.gz") as sdist:
        members = [member.split("/", 1)[1] for member in sdist.getnames() if "/" in member]
    others = [m for m in members if not m.startswith(f"src/{package}/")]
    assert sorted(others) == [".gitignore", "LICENSE", "PKG-INFO", "README.md", "pyproject.toml"]
    assert f"src/{package}/__init__.py" in members


@pytest.mark.parametrize("name", list(PROJECTS))
def test_every_distribution_carries_the_license_text(dist: Path, name: str) -> None:
    with zipfile.ZipFile(dist / f"{_file_name(name)}-{VERSION}-py3-none-any.whl") as wheel:
        text = wheel.read(f"{_file_name(name)}-{VERSION}.dist-info/licenses/LICENSE").decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    metadata = _metadata(dist, name)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"


@pytest.mark.parametrize("name", list(PROJECTS))
def test_the_metadata_an_index_shows_makes_sense_there(dist: Path, name: str) -> None:
    metadata = _metadata(dist, name)
    classifiers = metadata.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers
    assert metadata["Author"] and metadata["Maintainer"]
    description = metadata.get_payload()
    assert isinstance(description, str) and description.strip()
    # Relative links and images break on an index page: only absolute ones (or anchors).
    relative = re.findall(r"\]\((?!https?://|#)([^)]*)\)", description)
    assert relative == []


def test_versions_are_bound_between_the_core_and_the_exporters(dist: Path) -> None:
    core = _metadata(dist, "appevents").get_all("Requires-Dist") or []
    for exporter in ("appevents-exporter-dapr", "appevents-exporter-segment"):
        assert f"{exporter}<0.2,>=0.1.0; extra == '{exporter.rsplit('-', 1)[1]}'" in core
        requires = _metadata(dist, exporter).get_all("Requires-Dist") or []
        assert "appevents<0.2,>=0.1.0" in requires


def test_one_grpcio_floor(dist: Path) -> None:
    floors = {
        requirement.split(";")[0].strip()
        for name in ("appevents", "appevents-exporter-dapr")
        for requirement in _metadata(dist, name).get_all("Requires-Dist") or []
        if requirement.startswith("grpcio")
    }
    assert floors == {"grpcio<2,>=1.81.1"}


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with its own pip (no upgrade) and the core wheel installed as a user installs it."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--find-links", str(dist), "appevents"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr
    return venv


def _appevents(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "appevents"), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env={}
    )


def test_the_installed_cli_answers_version_and_a_plain_help(fresh_venv: Path, tmp_path: Path) -> None:
    assert _appevents(fresh_venv, "--version", cwd=tmp_path).stdout.strip() == f"appevents {VERSION}"
    help_text = _appevents(fresh_venv, "--help", cwd=tmp_path).stdout
    assert "``" not in help_text
    for command in ("tail", "demo", "doctor", "bridge", "temporal"):
        described = _appevents(fresh_venv, command, "--help", cwd=tmp_path).stdout
        assert described.count("\n\n") >= 2, f"{command} --help has no description"


def test_the_demo_without_temporal_installed_says_so_in_one_line(fresh_venv: Path, tmp_path: Path) -> None:
    run = _appevents(fresh_venv, "demo", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    [skipped] = [line for line in run.stdout.splitlines() if "Temporal part skipped" in line]
    assert "pip install 'appevents[demo]'" in skipped
    assert "13 events are in the local event log" in run.stdout


def test_the_testing_kit_imports_without_pytest(fresh_venv: Path, tmp_path: Path) -> None:
    code = "import importlib.util, appevents.testing; assert importlib.util.find_spec('pytest') is None"
    run = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
