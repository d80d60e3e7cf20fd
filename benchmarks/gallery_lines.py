"""Lines of code of the gallery's todo page: what a user writes for it.

    git show main~1:examples/gallery.py | python benchmarks/gallery_lines.py     # any version
    python benchmarks/gallery_lines.py < examples/gallery.py

Counts the non-blank lines of the page's entity classes (``Todo``, and ``NewTodo`` where it exists),
of its page handler (``async def todo`` inside ``pages``), and of ``authorize``'s ``Todo`` branch;
not the shared stylesheet, layout or imports.
"""

from __future__ import annotations

import ast
import sys

PARTS = {"Todo", "NewTodo", "todo"}


def count(source: str) -> dict[str, int]:
    lines = source.splitlines()
    filled = lambda a, b: sum(1 for line in lines[a - 1 : b] if line.strip())  # noqa: E731
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef | ast.AsyncFunctionDef) and node.name in PARTS:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found[node.name] = filled(start, node.end_lineno or start)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "entity is Todo":
            found["authorize"] = filled(node.lineno, node.end_lineno or node.lineno)
    return found


if __name__ == "__main__":
    parts = count(sys.stdin.read())
    for name, n in parts.items():
        print(f"{name:10} {n:4}")
    print(f"{'total':10} {sum(parts.values()):4}")
