"""Every name README imports from the package can be imported, so a rename inside the package
never breaks a user's code silently."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
IMPORT = re.compile(r"^\s*from (starmodel_asgi[\w.]*) import ([\w, ()]+)$", re.M)


def readme_imports() -> list[tuple[str, str]]:
    found = []
    for module, names in IMPORT.findall(README.read_text()):
        for name in names.strip("()").split(","):
            if name.strip():
                found.append((module, name.strip().split(" as ")[0]))
    return sorted(set(found))


def test_readme_imports_names() -> None:
    assert len(readme_imports()) >= 10  # the pattern still finds README's imports


@pytest.mark.parametrize(("module", "name"), readme_imports(), ids=lambda v: str(v))
def test_every_name_readme_imports_exists(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"README imports {name} from {module}"


def test_the_package_root_exports_what_it_lists() -> None:
    package = importlib.import_module("starmodel_asgi")
    assert all(hasattr(package, name) for name in package.__all__)
    assert "datastar_script" in package.__all__  # README's first snippet imports it from the root
