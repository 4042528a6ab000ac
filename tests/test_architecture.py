"""The house rules, read off the source: no import cycle, backends independent of each other, short files.

The import graph is built with ``ast`` from every module of ``src/sparkle_motion``
and ``function_tools``: module-level imports and the ones inside functions (a
function-level import that closes a circle only hides the cycle until the
function runs), relative imports resolved against the importing package.
Imports under ``if TYPE_CHECKING:`` never run and are left out.

``from a.b import c`` is an edge to the module ``a.b.c`` when there is one, else
to ``a.b``; ``import a.b.c`` is an edge to ``a.b.c``.  Python also runs the
``__init__`` of every parent package on the way, but those edges are left out on
purpose: a package's ``__init__`` importing its own submodules is not a cycle
anyone has to untangle.
"""

from __future__ import annotations

import ast
import importlib
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"sparkle_motion": ROOT / "src" / "sparkle_motion", "function_tools": ROOT / "function_tools"}
MAX_LINES = 700

Graph = Mapping[str, Iterable[str]]


# --------------------------------------------------------------------------- the graph


def module_files(package_dirs: Mapping[str, Path] = PACKAGE_DIRS) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file under each package directory."""
    modules: dict[str, Path] = {}
    for package, directory in package_dirs.items():
        for path in sorted(directory.rglob("*.py")):
            parts = [package, *path.relative_to(directory).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(dotted: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of ``dotted`` that is one of ours (None for the standard library and third parties)."""
    parts = dotted.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of ours that ``module`` imports, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_known(alias.name, modules) for alias in node.names]
        else:
            if node.level:
                anchor = package.split(".")
                if node.level > 1:
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _known(base, modules)
                       for alias in node.names]
        found.update(t for t in targets if t is not None and t != module)
    return found


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


# --------------------------------------------------------------------------- cycles


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm, iteratively; components in no particular order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_path(graph: Graph, start: str, goal: str, within: set[str] | None = None) -> list[str] | None:
    """Shortest path start → … → goal (at least one edge), optionally only through ``within``."""
    parents: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, ())):
            if within is not None and child not in within:
                continue
            if child == goal:
                path = [goal, node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return path[::-1]
            if child not in seen:
                seen.add(child)
                parents[child] = node
                queue.append(child)
    return None


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle per tangle (strongly connected component), as a path that ends where it starts."""
    cycles = []
    for component in _strongly_connected(graph):
        members = set(component)
        first = component[0]
        if len(component) > 1 or first in graph.get(first, ()):
            path = _shortest_path(graph, first, first, within=members)
            assert path is not None
            cycles.append(path)
    return sorted(cycles)


def _show(path: list[str]) -> str:
    return " -> ".join(path)


# --------------------------------------------------------------------------- backends


def tool_backends() -> dict[str, set[str]]:
    """Tool package → the modules its ToolSpec names as backends (read from each ``service.SPEC``)."""
    backends: dict[str, set[str]] = {}
    for service in sorted(PACKAGE_DIRS["function_tools"].glob("*/service.py")):
        tool = f"function_tools.{service.parent.name}"
        spec = importlib.import_module(f"{tool}.service").SPEC
        backends[tool] = {target.partition(":")[0] for target in spec.backends.values()}
    return backends


def backend_crossings(graph: Graph, backends: Mapping[str, set[str]]) -> list[list[str]]:
    """Import paths from one backend module of a tool to another backend module of the same tool."""
    crossings = []
    for modules in backends.values():
        for source in sorted(modules):
            for target in sorted(modules - {source}):
                path = _shortest_path(graph, source, target)
                if path is not None:
                    crossings.append(path)
    return crossings


# --------------------------------------------------------------------------- the rules


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return module_files()


@pytest.fixture(scope="module")
def graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return import_graph(modules)


def test_the_graph_covers_both_packages(modules: dict[str, Path], graph: dict[str, set[str]]) -> None:
    assert {"sparkle_motion.services.app", "sparkle_motion.agents.script_agent",
            "function_tools.videos_wan.service"} <= set(modules)
    # A function-level import is an edge too (script_agent loads the planner inside resolve_model).
    assert "sparkle_motion.agents.offline_planner" in graph["sparkle_motion.agents.script_agent"]


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (break each one):\n" + "\n".join(_show(c) for c in cycles)


def test_no_backend_imports_another_backend_of_its_tool(graph: dict[str, set[str]]) -> None:
    backends = tool_backends()
    assert backends and all(backends.values())
    unknown = sorted(m for mods in backends.values() for m in mods if m not in graph)
    assert not unknown, f"ToolSpec backends that are not modules of the package: {unknown}"
    crossings = backend_crossings(graph, backends)
    assert not crossings, ("backends importing another backend of the same tool (move what they share into a "
                           "module of the tool's own):\n" + "\n".join(_show(p) for p in crossings))


def test_no_source_file_over_700_lines(modules: dict[str, Path]) -> None:
    too_long = []
    for path in modules.values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not too_long, f"files over {MAX_LINES} lines (split them by concept):\n" + "\n".join(sorted(too_long))


# --------------------------------------------------------------------------- the checker itself


def test_find_cycles_reports_each_cycle_as_a_path() -> None:
    graph = {
        "a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(),  # a -> b -> c -> a
        "e": {"e"},  # imports itself
        "f": {"g"}, "g": {"f", "h"}, "h": {"d"},  # f <-> g
        "x": {"y"}, "y": {"z"},  # a chain is no cycle
    }
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"], ["f", "g", "f"]]
    assert find_cycles({"x": {"y"}, "y": {"z"}, "z": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg.sub import low\n",
        "top.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import other\n",
        "other.py": "def later():\n    from .sub.low import thing\n    return thing\n",
        "sub/__init__.py": "",
        "sub/low.py": "import json\nfrom .. import top\nfrom ..other import later\n",
        "sub/side.py": "from . import low\nimport pkg.sub.low as alias\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    modules = module_files({"pkg": package})
    graph = import_graph(modules)
    assert graph == {
        "pkg": {"pkg.sub.low"},
        "pkg.top": set(),  # TYPE_CHECKING only
        "pkg.other": {"pkg.sub.low"},  # inside a function
        "pkg.sub": set(),
        "pkg.sub.low": {"pkg.top", "pkg.other"},
        "pkg.sub.side": {"pkg.sub.low"},
    }
    assert find_cycles(graph) == [["pkg.other", "pkg.sub.low", "pkg.other"]]


def test_backend_crossings_follow_imports_through_other_modules() -> None:
    graph = {"t.gpu": {"t.helpers"}, "t.helpers": {"t.cpu"}, "t.cpu": {"t.models"}, "t.models": set()}
    assert backend_crossings(graph, {"t": {"t.cpu", "t.gpu"}}) == [["t.gpu", "t.helpers", "t.cpu"]]
    assert backend_crossings({"t.gpu": {"t.shared"}, "t.cpu": {"t.shared"}}, {"t": {"t.cpu", "t.gpu"}}) == []
