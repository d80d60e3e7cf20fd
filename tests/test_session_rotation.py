"""The session is replaced when its user signs in or out (session fixation): a sign-in keeps what the
visitor had (a cart, a draft), a sign-out or another user starts empty, and whoever held the old
cookie sees none of it. Checked with the app's own cookie and under a host's session."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.routing import Mount

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport

pytestmark = pytest.mark.anyio

JSON = {"Accept": "application/json"}


class Cart(Entity):
    items: int = 0

    @event
    def add(self) -> None:
        self.items += 1


class Draft(Entity):
    text: str = ""

    @event
    def write(self, text: str) -> None:
        self.text = text


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


def build() -> StarModel:
    return StarModel([Cart, Draft], base_path="", secret_key="rotate", get_user=user_from_header)


class Browser:
    """One browser: its own cookie jar, and whoever is signed in there."""

    def __init__(self, app: Any, cookies: httpx.Cookies | None = None) -> None:
        self.app, self.user = app, None
        self.cookies = httpx.Cookies(cookies)

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**JSON, **({"x-user": self.user} if self.user else {})}
        transport = StreamingTransport(self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", cookies=self.cookies) as client:
            response = await client.request(method, path, headers=headers, **kwargs)
        self.cookies.update(response.cookies)
        return response

    async def items(self) -> int:
        return int((await self.send("GET", "/cart")).json()["items"])


async def test_signing_in_keeps_the_visitors_state_under_a_new_session_the_old_cookie_cannot_reach() -> None:
    sm = build()
    victim = Browser(sm)
    for _ in range(3):
        await victim.send("POST", "/cart/add")
    await victim.send("POST", "/draft/write", json={"text": "hello"})
    planted = httpx.Cookies(victim.cookies)  # what an attacker who fixed the session id knows

    victim.user = "ada"
    assert await victim.items() == 3  # the cart came along
    assert (await victim.send("GET", "/draft")).json()["text"] == "hello"  # every session entity did
    assert victim.cookies["sm_session"] != planted["sm_session"]
    await victim.send("POST", "/cart/add")
    assert await victim.items() == 4

    attacker = Browser(sm, planted)
    assert await attacker.items() == 0  # nothing of the signed-in session, before or after
    assert (await attacker.send("GET", "/draft")).json()["text"] == ""
    assert await victim.items() == 4


async def test_signing_out_or_in_as_another_user_starts_an_empty_session() -> None:
    sm = build()
    browser = Browser(sm)
    browser.user = "ada"
    for _ in range(2):
        await browser.send("POST", "/cart/add")
    signed_in = httpx.Cookies(browser.cookies)

    browser.user = None  # signs out
    assert await browser.items() == 0
    assert await Browser(sm, signed_in).items() == 0  # the signed-in session is gone, not just left

    browser.user = "ada"
    await browser.send("POST", "/cart/add")
    browser.user = "bob"  # another person on the same browser
    assert await browser.items() == 0


async def test_a_pages_concurrent_requests_after_a_sign_in_land_in_one_session() -> None:
    sm = build()
    browser = Browser(sm)
    for _ in range(3):
        await browser.send("POST", "/cart/add")
    browser.user = "ada"
    answers: list[httpx.Response] = []

    async def add() -> None:
        answers.append(await browser.send("POST", "/cart/add"))

    async with anyio.create_task_group() as tg:
        for _ in range(5):  # all with the cookie from before the sign-in
            tg.start_soon(add)
    assert len({a.cookies["sm_session"] for a in answers}) == 1
    assert await browser.items() == 8  # the three from before and all five


async def test_a_host_session_is_replaced_the_same_way() -> None:
    sm = build()
    host = Starlette(routes=[Mount("/sm", sm)], middleware=[Middleware(SessionMiddleware, secret_key="host")])
    browser = Browser(host)
    for _ in range(2):
        await browser.send("POST", "/sm/cart/add")
    planted = httpx.Cookies(browser.cookies)
    browser.user = "ada"
    assert int((await browser.send("GET", "/sm/cart")).json()["items"]) == 2
    await browser.send("POST", "/sm/cart/add")
    assert int((await Browser(host, planted).send("GET", "/sm/cart")).json()["items"]) == 0
    browser.user = None
    assert int((await browser.send("GET", "/sm/cart")).json()["items"]) == 0


async def test_a_host_page_after_a_sign_out_renders_none_of_the_signed_in_state() -> None:
    sm = build()
    browser = Browser(sm)
    browser.user = "ada"
    for _ in range(2):
        await browser.send("POST", "/cart/add")

    def page_request(user: str | None) -> Request:
        headers = [(b"cookie", f"sm_session={browser.cookies['sm_session']}".encode())]
        if user:
            headers.append((b"x-user", user.encode()))
        return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})

    assert (await sm.current(Cart, page_request("ada"))).items == 2
    assert (await sm.current(Cart, page_request(None))).items == 0  # signed out: not ada's cart
    assert (await sm.current(Cart, page_request("bob"))).items == 0


async def test_a_signed_in_session_survives_key_rotation() -> None:
    old = StarModel([Cart, Draft], base_path="", secret_key="old", get_user=user_from_header)
    browser = Browser(old)
    browser.user = "ada@example.com"
    for _ in range(2):
        await browser.send("POST", "/cart/add")
    assert "@" not in browser.cookies["sm_session"]  # the cookie does not say whose it is (no @ in base64url)
    rotated = StarModel(
        [Cart, Draft], base_path="", secret_key=["new", "old"], get_user=user_from_header, stores=old._stores
    )
    browser.app = rotated
    assert await browser.items() == 2  # the same user's session, not a sign-in
