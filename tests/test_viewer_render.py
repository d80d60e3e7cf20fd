"""``render(self, viewer)``: each live stream renders for its own viewer (the delete button only on
my own posts), on a real uvicorn; ``render(self)`` stays rendered once for every stream."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from starmodel_asgi import Entity, EventRequest, StarModel, event
from starmodel_asgi.testing import LivePage
from tests.support.headers import DATASTAR
from tests.support.servers import ServerURL, read_live, run_server
from tests.support.sse import ListPage

pytestmark = pytest.mark.anyio

RENDERS: Counter[str] = Counter()  # "<entity> <record id> <viewer>" -> renders


class Post(Entity):
    model_config = {"scope": "record", "client_writable": ["text"]}
    text: str = ""
    owner: str = ""

    def on_create(self, request: EventRequest | None) -> None:
        self.owner = (request.user_id if request else None) or ""

    @event
    def edit(self, text: str) -> None:
        self.text = text

    def render(self, viewer: EventRequest) -> str:
        RENDERS[f"post {self.text} {viewer.user_id}"] += 1
        delete = '<button class="delete">delete</button>' if viewer.user_id == self.owner else ""
        return f'<li id="{self.dom_id}">{self.text}{delete}</li>'


class Shared(Entity):
    """The fast path: one render per change, whoever watches."""

    model_config = {"scope": "record", "client_writable": ["text"]}
    text: str = ""

    @event
    def edit(self, text: str) -> None:
        self.text = text

    def render(self) -> str:
        RENDERS[f"shared {self.text}"] += 1
        return f'<li id="{self.dom_id}">{self.text}</li>'


def user(request: Request) -> str | None:
    return request.headers.get("x-user")


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[ServerURL, dict[str, httpx.AsyncClient]]]:
    RENDERS.clear()
    sm = StarModel([Post, Shared], base_path="", secret_key="viewer", get_user=user)
    with run_server(sm) as url:
        async with AsyncExitStack() as stack:
            clients = {
                name: await stack.enter_async_context(
                    httpx.AsyncClient(base_url=url, timeout=10, headers={"x-user": name})
                )
                for name in ("alice", "bob")
            }
            yield url, clients


def deletable(live: LivePage, target: str = "#post-list") -> list[str]:
    """The texts of the records this page shows a delete button for."""
    page = ListPage(target).apply(live.events)
    return [text.removesuffix("delete") for text in page.texts if text.endswith("delete")]


def texts(live: LivePage) -> list[str]:
    return [text.removesuffix("delete") for text in ListPage("#post-list").apply(live.events).texts]


async def post(client: httpx.AsyncClient, text: str, entity: str = "post") -> str:
    response = await client.post(f"/{entity}", json={"text": text})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_each_live_list_renders_the_delete_button_only_on_its_viewers_own_posts() -> None:
    async with serving() as (_, clients):
        alice, bob = clients["alice"], clients["bob"]
        await post(alice, "a1")
        async with read_live(alice, "/post/live") as for_alice, read_live(bob, "/post/live") as for_bob:
            # the first full list, rendered for each
            await for_alice.wait(lambda live: texts(live) == ["a1"] and deletable(live) == ["a1"])
            await for_bob.wait(lambda live: texts(live) == ["a1"] and deletable(live) == [])
            b1 = await post(bob, "b1")
            await for_alice.wait(lambda live: texts(live) == ["a1", "b1"] and deletable(live) == ["a1"])
            await for_bob.wait(lambda live: texts(live) == ["a1", "b1"] and deletable(live) == ["b1"])
            await bob.post(f"/post/{b1}/edit", json={"text": "B1"}, headers=DATASTAR)
            await for_alice.wait(lambda live: texts(live) == ["a1", "B1"] and deletable(live) == ["a1"])
            await for_bob.wait(lambda live: texts(live) == ["a1", "B1"] and deletable(live) == ["B1"])
        # each stream rendered a1 once (its first list) and never again: records that did not
        # change are not rendered again
        assert RENDERS["post a1 alice"] == 1 and RENDERS["post a1 bob"] == 1, RENDERS


async def test_a_record_live_stream_renders_for_its_viewer() -> None:
    async with serving() as (_, clients):
        alice, bob = clients["alice"], clients["bob"]
        a1 = await post(alice, "a1")

        def html(live: LivePage) -> str:
            return "".join(e.elements for e in live.events if e.event == "datastar-patch-elements")

        async with read_live(alice, f"/post/{a1}/live") as for_alice, read_live(bob, f"/post/{a1}/live") as for_bob:
            await for_alice.wait(lambda live: "a1<button" in html(live))
            await for_bob.wait(lambda live: ">a1</li>" in html(live))
            await alice.post(f"/post/{a1}/edit", json={"text": "A1"}, headers=DATASTAR)
            await for_alice.wait(lambda live: "A1<button" in html(live))
            await for_bob.wait(lambda live: ">A1</li>" in html(live))
            assert "button" not in html(for_bob)


async def test_a_render_without_viewer_is_rendered_once_per_change_for_every_stream() -> None:
    async with serving() as (_, clients):
        alice, bob = clients["alice"], clients["bob"]
        s1 = await post(alice, "s1", "shared")
        url = f"/shared/{s1}/live"
        async with AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(read_live(c, u)) for c in (alice, bob) for u in (url, url)]
            lists = [await stack.enter_async_context(read_live(c, "/shared/live")) for c in (alice, bob)]
            await alice.post(f"/shared/{s1}/edit", json={"text": "S1"}, headers=DATASTAR)
            for live in streams:
                await live.wait(lambda live: any(">S1</li>" in e.elements for e in live.events))
            for live in lists:
                await live.wait(lambda live: ListPage("#shared-list").apply(live.events).texts == ["S1"])
        assert RENDERS["shared S1"] == 2, RENDERS  # once for the four record streams, once for the lists


def test_a_render_asking_for_more_than_the_viewer_fails_at_app_build_naming_the_fix() -> None:
    class Odd(Entity):
        model_config = {"scope": "record"}

        def render(self, viewer: EventRequest, theme: str) -> str:  # type: ignore[override]
            return ""

    with pytest.raises(
        ValueError,
        match=r"Odd.render\(self, viewer, theme\): render takes no parameter .* or one.*give theme a default",
    ):
        StarModel([Odd])


def test_render_with_an_optional_second_parameter_renders_per_viewer() -> None:
    class Themed(Entity):
        model_config = {"scope": "record"}

        def render(self, viewer: Any = None, theme: str = "light") -> str:
            return theme

    sm = StarModel([Themed])
    assert sm.spec(Themed).renders_per_viewer
