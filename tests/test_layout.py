"""The package's shape: no import cycles (counting imports inside functions and TYPE_CHECKING
blocks), no class past ~250 lines, and a py.typed marker."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "starmodel_asgi"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node, [])
        if cycle:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_class_is_longer_than_250_lines() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno and node.end_lineno - node.lineno > 250:
                long.append(f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno} lines")
    assert long == []


def test_the_package_is_marked_typed() -> None:
    assert (PACKAGE / "py.typed").exists()


def test_readme_layout_names_every_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("```\nstarmodel_asgi/\n") :]
    layout = layout[: layout.index("\n```")]
    listed = set(re.findall(r"[\w/]+\.py", layout))
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        name = str(relative) if relative.parent == Path(".") else relative.name
        assert name in listed or f"{relative.parent}/" in layout, f"README's layout map does not name {relative}"
        if relative.parent != Path("."):
            assert relative.name in layout, f"README's layout map does not name {relative}"
