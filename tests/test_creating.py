"""Creating records, on a store kept in memory and on SQLite: fields without defaults (given by
the page, the code or ``on_create``; a create that leaves one out is a 422 naming it), misspelt
fields and ids that are the entity's own paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from pydantic import Field

from starmodel_asgi import ClientWritable, Entity, EventRequest, ServerOnly, StarModel, event
from starmodel_asgi.stores.sql import SQLStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR, JSON
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio


def make_task(store: str) -> type[Entity]:
    class Task(Entity):
        model_config = {"scope": "record", "store": store}
        title: Annotated[str, ClientWritable, Field(min_length=1)]
        owner: Annotated[str, ServerOnly]
        done: bool = False

        def on_create(self, request: EventRequest | None) -> None:
            if "owner" not in self.__dict__:  # code may give the owner; a page never can
                self.owner = "page" if request is not None else "code"

        @event
        def toggle(self) -> None:
            self.done = not self.done

    return Task


class Ticket(Entity):
    model_config = {"scope": "record"}
    subject: Annotated[str, ClientWritable]
    assignee: str  # nothing sets it but the code


@pytest.fixture(params=["memory", "sqlite"])
async def sm(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StarModel]:
    stores: dict[str, Any] = {}
    if request.param == "sqlite":
        stores["sql"] = SQLStore(f"sqlite+aiosqlite:///{tmp_path / 'required.db'}")
    task = make_task("sql" if request.param == "sqlite" else "memory")
    app = StarModel(entities=[task, Ticket], secret_key="k", base_path="", stores=stores)
    yield app
    await app.aclose()


def task_entity(sm: StarModel) -> type[Any]:
    return sm.entities["task"]


def client(sm: StarModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver")


async def test_a_page_creates_a_record_whose_required_field_it_writes(sm: StarModel) -> None:
    async with client(sm) as c:
        response = await c.post("/task", json={"task": {"title": "write"}}, headers=DATASTAR)
        assert response.status_code == 200
        state = merged_signals(parse_sse(response.text))["task"]
        assert state["title"] == "write" and state["done"] is False and "owner" not in state
        form = await c.post("/task", data={"title": "from a form"}, headers=JSON)
        assert form.status_code == 201 and form.json()["title"] == "from a form"
        toggled = await c.post(f"/task/{state['id']}/toggle", headers=JSON)
        assert toggled.json() == {"id": state["id"], "title": "write", "done": True}
    stored = await sm.get(task_entity(sm), state["id"])
    assert (stored.title, stored.owner, stored.done) == ("write", "page", True)


async def test_on_create_gives_what_the_page_cannot_and_the_code_may_give_it_instead(sm: StarModel) -> None:
    task = task_entity(sm)
    by_code = await sm.create(task, title="planned")
    assert by_code.owner == "code"
    chosen = await sm.create(task, title="handed over", owner="bob")
    assert (await sm.get(task, chosen.id)).owner == "bob"


async def test_a_required_field_left_out_is_a_422_naming_it(sm: StarModel) -> None:
    async with client(sm) as c:
        for body in ({}, {"task": {}}, {"task": {"title": ""}}):
            response = await c.post("/task", json=body, headers=JSON)
            assert response.status_code == 422, body
            assert set(response.json()["errors"]) == {"title"}
        # the page cannot give a server field, and nothing else does
        response = await c.post("/ticket", json={"ticket": {"subject": "s", "assignee": "me"}}, headers=JSON)
        assert response.status_code == 422 and set(response.json()["errors"]) == {"assignee"}
        # a bad value is named; a server field on_create could still set is not the page's to fix
        response = await c.post("/ticket", json={"ticket": {"subject": ["not", "text"]}}, headers=JSON)
        assert response.status_code == 422 and set(response.json()["errors"]) == {"subject"}
        response = await c.post("/ticket", json={}, headers=JSON)
        assert response.status_code == 422 and set(response.json()["errors"]) == {"subject", "assignee"}
        assert (await c.get("/task")).json() == [] and (await c.get("/ticket")).json() == []
    ticket = await sm.create(Ticket, subject="s", assignee="ann")
    assert (await sm.get(Ticket, ticket.id)).assignee == "ann"


def test_an_entity_that_starts_from_its_defaults_must_have_them_at_app_build() -> None:
    class Profile(Entity):
        name: str
        age: int

    with pytest.raises(ValueError, match=r'Profile: a scope="session" entity starts from its defaults; give age, name'):
        StarModel(entities=[Profile], secret_key="k")


async def test_a_misspelt_field_given_to_create_is_named_not_dropped(sm: StarModel) -> None:
    with pytest.raises(TypeError, match=r"Task has no field titel \(its fields: done, id, owner, title\)"):
        await sm.create(sm.entities["task"], titel="typo")
    assert await sm.list(sm.entities["task"]) == []


async def test_an_id_that_is_one_of_the_entitys_paths_is_refused(sm: StarModel) -> None:
    task = sm.entities["task"]
    for taken in ("count", "live"):
        with pytest.raises(Exception, match=rf"'{taken}' is the path of /task/{taken}: choose another id"):
            await sm.create(task, id=taken, title="t")
    assert await sm.count(task) == 0
    assert (await sm.create(task, id="counted", title="t")).id == "counted"
