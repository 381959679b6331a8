"""The code's shape, held by tests: the public surface, the one exporter interface, no import cycles.

Read from the source (AST), so a forbidden import fails here even when nothing runs it.
"""

from __future__ import annotations

import ast
import importlib
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

import appevents
import appevents.exporting
from appevents import AppEventsSettings
from appevents.bridge import BridgeSettings
from appevents_exporter_dapr import AuthSettings, DaprExporterSettings
from appevents_exporter_segment import SegmentExporterSettings

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "src" / "appevents"
EXPORTERS = sorted((ROOT / "exporters").glob("*/src/appevents_exporter_*"))
#: The modules a user or an exporter author may import; everything else in the core starts with an underscore.
PUBLIC_MODULES = {"appevents", "appevents.exporting", "appevents.testing", "appevents.temporal", "appevents.bridge"}


def module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, *, module_level_only: bool = False) -> Iterator[tuple[str, list[str], int]]:
    """``(module, names, line)`` for each import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else ast.walk(tree)
    package = module_name(path, CORE if CORE in path.parents else path.parent).rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            yield base, [alias.name for alias in node.names], node.lineno


@pytest.mark.parametrize("package", EXPORTERS, ids=lambda p: p.name)
def test_exporters_import_only_the_exporter_interface_and_top_level_names(package: Path) -> None:
    allowed_top_level = set(appevents.__all__)
    allowed_exporting = set(appevents.exporting.__all__)
    wrong = []
    for path in sorted(package.rglob("*.py")):
        for module, names, line in imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module == "appevents":
                wrong += [f"{where}: appevents.{name}" for name in names if name not in allowed_top_level]
            elif module == "appevents.exporting":
                wrong += [f"{where}: appevents.exporting.{name}" for name in names if name not in allowed_exporting]
            elif module.startswith("appevents."):
                wrong.append(f"{where}: {module}")
    assert not wrong, "exporters may import appevents' top-level names and appevents.exporting only:\n" + "\n".join(
        wrong
    )


def test_every_name_of_the_public_modules_resolves_and_is_documented() -> None:
    for name in sorted(PUBLIC_MODULES):
        module = importlib.import_module(name)
        assert module.__doc__, name
        for attribute in getattr(module, "__all__", []):
            value = getattr(module, attribute)  # AttributeError: __all__ names something that is not there
            if callable(value) and not attribute.startswith("__"):
                assert value.__doc__, f"{name}.{attribute} has no docstring"


def test_the_core_modules_are_private_but_the_public_ones() -> None:
    modules = {module_name(path, CORE) for path in CORE.rglob("*.py")}
    exposed = {m for m in modules if not any(part.startswith("_") and part != "__main__" for part in m.split(".")[1:])}
    assert exposed - {"appevents.__main__"} == PUBLIC_MODULES


def test_no_import_cycles_among_the_core_modules() -> None:
    """Lazy imports (inside a function) count too: two modules that need each other are one module, or a third
    one is missing."""
    graph: dict[str, set[str]] = {}
    known = {module_name(path, CORE) for path in CORE.rglob("*.py")}
    for path in CORE.rglob("*.py"):
        name = module_name(path, CORE)
        edges = graph.setdefault(name, set())
        for module, names, _ in imports(path):
            if not module.startswith("appevents"):
                continue
            for target in [f"{module}.{n}" for n in names] + [module]:
                if target in known and target != name:
                    edges.add(target)
                    break
    # A package imports its submodules and they import it back for nothing but names: only a cycle between
    # modules neither of which is the other's package counts.
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in itertools.pairwise(cycle)):
                    cycles.append(" → ".join(cycle))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_library_does_not_import_the_demo_tooling() -> None:
    """``appevents._demo`` (the demo, the Temporal dev server it starts) is reached from the CLI only, lazily."""
    importers = []
    for path in CORE.rglob("*.py"):
        name = module_name(path, CORE)
        if name.startswith("appevents._demo"):
            continue
        for module, names, line in imports(path):
            if module.startswith("appevents._demo") or (module == "appevents" and "_demo" in names):
                importers.append(f"{name}:{line}")
    assert {entry.split(":")[0] for entry in importers} <= {"appevents._cli"}, importers
    for module, _, _ in imports(CORE / "_cli.py", module_level_only=True):
        assert not module.startswith("appevents._demo"), "the CLI imports the demo at module level"


@pytest.mark.parametrize(
    "document",
    [
        ROOT / "README.md",
        ROOT / "exporters" / "README.md",
        ROOT / "collector" / "README.md",
        *sorted(ROOT.glob("exporters/*/README.md")),
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_docs_show_only_public_names(document: Path) -> None:
    private = re.findall(r"\bappevents(?:\.\w+)*\._\w+", document.read_text())
    assert not private, f"{document.relative_to(ROOT)} names private modules: {sorted(set(private))}"


@pytest.mark.parametrize(
    ("document", "settings", "shown_as"),
    [
        ("README.md", AppEventsSettings, "APPEVENTS_{}"),
        ("README.md", BridgeSettings, "APPEVENTS_BRIDGE_{}"),
        ("exporters/dapr/README.md", DaprExporterSettings, "APPEVENTS_DAPR_{}"),
        ("exporters/dapr/README.md", AuthSettings, "APPEVENTS_AUTH_{}"),
        ("exporters/segment/README.md", SegmentExporterSettings, "`{}`"),  # its table drops the prefix
    ],
    ids=lambda value: getattr(value, "__name__", None) if isinstance(value, type) else None,
)
def test_every_setting_is_documented_in_its_readme(document: str, settings: type[BaseSettings], shown_as: str) -> None:
    text = (ROOT / document).read_text()
    missing = [name for name in settings.model_fields if shown_as.format(name.upper()) not in text]
    assert not missing, f"{document} does not document {settings.__name__}: {missing}"
