"""The package's layering: no import cycle, and plain modules stay plain.

Read from the source (module-level imports, outside ``TYPE_CHECKING``), so a
cycle is caught even where Python's import order happens to hide it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dispatcher"


def _executed(nodes: list[ast.stmt]) -> list[ast.AST]:
    """Every node run when ``nodes`` run: not function bodies (run later) nor
    ``if TYPE_CHECKING:`` blocks (never run)."""
    found: list[ast.AST] = []
    todo: list[ast.AST] = list(nodes)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _module_imports(path: Path) -> set[str]:
    """The dispatcher modules ``path`` imports when it is imported."""
    found: set[str] = set()
    for node in _executed(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update([node.module, *names])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in MODULES}


MODULES = {
    f"dispatcher.{path.stem}"
    for path in PACKAGE.glob("*.py")
    if path.stem not in {"__init__", "__main__"}
}
GRAPH = {
    name: _module_imports(PACKAGE / f"{name.removeprefix('dispatcher.')}.py")
    for name in MODULES
}


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for name in GRAPH.get(todo.pop(), ()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_itself_through_others(module: str) -> None:
    assert module not in _reachable(module)


@pytest.mark.parametrize(
    ("module", "never"),
    [
        pytest.param("dispatcher.tenant", {"dispatcher.database"}, id="tenant"),
        pytest.param(
            "dispatcher.context",
            {
                "dispatcher.middleware",
                "dispatcher.registry",
                "dispatcher.cache",
                "dispatcher.follower",
            },
            id="context",
        ),
        pytest.param("dispatcher.follower", {"dispatcher.registry"}, id="follower"),
        pytest.param(
            "dispatcher.routes",
            {"dispatcher.registry", "dispatcher.cache", "dispatcher.middleware"},
            id="routes",
        ),
        pytest.param(
            "dispatcher.cache",
            {"dispatcher.registry", "dispatcher.middleware"},
            id="cache",
        ),
    ],
)
def test_plain_modules_stay_plain(module: str, never: set[str]) -> None:
    assert _reachable(module) & never == set()


#: The registry's migrations and the tenants' own: the only modules that import
#: Alembic, and ``import dispatcher`` loads neither.
MIGRATING = {"migrate", "data_migrations"}


def test_only_the_migrating_modules_import_alembic() -> None:
    importers = {
        path.stem
        for path in PACKAGE.glob("*.py")
        if any(name.split(".")[0] == "alembic" for name in _all_imports(path))
    }
    assert importers == MIGRATING


def test_import_dispatcher_loads_no_alembic() -> None:
    """A serving process that never migrates never loads Alembic: checked in a
    fresh interpreter, so every import the package runs counts."""
    script = """
import sys
import dispatcher
print(",".join(sorted(
    name for name in sys.modules
    if name.split(".")[0] == "alembic"
    or name in ("dispatcher.migrate", "dispatcher.data_migrations")
)))
"""
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def _all_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        for child in ast.walk(node):
            if isinstance(child, ast.ImportFrom) and child.module:
                found.add(child.module)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
    return found
