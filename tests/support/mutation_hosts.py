"""A pytest plugin for the mutation run (``[tool.mutmut]`` in pyproject.toml loads it with ``-p``): the
contract suite runs on three hosts (bare, the stripped ``root_path`` convention, and Starlette's mount)
rather than all eight, since a mutant of the library behaves the same under every host but costs
eight times the time. ``test_hosts.py`` still runs whole, so host-specific paths are still judged."""

from __future__ import annotations

import pytest

HOSTS_FOR_MUTANTS = {"bare", "stripped", "starlette"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        host = callspec.params.get("host") if callspec is not None else None
        (dropped if host is not None and host not in HOSTS_FOR_MUTANTS else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
