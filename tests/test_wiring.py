"""Wiring mistakes are named at the earliest moment, with their fix: a mount point that is not
``base_path``, a ``model_config`` key typo, a bad ``entities=``, a method without ``@event``, and
an action for an entity that no app serves."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.entities import Counter
from tests.support.headers import DATASTAR, JSON
from tests.support.hosts import HOSTS

pytestmark = pytest.mark.anyio


class Gauge(Counter):
    def lower(self, amount: int = 1) -> None:  # no @event: a helper, or a forgotten decorator
        self.count -= amount


class Orphan(Entity):
    """Served by no app in this module."""

    seen: bool = False

    @event
    def see(self) -> None:
        self.seen = True


def client(app: Any, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(app), base_url=base_url)


def wiring_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "starmodel_asgi" and r.levelname == "WARNING"]


# -- the mount point ------------------------------------------------------------------------


async def test_a_mount_point_other_than_base_path_is_named_once_per_mount_with_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sm = StarModel([Gauge], secret_key="k")  # base_path="/sm" by default
    host = Starlette(routes=[Mount("/live", app=sm), Mount("/other", app=sm)])
    async with client(host) as c:
        for _ in range(3):
            assert (await c.get("/live/gauge", headers=JSON)).status_code == 200
        (warning,) = wiring_warnings(caplog)
        assert 'StarModel(base_path="/sm") is mounted at "/live"' in warning
        assert 'mount it at "/sm"' in warning and 'StarModel(base_path="/live")' in warning
        await c.get("/other/gauge", headers=JSON)
        await c.get("/other/gauge", headers=JSON)
    assert len(wiring_warnings(caplog)) == 2
    assert 'mounted at "/other"' in wiring_warnings(caplog)[1]


async def test_a_host_that_strips_its_mount_without_root_path_is_checked_too(caplog: pytest.LogCaptureFixture) -> None:
    from litestar import Litestar

    from starmodel_asgi.contrib.litestar import mount

    sm = StarModel([Gauge], secret_key="k")
    host = Litestar(route_handlers=[mount(sm, "/live")], logging_config=None)  # root_path stays ""
    async with client(host) as c:
        assert (await c.get("/live/gauge", headers=JSON)).status_code == 200
        assert (await c.get("/live/gauge", headers=JSON)).status_code == 200
    (warning,) = wiring_warnings(caplog)
    assert 'StarModel(base_path="/sm") is mounted at "/live"' in warning


async def test_an_app_served_unmounted_says_where_to_mount_it(caplog: pytest.LogCaptureFixture) -> None:
    sm = StarModel([Gauge], secret_key="k")
    async with client(sm) as c:  # the host forgot app.mount("/sm", sm): the browser posts /sm/...
        answer = await c.post("/sm/gauge/increment", headers=DATASTAR)
    assert answer.status_code == 404
    (warning,) = wiring_warnings(caplog)
    assert "served at the root, not mounted" in warning
    assert 'app.mount("/sm", sm)' in warning and 'StarModel(base_path="")' in warning


@pytest.mark.parametrize("host", sorted(HOSTS))
async def test_an_app_mounted_at_its_base_path_logs_no_wiring_warning(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, prefix = HOSTS[host](StarModel([Gauge], secret_key="k"))
    app, _ = HOSTS[host](StarModel([Gauge], base_path=prefix, secret_key="k"))
    async with client(app, f"http://testserver{prefix}") as c:
        assert (await c.post("/gauge/increment?amount=2", headers=DATASTAR)).status_code == 200
        assert (await c.get("/gauge", headers=JSON)).json()["count"] == 2
    assert wiring_warnings(caplog) == []


# -- model_config keys ------------------------------------------------------------------------


def test_a_model_config_key_typo_is_refused_with_the_close_match() -> None:
    class Typo(Entity):
        model_config = {"scop": "global"}  # type: ignore[typeddict-unknown-key]

    with pytest.raises(ValueError, match=r"Typo: model_config has no key \"scop\": did you mean 'scope'\?"):
        StarModel([Typo], secret_key="k")


def test_an_unknown_model_config_key_lists_the_keys_taken() -> None:
    class Stray(Entity):
        model_config = {"colour": "red"}  # type: ignore[typeddict-unknown-key]

    taken = r'no key "colour" \(it takes aggregates, client_writable, indexes, name, presence, scope'
    with pytest.raises(ValueError, match=taken):
        StarModel([Stray], secret_key="k")


async def test_pydantic_config_keys_stay_allowed() -> None:
    class Tidy(Entity):
        model_config = {"scope": "global", "str_strip_whitespace": True, "title": "Tidy"}
        label: str = ""

        @event
        def rename(self, label: str) -> None:
            self.label = label

    async with client(StarModel([Tidy], base_path="", secret_key="k")) as c:
        await c.post("/tidy/rename", params={"label": "  lamp  "}, headers=JSON)
        assert (await c.get("/tidy", headers=JSON)).json() == {"label": "lamp"}


# -- entities= ---------------------------------------------------------------------------------


async def test_entities_takes_one_class() -> None:
    sm = StarModel(entities=Gauge, base_path="", secret_key="k")
    async with client(sm) as c:
        assert (await c.post("/gauge/increment", headers=JSON)).json()["count"] == 1


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (42, "StarModel(entities=...) takes Entity classes, as a list or one class: not 42"),
        ("Gauge", "not 'Gauge'"),
        (Gauge(), "takes classes: give Gauge, not an instance"),
        ([Gauge, Gauge()], "takes classes: give Gauge, not an instance"),
        ([dict], "takes Entity subclasses, not <class 'dict'>"),
    ],
)
def test_entities_says_what_it_wants(given: Any, says: str) -> None:
    with pytest.raises(TypeError) as raised:
        StarModel(entities=given, secret_key="k")
    assert says in str(raised.value)


# -- a method without @event -----------------------------------------------------------------


async def test_posting_to_a_method_without_event_logs_the_fix_once(caplog: pytest.LogCaptureFixture) -> None:
    sm = StarModel([Gauge], base_path="", secret_key="k")
    async with client(sm) as c:
        for _ in range(2):
            answer = await c.post("/gauge/lower", headers=JSON)
            assert answer.status_code == 404
            assert answer.json()["error"] == "gauge has no event 'lower'"  # the client learns nothing more
        assert (await c.post("/gauge/public_state", headers=JSON)).status_code == 404  # Entity's own: no hint
        assert (await c.post("/gauge/nothing", headers=JSON)).status_code == 404
    assert wiring_warnings(caplog) == [
        "Gauge.lower is called as an action but is not an event: add @event above def lower"
    ]


def test_sm_action_on_a_method_without_event_says_to_add_it() -> None:
    sm = StarModel([Gauge], secret_key="k")
    with pytest.raises(TypeError, match=r"sm.action\(Gauge.lower\): Gauge.lower is not an event: add @event above"):
        sm.action(Gauge.lower, amount=2)  # type: ignore[arg-type]


# -- an entity no app serves -------------------------------------------------------------------


def test_an_action_for_an_entity_no_app_serves_fails_when_the_page_renders() -> None:
    StarModel([Gauge], secret_key="k")
    expected = r"no StarModel serves Orphan.*add it to StarModel\(entities=\[\.\.\., Orphan\]\)"
    with pytest.raises(LookupError, match=expected):
        f'<button data-on:click="{Orphan.see()}">'  # the page renders it
    with pytest.raises(LookupError, match=expected):
        str(Orphan.see)
    with pytest.raises(LookupError, match=expected):
        Orphan.holder()
    assert Gauge.increment(amount=2) == "@post('/sm/gauge/increment?amount=2')"  # a served one still builds
