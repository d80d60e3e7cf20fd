from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from starmodel_asgi import StarModel
from tests.hosts import HOSTS

DATASTAR = {"Datastar-Request": "true"}
JSON = {"Accept": "application/json"}


def require(env: str, what: str) -> str:
    """The URL of a real service for a test, from the environment. Unset: the test skips with the
    reason, unless STARMODEL_REQUIRE_SERVICES=1 (as in CI), where it fails."""
    value = os.environ.get(env)
    if value:
        return value
    message = f"{what} tests need {env} set"
    if os.environ.get("STARMODEL_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (STARMODEL_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(HOSTS))
def host(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_client(host: str) -> Callable[[StarModel], httpx.AsyncClient]:
    """``make_client(sm)``: an httpx client talking to ``sm`` mounted under the host being tested,
    with ``base_url`` at the app's own prefix, so tests use contract paths (``/counter/...``)."""

    def make(sm: StarModel) -> httpx.AsyncClient:
        app, prefix = HOSTS[host](sm)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://testserver{prefix}")

    return make


@pytest.fixture
async def client(
    make_client: Callable[[StarModel], httpx.AsyncClient], sm: StarModel
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(sm) as c:
        yield c
