from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from starmodel_asgi import StarModel
from starmodel_asgi.testing import StreamingTransport
from tests.support.hosts import HOSTS


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
        return httpx.AsyncClient(transport=StreamingTransport(app), base_url=f"http://testserver{prefix}")

    return make


@pytest.fixture
async def client(
    make_client: Callable[[StarModel], httpx.AsyncClient], sm: StarModel
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(sm) as c:
        yield c
