"""Live streams as their users see them: the behaviours mutation testing (issue 19 point 11) found
no test for in ``live.py``: the open-stream counts (``sm.live_streams()``); the 503 of a stream
whose state cannot be read; a message applied as published, one that does not parse re-read from
the store, a failed re-read that keeps the stream open; pushes that carry only what the page sees
changed, guarded where the page types, and what a reader that fell behind skipped; a change
rendered and formatted once for all the streams at one view (per formatter), within the views'
byte bound; keep-alive comments from one task per event loop, for every quiet stream, one at a
time to a stuck client, at no CPU cost between them; a failing ``authorize``, ``render`` or side
task; and the ASGI messages of a stream the server stops, or whose record is deleted.

In-process (``testing.Page`` over the ``StreamingTransport``, or the app called with a server's
ASGI messages): the same ``LiveStream`` code a real server runs, on the test's event loop.

Equivalent mutants of ``live.py`` (no behaviour a user can see changes), one line each:

- ``LiveStream.__call__`` 3: ``started = None`` is falsy like ``False``.
- ``LiveStream.__init__`` 4, 5, 6: the clock and ``last_sent`` are set again when the stream runs;
  7, 9: ``_out`` and ``_scope`` are set before any task that reads them exists.
- ``LiveResponse.__init__`` 15: no element list equals ``""`` any more than ``None``; 16: ``None``
  is falsy like ``0``; 17: the first view is the stream's own, so the body it keeps under serial 1
  is read by no other stream; 18: ``start`` sets ``_instance_read`` before it is read.
- ``LiveResponse.first`` 12: ``""`` lets go of the instance as ``None`` does.
- ``Ticker.add`` 1, ``Ticker.sent`` 2: the values of the ticker's ordered dict are never read.
- ``Ticker._run`` 7: ``>`` for ``>=`` between two readings of a float clock.
- ``Ticker.remove`` 7: the ticker is dropped (``done``) as its task is, so the next stream makes a new one.
- ``Live.ticker`` 10-13: a ticker not dropped when its last stream leaves is reused by the loop's
  next stream (its task starts again): the same comments; one small object kept per event loop.
- ``LiveStream._run`` 41: no task runs between ``_scope = ""`` and the tasks' cancellation, and a
  cancelled task's callback stops at ``task.cancelled()`` before it reads the scope.
- ``LiveResponse._allowed`` 1: a looser ``assert``: it is only asked with ``allowed`` set, about a
  view that has its instance.
- ``LiveResponse.follow`` 20: ``views.get`` for a ``None`` message finds nothing, as no view is
  kept for one.
- ``LiveStream._serve`` 9, 15, ``LiveResponse.follow`` 49, 55: a live stream's formatter is the
  streaming one (Datastar's unless the app brings its own), whose error body is the message alone:
  the status of the ``EventError`` (the 503 response's own status is written separately) goes nowhere.
- ``view_of`` 1 (``render`` defaults to ``False``): every call passes ``render``; ``Views.__init__`` 1:
  one view more (257) in the shared cache, still bounded by its bytes.
- ``LiveStream._viewers`` 4: the streaming formatter writes the changed fields, never ``state``;
  12: presence yields each count as ``str(total)``, never empty, so ``or 1`` never applies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Annotated, Any, ClassVar

import anyio
import pytest

from starmodel_asgi import ClientWritable, Entity, StarModel, event
from starmodel_asgi.formatters import DatastarFormatter, JSONFormatter
from starmodel_asgi.live import View, Views
from starmodel_asgi.spec import GLOBAL_KEY
from starmodel_asgi.testing import Page
from starmodel_asgi.values import Element, Update
from starmodel_asgi.wire import channel_name
from tests.support.asgi import http_scope

pytestmark = pytest.mark.anyio


class Gauge(Entity):
    model_config = {"scope": "global", "name": "mlgauge"}
    level: int = 0
    label: str = ""
    hidden_note: str = ""

    @event
    def set(self, level: int) -> None:
        self.level = level

    @event
    def name(self, label: str) -> None:
        self.label = label

    def render(self) -> str:
        return f'<div id="mlgauge">level {self.level}</div>'


class Tile(Entity):
    model_config = {"scope": "global", "name": "mltile"}
    n: int = 0


def build(**settings: Any) -> StarModel:
    return StarModel([Gauge, Tile], secret_key="mutants-live", **{"keepalive": 30.0, **settings})


async def store_state(sm: StarModel, entity: type[Entity], state: dict[str, Any]) -> None:
    """Writes ``state`` as the stored state of ``entity``'s global instance, publishing nothing (as
    another process, or an older version of the app, may have left it)."""
    spec = sm.spec(entity)
    async with sm.store_for(spec).hold(spec, GLOBAL_KEY) as slot:
        await slot.save(state)


# -- open streams: ``sm.live_streams()``


async def test_live_streams_counts_each_open_stream_by_entity_until_it_closes() -> None:
    """Catches a count not raised per stream, not lowered when one closes, or left at zero."""
    sm = build()
    async with Page(sm) as page:
        assert sm.live_streams() == {}
        async with page.live("/sm/mlgauge/live") as one:
            await one.next()
            assert sm.live_streams() == {"mlgauge": 1}
            async with page.live("/sm/mlgauge/live") as two, page.live("/sm/mltile/live") as tile:
                await two.next()
                await tile.next()
                assert sm.live_streams() == {"mlgauge": 2, "mltile": 1}
            await wait_for(lambda: sm.live_streams() == {"mlgauge": 1})
        await wait_for(lambda: sm.live_streams() == {})


async def wait_for(condition: Any, timeout: float = 5) -> None:
    """The server side of a stream ends once the transport told it the client left."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


# -- the state cannot be read


async def test_a_stream_whose_state_cannot_be_read_is_a_503_naming_the_entity_and_counts_no_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches the read's failure let through (a 500 or a hung stream) or the stream counted open."""
    sm = build()
    await store_state(sm, Gauge, {"level": "not a number"})
    async with Page(sm) as page, page.live("/sm/mlgauge/live") as live:
        await live.wait(lambda s: s.ended)
        assert live.status == 503
        assert live.headers["content-type"].startswith("text/event-stream")
        assert live.signals == {"mlgauge": {"_error": "The state is unavailable; try again", "_errors": {}}}
        assert sm.live_streams() == {}
    assert "live stream of sm:mlgauge:global could not read the state" in caplog.messages


# -- messages that do not parse, re-reads that fail


async def test_a_message_that_does_not_parse_re_reads_the_state_from_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches an unreadable message ending the stream, or pushed as is, instead of re-read."""
    sm = build()
    async with Page(sm) as page, page.live("/sm/mlgauge/live") as live:
        await live.wait(lambda s: s.signals.get("mlgauge", {}).get("level") == 0)
        await store_state(sm, Gauge, {"level": 7, "label": "", "hidden_note": ""})
        await sm.broadcast.publish(channel_name(sm.spec(Gauge), GLOBAL_KEY), "{not json")
        await live.wait(lambda s: s.signals["mlgauge"]["level"] == 7)
        await live.wait(lambda s: "level 7<" in s.elements[-1][2])
        assert not live.ended
    assert f"unreadable live message for mlgauge {GLOBAL_KEY}; re-reading" in caplog.messages


async def test_a_message_that_parses_is_pushed_as_published_without_reading_the_store() -> None:
    """Catches each message re-read from the store (a read per change, and a state that is not the
    one published)."""
    sm = build()
    async with Page(sm) as page, page.live("/sm/mlgauge/live") as live:
        await live.wait(lambda s: s.signals.get("mlgauge", {}).get("level") == 0)
        await store_state(sm, Gauge, {"level": 7, "label": "", "hidden_note": ""})  # not published
        published = '{"level": 5, "label": "", "hidden_note": ""}'
        await sm.broadcast.publish(channel_name(sm.spec(Gauge), GLOBAL_KEY), published)
        await live.wait(lambda s: s.signals["mlgauge"]["level"] == 5)
        await live.wait(lambda s: "level 5<" in s.elements[-1][2])
        assert "level 7" not in live.text


async def test_a_re_read_that_fails_keeps_the_stream_open_for_the_next_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches a failed re-read ending the stream, or pushing something, instead of waiting."""
    sm = build()
    channel = channel_name(sm.spec(Gauge), GLOBAL_KEY)
    async with Page(sm) as page, page.live("/sm/mlgauge/live") as live:
        await live.wait(lambda s: s.signals.get("mlgauge", {}).get("level") == 0)
        sent = live.text
        await store_state(sm, Gauge, {"level": "not a number"})
        await sm.broadcast.publish(channel, "{not json")
        await anyio.sleep(0.2)
        assert live.text == sent and not live.ended
        await store_state(sm, Gauge, {"level": 3, "label": "", "hidden_note": ""})
        await sm.broadcast.publish(channel, "{not json either")
        await live.wait(lambda s: s.signals["mlgauge"]["level"] == 3)
    assert f"live stream of mlgauge {GLOBAL_KEY} could not re-read the state" in caplog.messages


# -- what a push carries


async def test_a_push_carries_only_the_changed_fields_and_the_html_only_when_it_changed() -> None:
    """Catches every field pushed each time, the HTML re-sent unchanged, or nothing sent."""
    sm = build()
    async with Page(sm) as page, Page(sm) as writer, page.live("/sm/mlgauge/live") as live:
        first = await live.next()
        assert first.signals == {"mlgauge": {"level": 0, "label": "", "hidden_note": ""}}
        assert first.elements == [("#mlgauge", "outer", '<div id="mlgauge">level 0</div>')]
        await writer.run(Gauge.name(label="north"))  # not in the HTML
        named = await live.next()
        assert named.signals == {"mlgauge": {"label": "north"}}
        assert named.elements == []
        await writer.run(Gauge.set(level=4))
        moved = await live.next()
        assert moved.signals == {"mlgauge": {"level": 4}}
        assert moved.elements == [("#mlgauge", "outer", '<div id="mlgauge">level 4</div>')]


async def test_a_change_the_page_cannot_see_sends_nothing() -> None:
    """Catches an empty patch (or the whole state) pushed for a save that changed nothing."""
    sm = build()
    async with Page(sm) as page, Page(sm) as writer, page.live("/sm/mlgauge/live") as live:
        await live.next()
        await writer.run(Gauge.set(level=0))  # saved and published, the same state
        with pytest.raises(TimeoutError):
            await live.next(timeout=0.3)
        await writer.run(Gauge.set(level=1))
        assert (await live.next()).signals == {"mlgauge": {"level": 1}}


# -- keep-alive comments


async def test_an_idle_stream_costs_no_cpu_between_its_keepalive_comments() -> None:
    """Catches the ticker sleeping too little (spinning) or sending comments early or late."""
    sm = build(keepalive=0.25)
    async with Page(sm) as page, page.live("/sm/mltile/live") as live:
        await live.next()
        cpu, wall = time.process_time(), time.monotonic()
        await anyio.sleep(1.1)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        comments = live.text.count(": keepalive\n\n")
        assert 3 <= comments <= 5, live.text
        assert cpu < 0.5 * wall, f"{cpu:.2f} s of CPU in {wall:.2f} s idle"


# -- authorize, asked about each state a record stream sends


class Card(Entity):
    model_config = {"scope": "record", "name": "mlcard"}
    owner: str = ""
    text: str = ""

    @event
    def write(self, text: str) -> None:
        self.text = text


def judge(request: Any, entity: type[Entity], event: str | None, record: Any) -> bool:
    """A buggy ``authorize``: it fails on a text it does not expect."""
    if record is not None and record.text == "boom":
        raise KeyError("boom")
    return True


async def test_an_authorize_that_fails_on_a_record_streams_state_refuses_it_and_ends_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches a failing ``authorize`` ending the stream unannounced, or letting the state through."""
    sm = StarModel([Card], secret_key="mutants-live", authorize=judge, keepalive=30.0)
    card = await sm.create(Card, owner="ann")
    async with Page(sm) as page, Page(sm) as writer, page.live(f"/sm/mlcard/{card.id}/live") as live:
        await live.wait(lambda s: s.signals.get("mlcard", {}).get("owner") == "ann")
        await writer.run(f"@post('/sm/mlcard/{card.id}/write')", text="fine")
        await live.wait(lambda s: s.signals["mlcard"].get("text") == "fine")
        async with sm.edit(Card, card.id) as record:
            record.text = "boom"
        await live.wait(lambda s: s.signals["mlcard"].get("_error") == "Forbidden")
        await live.wait(lambda s: s.ended)
        assert "boom" not in live.text.replace('"_error":"Forbidden"', "")
    assert f"authorize failed for mlcard {card.id}; ending its live stream" in caplog.messages


async def test_every_quiet_stream_gets_its_comments_and_a_stream_opened_after_all_closed_gets_them_too() -> None:
    """Catches the ticker serving only the stream at the head of its line, stopping when one of
    several streams leaves, or not starting again once every stream had left."""
    sm = build(keepalive=0.2)
    async with Page(sm) as page:
        async with page.live("/sm/mltile/live") as first:
            await first.next()
            await anyio.sleep(0.1)
            async with page.live("/sm/mlgauge/live") as second:
                await second.next()
                await anyio.sleep(1.0)
                assert 2 <= second.text.count(": keepalive\n\n") <= 6, second.text
            assert 3 <= first.text.count(": keepalive\n\n") <= 7, first.text
            await wait_for(lambda: sm.live_streams() == {"mltile": 1})
            sent = first.text.count(": keepalive\n\n")
            await first.wait(lambda s: s.text.count(": keepalive\n\n") >= sent + 2, timeout=2)
        await wait_for(lambda: sm.live_streams() == {})
        await anyio.sleep(0.5)  # past the period: a ticker left running would have ended by now
        async with page.live("/sm/mltile/live") as again:
            await again.wait(lambda s: s.text.count(": keepalive\n\n") >= 2, timeout=2)


def keepalive_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "starmodel-keepalive" and not t.done()]


async def test_one_named_keepalive_task_serves_every_stream_of_the_event_loop_while_any_is_open() -> None:
    """Catches a ticker (a task) per stream, or one that outlives the streams."""
    sm = build(keepalive=0.2)
    async with Page(sm) as page:
        await wait_for(lambda: keepalive_tasks() == [])  # none left over on this loop
        async with page.live("/sm/mltile/live") as one, page.live("/sm/mlgauge/live") as two:
            await one.next()
            await two.next()
            assert len(keepalive_tasks()) == 1
        await wait_for(lambda: sm.live_streams() == {})
        await wait_for(lambda: keepalive_tasks() == [])


async def test_a_client_that_reads_nothing_has_one_keepalive_on_its_way_at_a_time() -> None:
    """Catches a keep-alive started while the last one is still stuck: tasks piling up for as long
    as the client hangs."""
    sm = build(keepalive=0.05)
    server = Server(stuck_after=1)  # the first view went out; then nothing moves
    async with anyio.create_task_group() as tg:
        tg.start_soon(sm, live_scope("/sm/mltile/live"), server.receive, server.send)
        await wait_for(lambda: len(server.sent) == 2)
        await anyio.sleep(0.1)
        tasks = len(asyncio.all_tasks())
        await anyio.sleep(0.5)  # ten keep-alive periods
        assert len(asyncio.all_tasks()) <= tasks
        server.left.set()


# -- the views a thousand streams share


class Poster(Entity):
    """Counts its renders, to show a change is rendered once for every stream of its channel."""

    model_config = {"scope": "global", "name": "mlposter"}
    text: str = ""
    renders: ClassVar[list[str]] = []

    @event
    def write(self, text: str) -> None:
        self.text = text

    def render(self) -> str:
        Poster.renders.append(self.text)
        return f'<p id="mlposter">{self.text}</p>'


async def test_a_change_is_parsed_and_rendered_once_for_every_stream_of_its_channel() -> None:
    """Catches the shared views not kept (or kept under another key): each stream rendering again."""
    sm = StarModel([Poster], secret_key="mutants-live", keepalive=30.0)
    Poster.renders.clear()
    async with Page(sm) as writer, Page(sm) as page, AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(page.live("/sm/mlposter/live")) for _ in range(3)]
        for live in streams:
            await live.next()
        first_views = len(Poster.renders)
        await writer.run(Poster.write(text="once"))
        for live in streams:
            await live.wait(lambda s: s.signals["mlposter"]["text"] == "once")
            await live.wait(lambda s: s.elements[-1][2] == '<p id="mlposter">once</p>')
        assert Poster.renders[first_views:].count("once") <= 2  # the event's answer and the streams' one


def test_the_shared_views_count_a_state_three_times_its_json_plus_its_html_and_drop_the_oldest() -> None:
    """Catches a cost estimate that keeps more (or fewer) views than the bound allows."""
    message, html = "x" * 1000, [Element("y" * 2000)]  # each message below is 1001 characters
    views = Views(size=100, max_bytes=3 * 1001 + 3 * 1001 + 2000)  # room for the last two views, not three
    for n in range(3):
        views.put("ch", f"{n}{message}", View({}, html if n != 1 else []))
    assert views.get("ch", f"0{message}") is None
    assert views.get("ch", f"1{message}") is not None and views.get("ch", f"2{message}") is not None
    assert views.get("other", f"2{message}") is None


# -- the ASGI messages of a stream, as a server gets them


def live_scope(path: str) -> dict[str, Any]:
    return http_scope(
        "GET", path, {"host": "testserver", "accept": "text/event-stream", "datastar-request": "true"}, "/sm"
    )


class Server:
    """What a server does with one stream's ASGI messages: keeps them, yields at each send (as a
    socket write may), and tells the app the client left when ``leave`` is set."""

    def __init__(self, stuck_after: int | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.left = anyio.Event()
        self.stuck_after = stuck_after  # body messages after which a send never returns

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        bodies = sum(1 for m in self.sent if m["type"] == "http.response.body")
        if self.stuck_after is not None and bodies >= self.stuck_after:
            await anyio.sleep_forever()
        await anyio.sleep(0)
        if self.sent and self.sent[-1]["type"] == "http.response.body" and not self.sent[-1].get("more_body"):
            raise RuntimeError(f"{message['type']} sent after the response completed")  # as uvicorn says
        self.sent.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def test_a_server_that_stops_mid_stream_gets_the_response_finished_and_nothing_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches the stream raising on the server's cancellation (a traceback at every shutdown), or
    leaving the response unfinished."""
    sm = build()
    server = Server()
    caplog.set_level("DEBUG", logger="starmodel_asgi")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sm, live_scope("/sm/mlgauge/live"), server.receive, server.send)
        await wait_for(lambda: b"level 0" in server.body)
        tg.cancel_scope.cancel()  # what uvicorn does once its graceful shutdown is over
    assert server.sent[0]["type"] == "http.response.start" and server.sent[0]["status"] == 200
    assert server.sent[-1] == {"type": "http.response.body", "body": b""}
    assert f"live stream of sm:mlgauge:{GLOBAL_KEY} cancelled by the server: ending it" in caplog.messages
    assert sm.live_streams() == {}


async def test_a_server_stopping_before_the_stream_started_is_not_answered_for_it() -> None:
    """Catches a body sent on a response that never started (the server's cancellation swallowed)."""
    sm = build()
    server = Server(stuck_after=0)
    with anyio.move_on_after(0.3) as scope:  # the server cancels before any answer went out
        await sm(live_scope("/sm/mlgauge/live"), server.receive, server.send)
    assert scope.cancelled_caught
    assert [m["type"] for m in server.sent] == []


async def test_a_server_stopping_while_a_client_reads_nothing_ends_the_stream_within_a_second() -> None:
    """Catches the final message's wait not bounded (a stuck client holds the shutdown up) or not
    shielded from the cancellation."""
    sm = build()
    server = Server(stuck_after=1)  # the first view went out; then nothing moves
    async with anyio.create_task_group() as tg:
        tg.start_soon(sm, live_scope("/sm/mlgauge/live"), server.receive, server.send)
        await wait_for(lambda: b"level 0" in server.body)
        began = time.monotonic()
        tg.cancel_scope.cancel()
    assert 0.8 <= time.monotonic() - began < 1.8


async def test_a_stream_whose_record_is_deleted_finishes_its_response_after_telling_the_page() -> None:
    """Catches the last message left open (``more_body``) or carrying bytes after ``_deleted``."""
    sm = StarModel([Card], secret_key="mutants-live", keepalive=30.0)
    card = await sm.create(Card, owner="ann")
    server = Server()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sm, live_scope(f"/sm/mlcard/{card.id}/live"), server.receive, server.send)
        await wait_for(lambda: b"ann" in server.body)
        await sm.delete(Card, card.id)
        await wait_for(lambda: server.sent[-1].get("more_body") is False)
    assert server.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert b'"_deleted":true' in server.sent[-2]["body"]
    assert server.body.endswith(b"\n\n")


class Lobby(Entity):
    model_config = {"scope": "global", "name": "mllobby", "presence": True}
    topic: str = ""


class Refusing(Server):
    """A connection that breaks when a body with ``breaks_on`` goes out."""

    def __init__(self, breaks_on: bytes) -> None:
        super().__init__()
        self.breaks_on = breaks_on

    async def send(self, message: dict[str, Any]) -> None:
        if self.breaks_on in message.get("body", b""):
            raise ConnectionResetError("the client's connection broke")
        await super().send(message)


@pytest.mark.parametrize(("path", "breaks_on"), [("/sm/mllobby/live", b"_viewers"), ("/sm/mltile/live", b"keepalive")])
async def test_a_send_that_fails_in_a_side_task_ends_the_stream_with_that_error(path: str, breaks_on: bytes) -> None:
    """Catches a failed side task of the stream's (the viewers count, a keep-alive) left unseen:
    the stream would hang on, holding its subscription and its place in the counts."""
    sm = StarModel([Lobby, Tile], secret_key="mutants-live", keepalive=0.1)
    server = Refusing(breaks_on)
    with anyio.fail_after(5), pytest.raises(ConnectionResetError, match="connection broke"):
        await sm(live_scope(path), server.receive, server.send)
    assert b"datastar-patch-signals" in server.body
    assert sm.live_streams() == {}


class Beacon(Entity):
    """No public state and no HTML: its stream's first view sends nothing."""

    model_config = {"scope": "global", "name": "mlbeacon"}


async def test_a_stream_whose_first_view_is_empty_still_gets_its_keepalives() -> None:
    """Catches a stream that joins the ticker before it ever sent (no time to count quiet from)."""
    sm = StarModel([Beacon], secret_key="mutants-live", keepalive=0.1)
    async with Page(sm) as page, page.live("/sm/mlbeacon/live") as live:
        await live.wait(lambda s: s.text.count(": keepalive\n\n") >= 2, timeout=2)
        assert live.events == []


class Gated(Server):
    """A client that stops reading while ``open`` is clear."""

    def __init__(self) -> None:
        super().__init__()
        self.open = anyio.Event()
        self.open.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.open.wait()
        await super().send(message)


async def test_a_reader_that_fell_behind_gets_every_change_it_skipped_not_a_faster_readers_diff() -> None:
    """Catches the bytes streams share keyed wrongly: a slow stream that skipped a state must send
    what changed since the state it last sent, not since the one a faster stream last sent."""
    sm = build()
    slow, fast = Gated(), Server()
    path = "/sm/mlgauge/live"
    async with anyio.create_task_group() as tg:
        tg.start_soon(sm, live_scope(path), slow.receive, slow.send)
        tg.start_soon(sm, live_scope(path), fast.receive, fast.send)
        await wait_for(lambda: b"level 0" in slow.body and b"level 0" in fast.body)
        slow.open = anyio.Event()  # the slow client stops reading
        async with sm.edit(Gauge) as gauge:
            gauge.level = 1
        await wait_for(lambda: b"level 1" in fast.body)
        async with sm.edit(Gauge) as gauge:
            gauge.label = "north"
        await wait_for(lambda: b"north" in fast.body)
        async with sm.edit(Gauge) as gauge:
            gauge.hidden_note = "n"
        await wait_for(lambda: b'"hidden_note":"n"' in fast.body)
        slow.open.set()
        await wait_for(lambda: b'"hidden_note":"n"' in slow.body)
        assert b'"label":"north"' in slow.body
        slow.left.set()
        fast.left.set()


class CountingFormatter(DatastarFormatter):
    """Datastar's own, counting the bodies it formats."""

    def __init__(self) -> None:
        self.formatted = 0

    def format(self, updates: Sequence[Update]) -> str:
        self.formatted += 1
        return super().format(updates)


async def test_streams_at_the_same_view_format_the_next_change_once() -> None:
    """Catches the bytes streams share not kept (or not found): a thousand streams formatting one
    change a thousand times."""
    formatter = CountingFormatter()
    sm = StarModel([Gauge], secret_key="mutants-live", keepalive=30.0, formatters=[formatter, JSONFormatter()])
    servers = [Server() for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for server in servers:
            tg.start_soon(sm, live_scope("/sm/mlgauge/live"), server.receive, server.send)
        await wait_for(lambda: all(b"level 0" in s.body for s in servers))
        async with sm.edit(Gauge) as gauge:
            gauge.level = 1  # each stream came from a first view of its own: three diffs
        await wait_for(lambda: all(b"level 1" in s.body for s in servers))
        before = formatter.formatted
        async with sm.edit(Gauge) as gauge:
            gauge.level = 2  # all at the same view now
        await wait_for(lambda: all(b"level 2" in s.body for s in servers))
        assert formatter.formatted - before == 1
        for server in servers:
            server.left.set()


class Flaky(Entity):
    model_config = {"scope": "global", "name": "mlflaky"}
    text: str = ""

    def render(self) -> str:
        if self.text == "boom":
            raise ValueError("no HTML for boom")
        return f'<p id="mlflaky">{self.text}</p>'


async def test_a_render_that_fails_pushes_the_signals_alone_and_logs_which_entity_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches a failing ``render`` ending the stream, or logged without naming its entity."""
    sm = StarModel([Flaky], secret_key="mutants-live", keepalive=30.0)
    async with Page(sm) as page, page.live("/sm/mlflaky/live") as live:
        assert (await live.next()).elements == [("#mlflaky", "outer", '<p id="mlflaky"></p>')]
        async with sm.edit(Flaky) as flaky:
            flaky.text = "boom"
        boom = await live.next()
        assert boom.signals == {"mlflaky": {"text": "boom"}} and boom.elements == []
        async with sm.edit(Flaky) as flaky:
            flaky.text = "fine"
        assert (await live.next()).elements == [("#mlflaky", "outer", '<p id="mlflaky">fine</p>')]
    assert "Flaky.render() failed; pushing signals only" in caplog.messages


class Memo(Entity):
    model_config = {"scope": "global", "name": "mlmemo"}
    draft: Annotated[str, ClientWritable] = ""
    n: int = 0


async def test_a_pushed_field_the_page_types_into_lands_only_where_the_page_still_holds_what_was_sent() -> None:
    """Catches the guard left off a client-writable field (a push overwrites what the user is
    typing) or put on a field no one types into."""
    sm = StarModel([Memo], secret_key="mutants-live", keepalive=30.0)
    async with Page(sm) as page, page.live("/sm/mlmemo/live") as live:
        await live.next()
        async with sm.edit(Memo) as memo:
            memo.draft, memo.n = "one", 1
        pushed = await live.next()
        assert pushed.text.startswith('event: datastar-patch-signals\ndata: signals {"mlmemo":{"n":1}}\n\n')
        assert 'data-starmodel-guard="{&quot;mlmemo&quot;:{&quot;draft&quot;:[&quot;&quot;,&quot;one&quot;]}}"' in (
            pushed.text
        )
        # a page that typed on since keeps what it typed (a stream does not know what the page sent)
        assert "? next : now)($mlmemo.draft, &quot;&quot;, &quot;one&quot;)" in pushed.text
        async with sm.edit(Memo) as memo:
            memo.draft = "two"
        assert "[&quot;one&quot;,&quot;two&quot;]" in (await live.next()).text
        assert page.signals["mlmemo"] == {"draft": "two", "n": 1}


class Marked(DatastarFormatter):
    """A second streaming formatter, for requests that say ``X-Marked: 1``: Datastar's events
    after a comment line of its own."""

    def matches(self, request: Any) -> bool:
        return bool(request.headers.get("x-marked") == "1")

    def format(self, updates: Sequence[Update]) -> str:
        return ": marked\n\n" + super().format(updates)


async def test_streams_of_two_formatters_at_the_same_view_each_send_their_own_format() -> None:
    """Catches the bytes streams share kept without their formatter: one format sent to the other's
    clients."""
    sm = StarModel([Gauge], secret_key="mutants-live", keepalive=30.0, formatters=[Marked(), DatastarFormatter()])
    marked, plain = Server(), Server()
    marked_scope = live_scope("/sm/mlgauge/live")
    marked_scope["headers"] = [*marked_scope["headers"], (b"x-marked", b"1")]
    async with anyio.create_task_group() as tg:
        tg.start_soon(sm, marked_scope, marked.receive, marked.send)
        tg.start_soon(sm, live_scope("/sm/mlgauge/live"), plain.receive, plain.send)
        await wait_for(lambda: b"level 0" in marked.body and b"level 0" in plain.body)
        for level in (1, 2):  # after the first change both are at the same view
            async with sm.edit(Gauge) as gauge:
                gauge.level = level
            shown = f"level {level}".encode()
            await wait_for(lambda shown=shown: shown in marked.body and shown in plain.body)
        assert marked.body.count(b": marked\n\n") == 3
        assert b": marked" not in plain.body
        same = '{"level": 2, "label": "", "hidden_note": ""}'  # the state as it is: nothing to send
        await sm.broadcast.publish(channel_name(sm.spec(Gauge), GLOBAL_KEY), same)
        await anyio.sleep(0.2)  # taken before the next change (a pending message would be replaced)
        async with sm.edit(Gauge) as gauge:
            gauge.level = 3
        await wait_for(lambda: b"level 3" in marked.body)
        assert marked.body.count(b": marked\n\n") == 4
        assert all(chunk.startswith(b"event: datastar-patch-") for chunk in plain.body.split(b"\n\n") if chunk)
        marked.left.set()
        plain.left.set()
