"""Entity settings, action builders and signal references, as a page author uses them."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starmodel_asgi import Entity, ServerOnly, StarModel, event
from starmodel_asgi.spec import spec_of
from tests.support.entities import ENTITIES, Counter, TodoList


class Task(Entity):
    model_config = {"scope": "record", "name": "task"}
    title: str = ""

    @event
    def rename(self, title: str) -> None:
        self.title = title


class HTTPServerStatus(Entity):
    model_config = {"scope": "global"}
    up: bool = True

    @event(method="delete", path="down")
    def shut_down(self, force: bool = False) -> None:
        self.up = False


@pytest.fixture(autouse=True)
def registered() -> None:
    StarModel(entities=[*ENTITIES, Task, HTTPServerStatus], base_path="/sm", secret_key="k")


def test_settings_come_from_model_config() -> None:
    assert spec_of(HTTPServerStatus).scope == "global"
    assert spec_of(Counter).scope == "session" and spec_of(Counter).store == "memory"
    assert spec_of(Task).name == "task"


def test_default_name_is_snake_case() -> None:
    assert spec_of(TodoList).name == "todo_list"
    assert spec_of(HTTPServerStatus).name == "http_server_status"


def test_class_call_builds_the_datastar_action() -> None:
    assert Counter.increment(amount=1) == "@post('/sm/counter/increment?amount=1')"
    assert Counter.increment() == "@post('/sm/counter/increment')"
    assert Counter.peek(amount=2) == "@get('/sm/counter/peek?amount=2')"
    assert Counter.set_count(value=3) == "@put('/sm/counter/set-count?value=3')"
    assert HTTPServerStatus.shut_down(force=True) == "@delete('/sm/http_server_status/down?force=true')"


def test_action_values_are_url_encoded_so_they_cannot_break_out_of_the_js_string() -> None:
    action = Counter.greet(name="a'b c&d")
    assert action == "@post('/sm/counter/greet?name=a%27b+c%26d')"
    assert Counter.tag(tags=["x", "y"]) == "@post('/sm/counter/tag?tags=x&tags=y')"


def test_record_actions_need_the_id() -> None:
    assert Task.rename(id="t1", title="x") == "@post('/sm/task/t1/rename?title=x')"
    assert Task.rename(id="x');alert(1);('") == "@post('/sm/task/x%27%29%3Balert%281%29%3B%28%27/rename')"
    with pytest.raises(TypeError):
        Task.rename(title="x")


def test_an_id_given_to_an_action_that_takes_none_is_named_not_dropped() -> None:
    with pytest.raises(TypeError, match=r'Counter.increment acts on one instance per session \(scope="session"\)'):
        Counter.increment(id="x", amount=1)
    assert Counter.increment(amount=1) == "@post('/sm/counter/increment?amount=1')"


def test_base_path_follows_the_app() -> None:
    StarModel(entities=[Counter], base_path="/apps/live/", secret_key="k")
    assert Counter.increment() == "@post('/apps/live/counter/increment')"
    assert Counter.increment.url(amount=2) == "/apps/live/counter/increment?amount=2"


def test_events_still_run_as_methods_on_instances() -> None:
    c = Counter()
    c.increment(amount=4)
    assert c.count == 4


def test_signal_references() -> None:
    assert Counter.signal.count == "$counter.count"
    assert Counter.signal.count.path == "counter.count"
    assert TodoList.signal("items") == "$todo_list.items"
    with pytest.raises(AttributeError):
        Counter.signal.secret  # server-only fields have no signal  # noqa: B018
    with pytest.raises(AttributeError):
        Counter.signal.missing  # noqa: B018


def test_holder_renders_the_initial_signals_and_a_sync() -> None:
    html = Counter.holder(Counter(count=3))
    assert "data-signals='" in html and "data-init=\"@get('/sm/counter')\"" in html
    raw = html.split("data-signals='")[1].split("'")[0].replace("&quot;", '"')
    assert json.loads(raw) == {"counter": {"count": 3, "step": 1, "note": "", "tags": []}}
    assert "s3cret" not in html
    assert "/sm/counter/live" in Counter.holder(sync="live")
    assert "data-init" not in Counter.holder(sync=None)


def test_record_holder_syncs_its_own_record() -> None:
    html = Task.holder(Task(id="t 1", title="x"), sync="live")
    assert "data-init=\"@get('/sm/task/t%201/live')\"" in html
    with pytest.raises(TypeError):
        Task.holder(sync="get")
    assert "data-init" not in Task.holder(sync=None)


def test_bad_settings_are_refused_at_registration() -> None:
    class Wrong(Entity):
        model_config = {"scope": "planet"}

    with pytest.raises(ValueError, match="scope"):
        StarModel(entities=[Wrong], secret_key="k")

    class WrongStore(Entity):
        model_config = {"store": "floppy"}

    with pytest.raises(ValueError, match="store"):
        StarModel(entities=[WrongStore], secret_key="k")

    with pytest.raises(ValueError, match="two entities"):
        StarModel(entities=[Counter, Counter], secret_key="k")

    with pytest.raises(ValueError, match="method"):
        event(method="FETCH")


def test_two_events_on_one_path_are_refused_at_build_and_a_subclass_may_replace_one() -> None:
    class Twice(Entity):
        model_config = {"scope": "global"}
        n: int = 0

        @event(path="go")
        def a(self) -> None:
            self.n += 1

        @event(path="go")
        def b(self) -> None:
            self.n += 100

    with pytest.raises(ValueError, match=r"Twice.a and Twice.b both answer at path 'go': give one of them another"):
        StarModel(entities=[Twice], secret_key="k")

    class Base(Entity):
        @event
        def go(self) -> None: ...

    class Sub(Base):
        @event
        def go(self) -> None: ...

    assert list(spec_of(Sub).events) == ["go"]


def test_a_record_entity_redeclaring_its_id_is_refused_at_build() -> None:
    class Numbered(Entity):
        model_config = {"scope": "record"}
        id: int = 0  # type: ignore[assignment]

    with pytest.raises(ValueError, match=r"Numbered: id is the key StarModel gives each instance \(text\)"):
        StarModel(entities=[Numbered], secret_key="k")


def test_an_event_path_of_two_segments_is_named_as_such() -> None:
    class Deep(Entity):
        @event(path="a/b")
        def go(self) -> None: ...

    with pytest.raises(ValueError, match=r"Deep.go: event path 'a/b' must be one non-empty URL segment \(no '/'\)"):
        StarModel(entities=[Deep], secret_key="k")


class Plain(Entity):
    count: int = 0
    title: str = ""
    done: bool = False
    note: str | None = None
    secret: Annotated[str, ServerOnly] = "hidden"


class Unvalidated(Entity):
    model_config = {"validate_assignment": False}
    count: int = 0


class Nested(Entity):
    count: int = 0
    tags: list[str] = []


@given(st.integers(), st.text(), st.booleans(), st.none() | st.text())
def test_a_plain_entitys_public_state_is_read_off_the_instance_as_pydantic_would_dump_it(
    count: int, title: str, done: bool, note: str | None
) -> None:
    StarModel(entities=[Plain, Unvalidated, Nested], secret_key="k")
    assert spec_of(Plain).plain_shown == ("count", "title", "done", "note")  # ServerOnly left out
    assert spec_of(Unvalidated).plain_shown is None and spec_of(Nested).plain_shown is None
    instance = Plain(id="p")
    instance.count, instance.title, instance.done, instance.note = count, title, done, note
    expected = instance.model_dump(mode="json", include={"count", "title", "done", "note"})
    assert instance.public_state() == expected
    assert list(instance.public_state()) == list(expected)  # in the fields' order
    instance.count = "7"  # type: ignore[assignment]  # validated on assignment: what is kept is an int
    assert instance.public_state()["count"] == 7
