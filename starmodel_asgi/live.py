"""Live streams: ``GET /{entity}/live``, a long-lived stream of one instance's state, and what
every live stream shares."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Message as ASGIMessage
from starlette.types import Receive, Scope, Send

from starmodel_asgi.broadcast import Broadcast, Payload
from starmodel_asgi.compression import REST
from starmodel_asgi.dispatch import Dispatcher
from starmodel_asgi.elements import rendered
from starmodel_asgi.entity import Entity, entity_class
from starmodel_asgi.errors import EventError
from starmodel_asgi.formatters import Formatter
from starmodel_asgi.logs import LIVE, get_logger, own_task
from starmodel_asgi.presence import Presence
from starmodel_asgi.recent import Recent
from starmodel_asgi.responses import StreamResponse, cancel_on_disconnect
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.values import Element, EventRequest, Update
from starmodel_asgi.wire import DELETED, channel_name

logger = get_logger(LIVE)

#: Asked about each record a stream would send: ``False`` leaves it out (a list) or ends it.
Allowed = Callable[[Entity], Awaitable[bool]]

_serials = itertools.count(1)


class View:
    """What a page sees of an instance at one moment: its public state and rendered HTML. Streams
    that were at the same earlier view send the same bytes: ``sent`` keeps them, by the earlier
    view's serial and the formatter, so a thousand streams format a change once."""

    __slots__ = ("elements", "instance", "sent", "serial", "state")

    def __init__(self, state: dict[str, Any], elements: list[Element], instance: Entity | None = None) -> None:
        self.state, self.elements, self.instance = state, elements, instance
        self.serial = next(_serials)
        self.sent: dict[tuple[int, int], bytes] = {}


KEEPALIVE = b": keepalive\n\n"


@dataclass
class Live:
    """What every live stream of an app shares: where states come from, the broadcast, the
    viewer counts, the keep-alive period and the recent views."""

    dispatcher: Dispatcher
    broadcast: Broadcast
    keepalive: float = 15.0
    views: Views = field(default_factory=lambda: Views())
    presence: Presence | None = None
    streams: dict[str, int] = field(default_factory=dict)  # entity name -> live streams open here
    tickers: dict[asyncio.AbstractEventLoop, Ticker] = field(default_factory=dict)  # while streams are open

    def response(
        self,
        formatter: Formatter,
        spec: EntitySpec,
        key: str,
        allowed: Allowed | None = None,
        viewer: EventRequest | None = None,
    ) -> LiveResponse:
        """``formatter`` must stream (``formatter.streams``); ``allowed`` is asked about each state
        the stream would send (``authorize`` with the record); ``viewer``, for an entity whose
        ``render`` takes one, is who the stream renders for."""
        return LiveResponse(self, formatter, spec, key, allowed, viewer)

    def viewers(self, spec: EntitySpec) -> Presence | None:
        return self.presence if spec.presence else None

    def open_streams(self) -> dict[str, int]:
        """The live streams open in this process, by entity name."""
        return self.streams

    def opened(self, name: str) -> None:
        self.streams[name] = self.streams.get(name, 0) + 1

    def closed(self, name: str) -> None:
        left = self.streams[name] - 1
        if left:
            self.streams[name] = left
        else:
            del self.streams[name]

    def ticker(self) -> Ticker:
        """The keep-alive ticker of the running event loop, made for its first stream."""
        loop = asyncio.get_running_loop()
        ticker = self.tickers.get(loop)
        if ticker is None:
            ticker = self.tickers[loop] = Ticker(self.keepalive, lambda: self.tickers.pop(loop, None))
        return ticker


class Ticker:
    """The keep-alive comments of the live streams open on one event loop, from one task: it
    sleeps until the stream that sent longest ago has been quiet for ``period`` seconds, then has
    it send a comment (in a short task of the stream's, so a client that stopped reading holds
    up no other). The streams are kept in the order they last sent; the task runs while any is
    open, and ``done`` is called when the last one leaves."""

    def __init__(self, period: float, done: Callable[[], object]) -> None:
        self.period, self._done = period, done
        self._streams: dict[LiveStream, None] = {}  # oldest send first
        self._task: asyncio.Task[None] | None = None

    def add(self, stream: LiveStream) -> None:
        self._streams[stream] = None
        if self._task is None:
            self._task = own_task(self._run(), "starmodel-keepalive")

    def sent(self, stream: LiveStream) -> None:
        """``stream`` has just sent: it moves to the back of the line."""
        if stream in self._streams:
            del self._streams[stream]
            self._streams[stream] = None

    def remove(self, stream: LiveStream) -> None:
        self._streams.pop(stream, None)
        if not self._streams and self._task is not None:
            self._task.cancel()
            self._task = None
            self._done()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._streams:
            now = loop.time()
            stream = next(iter(self._streams))
            while now - stream.last_sent >= self.period:  # each stream due now, once
                stream.last_sent = now  # its next one counted from now, whenever this one goes out
                self.sent(stream)
                stream.beat()
                stream = next(iter(self._streams))
            await asyncio.sleep(stream.last_sent + self.period - now)


class LiveStream(StreamResponse):
    """What every live stream does: subscribes before the first read (so no change between the
    read and the first message is lost), sends the first view, then follows the channel, with a
    keep-alive comment whenever nothing was sent for ``keepalive`` seconds (the app's ``Ticker``)
    and, for ``presence`` entities, the number of viewers. Ends when the client goes away,
    releasing its subscription; a reconnecting client starts again from the current state.

    An idle stream holds its own task, waiting for the next message, and one more waiting for the
    client to go away; a keep-alive runs in a task of its own only while it sends."""

    def __init__(self, live: Live, formatter: Formatter, spec: EntitySpec, channel: str) -> None:
        super().__init__(formatter)
        self.live, self.formatter, self.spec, self.channel = live, formatter, spec, channel
        self._sending = asyncio.Lock()  # asyncio's: no cancellation checkpoint when free
        self._clock: Callable[[], float] = time.monotonic  # the event loop's, once the stream runs
        self.last_sent = 0.0  # when it last sent
        self._out: Send | None = None  # where the keep-alive goes, once the stream follows its channel
        self._ticker: Ticker | None = None
        self._scope: anyio.CancelScope | None = None  # ends the stream (the client went away)
        self._beat: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = self.compressed(send)
        started = False
        self._clock = asyncio.get_running_loop().time
        self.last_sent = self._clock()

        async def start(message: ASGIMessage) -> None:
            nonlocal started
            await send(message)
            started = True

        try:
            await self._serve(scope, receive, send, start)
        except anyio.get_cancelled_exc_class():
            # the server is stopping (uvicorn cancels what is still open once its graceful
            # shutdown is over): a normal end, so the response is finished and nothing is logged
            if not started:
                raise
            logger.debug("live stream of %s cancelled by the server: ending it", self.channel)
            with anyio.move_on_after(1, shield=True):
                await send({"type": "http.response.body", "body": b""})

    async def _serve(self, scope: Scope, receive: Receive, send: Send, start: Send) -> None:
        async with self.live.broadcast.subscribe(self.channel) as messages:
            try:
                await self.start()
            except Exception:
                logger.exception("live stream of %s could not read the state", self.channel)
                error = EventError(503, "The state is unavailable; try again", self.spec.name)
                await Response(self.formatter.format_error(error), 503, media_type=self.media_type)(
                    scope, receive, send
                )
                return
            self.live.opened(self.spec.name)
            try:
                presence = self.live.viewers(self.spec)
                if presence is None:
                    await self._run(receive, send, start, messages, None)
                else:
                    async with presence.join(self.channel) as viewers:
                        await self._run(receive, send, start, messages, viewers)
            finally:
                self.live.closed(self.spec.name)

    async def _run(
        self,
        receive: Receive,
        send: Send,
        start: Send,
        messages: AsyncIterator[Payload],
        viewers: AsyncIterator[Payload] | None,
    ) -> None:
        await start({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await self.first(send)
        self._out, self._ticker = send, self.live.ticker()
        loop = asyncio.get_running_loop()
        with anyio.CancelScope() as self._scope:
            tasks = [loop.create_task(cancel_on_disconnect(receive, self._scope))]
            if viewers is not None:
                tasks.append(loop.create_task(self._viewers(send, viewers)))
            for task in tasks:
                task.add_done_callback(self._failed)
            self._ticker.add(self)
            try:
                await self.follow(send, messages)
                # the broadcast closed (shutdown) or the record was deleted: finish the response
                await self._send(send, b"", more=False)
            finally:
                self._scope = None
                self._ticker.remove(self)
                if self._beat is not None:
                    tasks.append(self._beat)
                for task in tasks:
                    task.cancel()
        errors = [error for task in tasks if task.done() and not task.cancelled() and (error := task.exception())]
        if errors:  # a task that failed ended the stream: its error is the stream's
            raise errors[0]

    def _failed(self, task: asyncio.Task[None]) -> None:
        """A task of the stream's that failed ends it (``_run`` raises its error)."""
        if self._scope is not None and not task.cancelled() and task.exception() is not None:
            self._scope.cancel()

    async def start(self) -> None:
        """Read what the first view shows; raising answers 503."""

    async def first(self, send: Send) -> None:
        """Send the first view."""

    async def follow(self, send: Send, messages: AsyncIterator[Payload]) -> None:
        """Send what each message changes; return to end the stream."""

    def beat(self) -> None:
        """Sends a keep-alive comment, in a task of its own (the ticker's call), unless the last
        one is still on its way."""
        if self._out is not None and (self._beat is None or self._beat.done()):
            self._beat = asyncio.get_running_loop().create_task(self._send(self._out, KEEPALIVE, rest=True))
            self._beat.add_done_callback(self._failed)

    async def _viewers(self, send: Send, counts: AsyncIterator[Payload]) -> None:
        async for count in counts:
            update = Update(self.spec.name, {"_viewers": int(count or 0)}, {})
            await self._send(send, self.formatter.format([update]).encode())

    async def _send(self, send: Send, body: bytes, rest: bool = False, more: bool = True) -> None:
        """Sends a piece of the body; ``rest``: the stream falls quiet after it (a compressor may
        let go). The keep-alive and viewers tasks send too: one piece at a time."""
        message: ASGIMessage = {"type": "http.response.body", "body": body, "more_body": more}
        if rest and self.rests and self.encoding is not None:
            message[REST] = True
        async with self._sending:
            await send(message)
            self.last_sent = self._clock()
            if self._ticker is not None:
                self._ticker.sent(self)


class LiveResponse(LiveStream):
    """``GET /{entity}/live``: the current state at once, then each change published for the
    instance.

    A reader that falls behind skips to the newest state (the broadcast keeps one pending message
    per subscriber). When the broadcast says messages may have been missed, the state is re-read
    from the store.
    """

    def __init__(
        self,
        live: Live,
        formatter: Formatter,
        spec: EntitySpec,
        key: str,
        allowed: Allowed | None = None,
        viewer: EventRequest | None = None,
    ) -> None:
        super().__init__(live, formatter, spec, channel_name(spec, key))
        self.key, self.allowed, self.viewer = key, allowed, viewer
        self._state: dict[str, Any] = {}
        self._elements: list[Element] | None = None
        self._view_serial = 0  # the view last pushed (0: none yet)
        self._instance_read: Entity | None = None

    async def start(self) -> None:
        self._instance_read = await self.live.dispatcher.read(self.spec, self.key)

    async def first(self, send: Send) -> None:
        assert self._instance_read is not None
        await self._push(send, self._seen(view_of(self._instance_read, render=self.viewer is None)))
        self._instance_read = None

    async def follow(self, send: Send, messages: AsyncIterator[Payload]) -> None:
        channel = self.channel
        async for message in messages:
            if message == DELETED:  # tell the page, then end: Datastar does not retry a finished stream
                deleted = Update(self.spec.name, {"_deleted": True}, {})
                await self._send(send, self.formatter.format([deleted]).encode())
                return
            view = self.live.views.get(channel, message) if message is not None else None
            if view is None:
                instance = await self._instance(message)
                if instance is None:
                    continue
                view = view_of(instance, render=self.viewer is None)  # shared: rendered once if it can be
                if message is not None:
                    self.live.views.put(channel, message, view)
            if self.allowed is not None and not await self._allowed(view):
                refused = EventError(403, "Forbidden", self.spec.name)  # tell the page, then end
                await self._send(send, self.formatter.format_error(refused).encode())
                return
            await self._push(send, self._seen(view))

    def _seen(self, view: View) -> View:
        """What this stream sends of a shared view: the view itself, or, when ``render`` takes the
        viewer, the same state rendered for this stream's viewer."""
        if self.viewer is None or view.instance is None:
            return view
        return View(view.state, _render(view.instance, self.viewer), view.instance)

    async def _allowed(self, view: View) -> bool:
        """``authorize``'s answer about the state a view shows; one that fails refuses (logged)."""
        assert self.allowed is not None and view.instance is not None
        try:
            return await self.allowed(view.instance)
        except Exception:
            logger.exception("authorize failed for %s %s; ending its live stream", self.spec.name, self.key)
            return False

    async def _instance(self, message: Payload) -> Entity | None:
        """The state a message carries; for ``None`` (or a message that does not parse), the
        state re-read from the store. ``None`` if that read fails: the stream stays open and the
        next message or reconnection brings the state."""
        spec = self.spec
        if message is not None:
            try:
                return entity_class(spec).model_validate_json(message)  # the stored JSON, read as a store read does
            except ValueError:
                logger.exception("unreadable live message for %s %s; re-reading", spec.name, self.key)
        try:
            return await self.live.dispatcher.read(spec, self.key)
        except Exception:
            logger.exception("live stream of %s %s could not re-read the state", spec.name, self.key)
            return None

    async def _push(self, send: Send, view: View) -> None:
        """Sends what changed since the last push: the changed fields and, when it differs,
        the re-rendered HTML. Nothing at all when nothing the page sees changed."""
        key = (self._view_serial, id(self.formatter))
        body = view.sent.get(key)
        if body is None:
            state, elements = view.state, view.elements
            changed = {k: v for k, v in state.items() if k not in self._state or self._state[k] != v}
            new_elements = elements if elements != self._elements else []
            # a field the page types into changes only where the page still holds what this stream sent
            guarded = {k: self._state[k] for k in self.spec.writable & changed.keys() if k in self._state}
            update = Update(self.spec.name, changed, state, new_elements, guarded=guarded, rebase=False)
            body = self.formatter.format([update]).encode() if (changed or new_elements) else b""
            if self._view_serial:  # streams at the same earlier view send the same
                view.sent[key] = body
        self._state, self._elements, self._view_serial = view.state, view.elements, view.serial
        if body:
            await self._send(send, body)


def view_of(instance: Entity, render: bool = True) -> View:
    """What a page sees of an instance: its public state and its rendered HTML (none without
    ``render``: each stream renders it for its viewer)."""
    return View(instance.public_state(), _render(instance) if render else [], instance)


def _render(instance: Entity, viewer: EventRequest | None = None) -> list[Element]:
    try:
        return rendered(instance, viewer)
    except Exception:
        logger.exception("%s.render() failed; pushing signals only", type(instance).__name__)
        return []


class Views:
    """The view each recent message gives, so a thousand streams of one channel parse, validate
    and render a change once, not a thousand times. Bounded by count and bytes (a 100 KB state
    counts about 300 KB): the oldest entries go first."""

    def __init__(self, size: int = 256, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._recent: Recent[tuple[str, str], View] = Recent(size, max_bytes)

    def get(self, channel: str, message: str) -> View | None:
        return self._recent.get((channel, message))

    def put(self, channel: str, message: str, view: View) -> None:
        cost = 3 * len(message) + sum(len(e.html) for e in view.elements)  # parsed state ~3x its JSON
        self._recent.put((channel, message), view, cost)
