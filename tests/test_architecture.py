"""The layout stays readable: no import circles, the core never imports the adapters, no module over 450 lines.

The import graph is read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` statement of every module in ``guardrail/``, ``integrations/`` and ``policies/``,
wherever it stands (inside functions and ``if TYPE_CHECKING:`` blocks too: a reader follows those
as well), relative imports resolved. ``from pkg import name`` counts as an import of ``pkg.name``
when that is a module, else of ``pkg``. Importing ``a.b`` also runs ``a/__init__.py``; that implicit
edge is not counted, so a package may re-export its own modules.
"""

from __future__ import annotations

import ast
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Where each top-level folder lives in the package (integrations/ and policies/ ship inside guardrail).
ROOTS = {
    "guardrail": REPO / "guardrail",
    "guardrail.integrations": REPO / "integrations",
    "guardrail.policies": REPO / "policies",
}

MAX_LINES = 450
"""No module in guardrail/ or integrations/ longer than this, counted as `wc -l` counts."""

ADAPTER_PACKAGES = ("guardrail.integrations",)
"""The adapters: they depend on the core, never the reverse."""

ABOVE_THE_ADAPTERS = ("guardrail.cli",)
"""What may import the adapters: the CLI (`guardrail serve` runs the OpenAI proxy). Everything else
in guardrail/ is the core."""


@dataclass
class Graph:
    files: dict[str, Path] = field(default_factory=dict)  # module -> source file
    imports: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> {imported module: line}


def _modules(roots: dict[str, Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, root in roots.items():
        for folder, dirs, names in os.walk(root):  # symlinked folders (guardrail/integrations) are not followed
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            for name in sorted(n for n in names if n.endswith(".py")):
                parts = Path(folder, name).relative_to(root).with_suffix("").parts
                parts = parts[:-1] if parts[-1] == "__init__" else parts
                found[".".join((package, *parts))] = Path(folder, name)
    return found


def _known(name: str, files: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (itself or its nearest enclosing package), None if outside."""
    while name and name not in files:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(roots: dict[str, Path]) -> Graph:
    """Every project module and the project modules it imports, with the line of the first such import."""
    graph = Graph(files=_modules(roots))
    for module, path in graph.files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [_known(alias.name, graph.files) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in graph.files else _known(source, graph.files)
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                if target is not None and target != module:
                    edges.setdefault(target, node.lineno)
        graph.imports[module] = edges
    return graph


def circle_groups(graph: Graph) -> list[tuple[frozenset[str], list[str]]]:
    """Each group of modules that import each other (Tarjan's strongly connected components), with
    one shortest circle through it to name in a failure."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.imports[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = {stack.pop()}
            while module not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(frozenset(group))

    for module in sorted(graph.imports):
        if module not in index:
            visit(module)
    return [(group, _shortest_circle(graph, group)) for group in groups]


def _shortest_circle(graph: Graph, group: frozenset[str]) -> list[str]:
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    for module in queue:
        for target in sorted(graph.imports[module]):
            if target == start:
                return [*paths[module], start]
            if target in group and target not in paths:
                paths[target] = [*paths[module], target]
                queue.append(target)
    raise AssertionError(f"{sorted(group)} holds no circle")


def _shown(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def describe(graph: Graph, circle: list[str]) -> str:
    """``a -> b -> a (a.py:3 imports b; b.py:7 imports a)``."""
    steps = [f"{_shown(graph.files[a])}:{graph.imports[a][b]} imports {b}" for a, b in itertools.pairwise(circle)]
    return " -> ".join(circle) + " (" + "; ".join(steps) + ")"


def long_files(paths: list[Path]) -> dict[str, int]:
    """The files over ``MAX_LINES`` lines, with their line counts (newlines, as `wc -l` counts)."""
    counts = {_shown(path): path.read_bytes().count(b"\n") for path in paths}
    return {name: lines for name, lines in sorted(counts.items()) if lines > MAX_LINES}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(ROOTS)


def test_no_import_circles(graph: Graph) -> None:
    found = circle_groups(graph)
    circles = [describe(graph, circle) for _, circle in found]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_core_never_imports_the_adapters(graph: Graph) -> None:
    wrong = [
        f"{_shown(graph.files[module])}:{line} imports {target}"
        for module, targets in sorted(graph.imports.items())
        if not _within(module, ADAPTER_PACKAGES + ABOVE_THE_ADAPTERS)
        for target, line in targets.items()
        if _within(target, ADAPTER_PACKAGES)
    ]
    assert not wrong, "the core imports an adapter:\n" + "\n".join(wrong)


def test_nothing_below_the_command_line_imports_it(graph: Graph) -> None:
    """The CLI is the top layer: the core and the adapters never import it (batch workers and the
    proxy would otherwise load every command)."""
    wrong = [
        f"{_shown(graph.files[module])}:{line} imports {target}"
        for module, targets in sorted(graph.imports.items())
        if not _within(module, ABOVE_THE_ADAPTERS)
        for target, line in targets.items()
        if _within(target, ABOVE_THE_ADAPTERS)
    ]
    assert not wrong, "imports the CLI from below it:\n" + "\n".join(wrong)


def test_no_module_is_over_450_lines(graph: Graph) -> None:
    over = long_files(list(graph.files.values()))
    assert not over, "over 450 lines: " + ", ".join(f"{name} ({lines} lines)" for name, lines in over.items())


def test_the_graph_holds_imports_in_functions_and_type_checking_blocks(graph: Graph) -> None:
    assert "guardrail.act" in graph.imports["guardrail.guard"]
    assert "guardrail.scorers.local" in graph.imports["guardrail.training.export"]  # inside check_shipped
    assert "guardrail.model.tokenizer" in graph.imports["guardrail.text"]  # under TYPE_CHECKING
    cli_imports = {
        target for module in graph.imports if _within(module, ABOVE_THE_ADAPTERS) for target in graph.imports[module]
    }
    assert "guardrail.integrations.proxy_server" in cli_imports  # `guardrail serve`, inside a function
    assert graph.files["guardrail.integrations"] == REPO / "integrations" / "__init__.py"


def test_a_circle_is_found_and_named_with_its_files_and_lines(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "a.py": "import os\nfrom pkg import b\n",
        "b.py": "def later():\n    from .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from ..a import Thing\n",
        "d.py": "import pkg.sub.c\nfrom . import a\n",  # imports the circle, is not part of it
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)

    found = import_graph({"pkg": tmp_path / "pkg"})

    assert found.imports["pkg.d"] == {"pkg.sub.c": 1, "pkg.a": 2}
    ((group, circle),) = circle_groups(found)
    assert group == {"pkg.a", "pkg.b", "pkg.sub.c"}
    assert describe(found, circle) == (
        f"pkg.a -> pkg.b -> pkg.sub.c -> pkg.a ({tmp_path}/pkg/a.py:2 imports pkg.b; "
        f"{tmp_path}/pkg/b.py:2 imports pkg.sub.c; {tmp_path}/pkg/sub/c.py:4 imports pkg.a)"
    )


def test_files_over_450_lines_are_named(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert long_files([tmp_path / "ok.py", tmp_path / "long.py"]) == {str(tmp_path / "long.py"): MAX_LINES + 1}
