"""Newest-first live lists (``live_list(newest_first=True)``): new records prepended, the window
kept at its size, and "load more" (``&shown=N``) widening it with older records that stay live; on
a real uvicorn. In Chromium with the real Datastar client: tests/test_browser_feed.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.testing import LivePage
from tests.support.headers import DATASTAR
from tests.support.servers import ServerURL, read_live, run_server
from tests.support.sse import ListPage

pytestmark = pytest.mark.anyio


class Tweet(Entity):
    model_config = {"scope": "record", "client_writable": ["text"]}
    text: str = ""

    @event
    def edit(self, text: str) -> None:
        self.text = text

    def render(self) -> str:
        return f'<article id="{self.dom_id}">{self.text}</article>'


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[tuple[ServerURL, httpx.AsyncClient]]:
    sm = StarModel([Tweet], base_path="", secret_key="feed", **settings)
    with run_server(sm) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield url, client


async def post(client: httpx.AsyncClient, text: str) -> str:
    response = await client.post("/tweet", json={"text": text})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def showing(*texts: str) -> Any:
    return lambda live: ListPage("#tweet-list").apply(live.events).texts == list(texts)


def modes(live: LivePage, last: int) -> list[tuple[str, str | None]]:
    return [(e.get("mode") or "outer", e.get("selector")) for e in live.events[-last:]]


async def test_new_records_are_prepended_and_the_oldest_leaves_the_window() -> None:
    async with serving() as (_, client):
        ids = {text: await post(client, text) for text in ("t1", "t2", "t3")}
        async with read_live(client, "/tweet/live?limit=2&newest_first=1") as live:
            await live.wait(showing("t3", "t2"))
            assert modes(live, 1) == [("inner", "#tweet-list")]
            ids["t4"] = await post(client, "t4")
            await live.wait(showing("t4", "t3"))
            assert sorted(modes(live, 2)) == [("prepend", "#tweet-list"), ("remove", f"#tweet-{ids['t2']}")]
            await client.post(f"/tweet/{ids['t3']}/edit", json={"text": "T3"}, headers=DATASTAR)
            await live.wait(showing("t4", "T3"))
            assert modes(live, 1) == [("outer", f"#tweet-{ids['t3']}")]
            assert (await client.delete(f"/tweet/{ids['t4']}")).status_code == 204
            await live.wait(showing("T3", "t2"))  # the next older one comes back at the end
            assert sorted(modes(live, 2)) == [("append", "#tweet-list"), ("remove", f"#tweet-{ids['t4']}")]


async def test_load_more_widens_the_window_with_older_records_that_stay_live() -> None:
    async with serving() as (_, client):
        ids = {text: await post(client, text) for text in ("t1", "t2", "t3", "t4", "t5")}
        # the page showed 2 and asks for more: the same list, 2 older records wider
        async with read_live(client, "/tweet/live?limit=2&newest_first=1&shown=2") as live:
            await live.wait(showing("t5", "t4", "t3", "t2"))
            await client.post(f"/tweet/{ids['t2']}/edit", json={"text": "T2"}, headers=DATASTAR)
            await live.wait(showing("t5", "t4", "t3", "T2"))  # an older record loaded is live
            assert (await client.delete(f"/tweet/{ids['t3']}")).status_code == 204
            await live.wait(showing("t5", "t4", "T2", "t1"))
            await post(client, "t6")
            await live.wait(showing("t6", "t5", "t4", "T2"))  # the window keeps its 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("shown=x", "shown must be an integer"),
        ("shown=-1", "shown"),
        ("shown=1001", "0..1000"),
        ("shown=2", "newest_first"),
    ],
)
async def test_a_bad_load_more_is_a_422_naming_it(query: str, message: str) -> None:
    async with serving() as (_, client):
        newest = "&newest_first=1" if query != "shown=2" else ""
        response = await client.get(f"/tweet/live?{query}{newest}", headers={"Accept": "application/json"})
        assert response.status_code == 422
        assert message in response.json()["error"]


def test_the_element_of_a_newest_first_list_asks_again_on_load_more() -> None:
    StarModel([Tweet], base_path="/sm")
    element = str(Tweet.live_list(limit=20, newest_first=True))
    # in the attribute, & is written &amp; (the browser reads it back as &)
    assert "data-init=\"@get('/sm/tweet/live?limit=20&amp;newest_first=1', {retry: 'always'})\"" in element
    more = "data-on:sm-load-more=\"@get('/sm/tweet/live?limit=20&amp;newest_first=1&amp;shown=' + el.children.length"
    assert more in element
    assert Tweet.load_more() == ("document.getElementById('tweet-list').dispatchEvent(new CustomEvent('sm-load-more'))")
    assert "sm-load-more" not in str(Tweet.live_list(limit=20))  # oldest first: no load more
