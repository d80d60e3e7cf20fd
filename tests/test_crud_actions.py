"""The record routes have action builders: ``Task.create_action(...)`` (``POST /{entity}``) and
``Task.delete_action(id)`` (``DELETE /{entity}/{id}``), prefix-aware like the event builders."""

from __future__ import annotations

from typing import Annotated

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from starmodel_asgi import ClientWritable, Entity, StarModel
from starmodel_asgi.testing import Page
from tests.support.headers import JSON

pytestmark = pytest.mark.anyio


class Task(Entity):
    model_config = {"scope": "record", "name": "crud_task"}
    title: Annotated[str, ClientWritable] = ""
    done: Annotated[bool, ClientWritable] = False
    note: str = ""  # the server's own: no page sets it


class Board(Entity):
    items: int = 0


def test_the_builders_give_the_record_routes_under_the_apps_base_path() -> None:
    StarModel([Task, Board], base_path="/api/v1", secret_key="crud")
    assert Task.create_action() == "@post('/api/v1/crud_task')"
    assert (
        Task.create_action(title="Milk & eggs", done=True) == "@post('/api/v1/crud_task?title=Milk+%26+eggs&done=true')"
    )
    assert Task.delete_action("a/b") == "@delete('/api/v1/crud_task/a%2Fb')"
    assert Task.delete_action("t1").options(headers={"X-Why": "tidy"}) == (
        "@delete('/api/v1/crud_task/t1', {headers: {'X-Why': 'tidy'}})"
    )
    assert Task.delete_action("t1").__html__() == "@delete('/api/v1/crud_task/t1')"  # FastHTML inserts it as is


def test_the_builders_name_what_they_refuse() -> None:
    StarModel([Task, Board], secret_key="crud")
    with pytest.raises(
        TypeError, match=r"cannot set note, titel \(a new record takes its client-writable fields: done, title\)"
    ):
        Task.create_action(titel="x", note="y")
    with pytest.raises(
        TypeError,
        match=r'Board.create_action needs a record entity \(scope="record"\); Board is scope="session"',
    ):
        Board.create_action()
    with pytest.raises(TypeError, match=r"Board.delete_action needs a record entity"):
        Board.delete_action("b1")


@pytest.mark.parametrize("mounted", [False, True], ids=["alone", "mounted at /api"])
async def test_a_page_creates_and_deletes_records_with_the_actions(mounted: bool) -> None:
    sm = StarModel([Task], base_path="/api" if mounted else "/sm", secret_key="crud")
    app = Starlette(routes=[Mount("/api", sm)]) if mounted else sm
    async with Page(app) as page:
        created = await page.run(Task.create_action(title="Milk"))
        assert created.status == 200 and created.signals["crud_task"]["title"] == "Milk"
        typed = await page.run(Task.create_action(), crud_task={"title": "Bread", "done": True})  # a bound input
        milk, bread = created.signals["crud_task"]["id"], typed.signals["crud_task"]["id"]
        assert (typed.signals["crud_task"]["title"], typed.signals["crud_task"]["done"]) == ("Bread", True)

        listed = await page.request("GET", Task.create_action().url, headers=JSON)
        assert [(t["title"], t["done"]) for t in listed.json()] == [("Milk", False), ("Bread", True)]

        deleted = await page.run(Task.delete_action(milk))
        assert deleted.status == 204
        listed = await page.request("GET", Task.create_action().url, headers=JSON)
        assert [t["id"] for t in listed.json()] == [bread]
        assert (await page.run(Task.delete_action(milk))).status == 404  # gone already
