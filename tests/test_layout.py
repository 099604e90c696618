"""The package's architecture, checked from its source: no import cycles, no distilkit import
hidden inside a function, a small top level, and every method package the same shape."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import distilkit
import distilkit.methods

PACKAGE = Path(distilkit.__file__).resolve().parent
MAX_TOP_LEVEL_MODULES = 6


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node: ast.AST, known: set[str]) -> set[str]:
    """The distilkit modules an import statement loads (``from a import b`` loads ``a.b`` when
    ``b`` is a submodule, else ``a``)."""
    found = set()
    if isinstance(node, ast.Import):
        found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "distilkit"}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module.split(".")[0] != "distilkit":
            return found
        for alias in node.names:
            sub = f"{node.module}.{alias.name}"
            found.add(sub if sub in known else node.module)
    return found


def type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            hidden |= {id(child) for statement in node.body for child in ast.walk(statement)}
    return hidden


def import_graph() -> dict[str, set[str]]:
    """Module -> the distilkit modules it imports when it runs."""
    known = set(modules())
    graph = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = type_checking_only(tree)
        graph[name] = set()
        for node in ast.walk(tree):
            if id(node) not in skipped:
                graph[name] |= imported_modules(node, known) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and graph["distilkit.cli.main"]  # the graph was really read
    assert find_cycle(graph) is None


def test_no_function_imports_distilkit():
    hidden = []
    known = set(modules())
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if imported_modules(node, known):
                        hidden.append(f"{name}:{node.lineno} in {function.name}")
    assert hidden == []


def test_the_top_level_is_small_and_every_folder_is_a_package():
    top = [path.name for path in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    for folder in PACKAGE.rglob("*"):
        if folder.is_dir() and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), folder


def method_packages() -> list[str]:
    return [info.name for info in pkgutil.iter_modules(distilkit.methods.__path__) if info.ispkg]


def test_every_method_has_a_config_dataclass_and_a_run_function():
    names = method_packages()
    assert {"general", "task", "bilstm", "multi_teacher", "early_exit", "finetune"} <= set(names)
    for name in names:
        method = importlib.import_module(f"distilkit.methods.{name}")
        assert dataclasses.is_dataclass(method.Config), name
        parameters = list(inspect.signature(method.run).parameters)
        assert parameters[:3] == ["config", "out_dir", "resume"], (name, parameters)


def test_no_two_public_classes_share_a_name():
    owners: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                owners.setdefault(node.name, []).append(name)
    assert {cls: where for cls, where in owners.items() if len(where) > 1} == {}
