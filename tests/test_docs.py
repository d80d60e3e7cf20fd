"""The package as users meet it: every public name documented (the API reference is generated from
these docstrings by mkdocstrings), the reference pages naming every public name, and the packaging
facts (version, licence, URLs, changelog) agreeing with each other."""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import re
import tomllib
from pathlib import Path
from typing import Any

import starmodel_asgi
from tests.test_public_names import readme_imports

ROOT = Path(__file__).resolve().parent.parent
#: the modules users import public names from; their ``__all__`` is the public API
PUBLIC_MODULES = ["starmodel_asgi", "starmodel_asgi.testing"]


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def public_names() -> list[tuple[str, str, object]]:
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            found.append((module_name, name, getattr(module, name)))
    for module_name, name in readme_imports():  # the hosts' glue and the like, which README imports
        if module_name not in PUBLIC_MODULES:
            found.append((module_name, name, getattr(importlib.import_module(module_name), name)))
    return found


def documented(value: object) -> bool:
    return bool((getattr(value, "__doc__", None) or "").strip())


def attribute_docstring(value: object, name: str) -> bool:
    """An instance exported by name (``ClientWritable``) carries no docstring of its own: it is
    documented by a string literal right after its assignment, as mkdocstrings reads it."""
    module = inspect.getmodule(type(value))
    assert module is not None
    body = ast.parse(inspect.getsource(module)).body
    for statement, following in itertools.pairwise(body):
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
                and bool(following.value.value.strip())
            )
    return False


def public_members(cls: type) -> dict[str, object]:
    """The methods and properties a user calls on ``cls``: those not starting with ``_``, defined by
    ``cls`` or a base class of this package (a re-exported class such as Starlette's ``UploadFile``,
    or pydantic's ``BaseModel``, is documented by its own project)."""
    members: dict[str, object] = {}
    for base in reversed(cls.__mro__):
        if not base.__module__.startswith("starmodel_asgi"):
            continue
        for name, value in vars(base).items():
            if name.startswith("_"):
                continue
            if isinstance(value, classmethod | staticmethod):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                members[name] = value
    return members


def undocumented() -> list[str]:
    missing = []
    for module_name, name, value in public_names():
        if inspect.isclass(value) or inspect.isroutine(value):
            if not documented(value):
                missing.append(f"{module_name}.{name}")
        elif not attribute_docstring(value, name):
            missing.append(f"{module_name}.{name}")
        if inspect.isclass(value):
            for member, member_value in public_members(value).items():
                if not documented(member_value):
                    missing.append(f"{module_name}.{name}.{member}")
    return missing


def test_the_walk_finds_the_public_names_and_their_members() -> None:
    names = {f"{module}.{name}" for module, name, _ in public_names()}
    assert {"starmodel_asgi.StarModel", "starmodel_asgi.ServerOnly", "starmodel_asgi.testing.Page"} <= names
    assert "starmodel_asgi.contrib.django.mount" in names  # README imports it
    assert {"edit", "create", "lifespan", "routes"} <= set(public_members(starmodel_asgi.StarModel))
    assert "holder" in public_members(starmodel_asgi.Entity)  # a classmethod
    assert "model_dump" not in public_members(starmodel_asgi.Entity)  # pydantic's own


def test_every_public_name_and_its_public_members_have_a_docstring() -> None:
    missing = undocumented()
    assert missing == [], f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def test_the_reference_pages_render_every_public_name() -> None:
    pages = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    rendered = set(re.findall(r"^::: ([\w.]+)$", pages, re.M))
    missing = [f"{m}.{n}" for m, n, _ in public_names() if f"{m}.{n}" not in rendered]
    assert missing == [], f"no '::: name' in docs/ for {missing}"


def test_the_version_is_the_one_pyproject_declares() -> None:
    version = pyproject()["project"]["version"]
    assert starmodel_asgi.__version__ == version
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)


def test_the_changelog_has_a_section_for_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in changelog
    assert re.search(rf"^## \[{re.escape(starmodel_asgi.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert re.search(r"^## \[Unreleased\]$", changelog, re.M)


def test_the_licence_file_is_the_mit_licence_pyproject_declares() -> None:
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    assert "Copyright (c) 2026 the starmodel_asgi authors" in licence
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in licence


def test_the_project_metadata_has_urls_and_classifiers() -> None:
    project = pyproject()["project"]
    assert set(project["urls"]) == {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(url.startswith("https://") for url in project["urls"].values())
    classifiers = set(project["classifiers"])
    assert {"Framework :: AsyncIO", "Typing :: Typed", "Development Status :: 3 - Alpha"} <= classifiers
    # PEP 639: the licence is the `license` expression; a "License ::" classifier beside it is deprecated
    # and indexes may refuse the upload
    assert not [c for c in classifiers if c.startswith("License ::")]
    minimum = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert minimum
    versions = sorted(int(c.rsplit(".", 1)[1]) for c in classifiers if re.fullmatch(r"Programming .*3\.\d+", c))
    assert versions[0] == int(minimum.group(1))


def test_the_docs_tools_are_pinned_and_the_build_is_strict() -> None:
    docs = pyproject()["project"]["optional-dependencies"]["docs"]
    assert docs and all(re.fullmatch(r"[\w\-\[\]]+==[\w.]+", requirement) for requirement in docs)
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^strict: true$", config, re.M)
    assert "mkdocs build --strict" in (ROOT / ".ci" / "run").read_text()
    assert "site/" in (ROOT / ".gitignore").read_text().split()


def test_readme_has_a_table_of_contents_of_its_sections_and_links_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", readme, flags=re.S)  # '# a comment' in a snippet is no heading
    sections = re.findall(r"^## (.+)$", prose, re.M)
    assert sections[0] == "Contents"  # right after the intro
    contents = prose[prose.index("## Contents") :]
    contents = contents[: contents.index("\n## ", 1)]
    for section in sections[1:]:
        anchor = re.sub(r"[^\w\- ]", "", section.lower()).replace(" ", "-")
        assert f"(#{anchor})" in contents, f"README's contents do not link '## {section}'"
    assert "mkdocs build" in readme and "mkdocs serve" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), f"README links {link}, which does not exist"


def test_the_settings_page_has_a_row_for_every_keyword_of_starmodel() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    first_cells = "".join(line.split("|")[1] for line in page.splitlines() if line.startswith("| "))
    rows = set(re.findall(r"`(\w+)`", first_cells))
    missing = [p for p in inspect.signature(starmodel_asgi.StarModel).parameters if p not in rows]
    assert missing == [], f"docs/settings.md has no row for StarModel's {missing}"
