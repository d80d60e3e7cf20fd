"""Answers: the format chosen per request, and responses whose bodies are sent piece by piece."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, TypeVar

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from starmodel_asgi.compression import MIN_SIZE, Compression, compressing
from starmodel_asgi.errors import EventError, internal_error
from starmodel_asgi.formatters import DatastarFormatter, Formatter
from starmodel_asgi.logs import EVENTS, get_logger
from starmodel_asgi.values import EventRequest, Update

logger = get_logger(EVENTS)

StreamResponseT = TypeVar("StreamResponseT", bound="StreamResponse")


class StreamResponse(Response):
    """A response whose body is sent by ``__call__`` piece by piece (no Content-Length),
    compressed and flushed piece by piece when ``encoding`` is set."""

    encoding: str | None = None
    #: the client decodes a compressed body of several frames, so a quiet stream may end its
    #: frame and free its encoder: a browser (its fetches say ``Sec-Fetch-Mode``). httpx and
    #: urllib3 fail on a frame that ends where a read does, so other clients keep one frame.
    rests: bool = False

    def __init__(self, formatter: Formatter) -> None:
        super().__init__(None, 200, formatter.headers, formatter.media_type)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    def compressed(self, send: Send) -> Send:
        return compressing(send, self.encoding) if self.encoding else send


class ReadyResponse(Response):
    """A whole answer, its body and headers ready (Starlette's ``Response`` rebuilds its header
    list on every call)."""

    def __init__(self, body: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.body, self.status_code, self.background = body, status, None
        self.raw_headers = [*headers, (b"content-length", str(len(body)).encode("latin-1"))]


class UpdatesResponse(StreamResponse):
    """Streams updates as the dispatcher produces them, in the request's own task (so the
    instance lock is taken and released by one task).

    ``send_timeout``: how long the client may take to accept each piece. A client that stops
    reading no longer holds everyone else up: an event that holds its instance runs to its end
    (and commits) without it; a background event (``until_disconnect``) is cancelled, as when the
    client goes away. Either way its connection is dropped."""

    def __init__(
        self,
        formatter: Formatter,
        first: list[Update],
        rest: AsyncGenerator[Update, None],
        *,
        until_disconnect: bool = False,
        send_timeout: float | None = None,
    ) -> None:
        super().__init__(formatter)
        self.formatter, self.first, self.rest = formatter, first, rest
        self.until_disconnect, self.send_timeout = until_disconnect, send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = self.compressed(send)
        if not self.until_disconnect:
            await self._send_all(send)
            return
        async with anyio.create_task_group() as tg:  # the caller went away: the event is cancelled
            tg.start_soon(cancel_on_disconnect, receive, tg.cancel_scope)
            await self._send_all(send)
            tg.cancel_scope.cancel()

    async def _send_all(self, send: Send) -> None:
        try:
            reading = await self._stream(send)
            if reading:  # else left unfinished: the server drops the connection
                await send({"type": "http.response.body", "body": b""})
        finally:
            if self.background is not None:  # uploads are closed however the answer ended
                with anyio.CancelScope(shield=True):
                    await self.background()

    async def _stream(self, send: Send) -> bool:
        """Sends each update as it comes; whether the client kept reading."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        fmt = self.formatter
        async with aclosing(self.rest) as rest:  # closing a background event cancels it
            reading = await self._send(send, fmt.format(self.first).encode())
            try:
                async for update in rest:
                    if reading:
                        reading = await self._send(send, fmt.format([update]).encode())
                    elif self.until_disconnect:
                        break
            except Exception as exc:
                error = internal_error(exc, "streaming an event answer", self.first[0].entity if self.first else None)
                undo = (
                    [Update(error.entity, error.reset, error.reset)] if error.entity and error.reset is not None else []
                )
                reading = reading and await self._send(send, (fmt.format(undo) + fmt.format_error(error)).encode())
        return reading

    async def _send(self, send: Send, body: bytes) -> bool:
        """Sends a piece; ``False`` when the client did not take it within ``send_timeout``."""
        message: Message = {"type": "http.response.body", "body": body, "more_body": True}
        if self.send_timeout is None:
            await send(message)
            return True
        with anyio.move_on_after(self.send_timeout):
            await send(message)
            return True
        logger.warning("a client stopped reading an event's answer for %g s: finishing without it", self.send_timeout)
        return False


class RefusedResponse(Response):
    """An error answered with another status (``datastar_error_status``); ``outcome`` is the real one."""

    def __init__(self, body: str, status: int, headers: dict[str, str], media_type: str, outcome: int) -> None:
        super().__init__(body, status, headers, media_type)
        self.outcome = outcome


def outcome(response: Response) -> int:
    """What a request's answer says happened: its status, or the real one of a ``RefusedResponse``."""
    return response.outcome if isinstance(response, RefusedResponse) else response.status_code


class Answers:
    """Picks the answer format for a request and renders updates and errors in it."""

    def __init__(
        self,
        formatters: Sequence[Formatter],
        datastar_error_status: int | None = None,
        compression: Compression | None = None,
        send_timeout: float | None = 10.0,
    ) -> None:
        self.formatters = list(formatters)
        self.datastar_error_status = datastar_error_status
        self.send_timeout = send_timeout
        self.compression = compression or Compression(False)
        self.streaming = next((f for f in self.formatters if f.streams), DatastarFormatter())
        self._encoded: dict[int, list[tuple[bytes, bytes]]] = {}

    def formatter(self, call: EventRequest) -> Formatter:
        for formatter in self.formatters:
            if formatter.matches(call):
                return formatter
        raise EventError(406, "No answer format for this request")

    def answer(self, call: EventRequest, updates: list[Update], status: int = 200) -> Response:
        """One answer with every update. A ``Redirect`` is ``303`` with ``Location`` for formats
        that cannot carry it (JSON); Datastar's carries it in the stream."""
        formatter = self.formatter(call)
        headers = self._headers(formatter)
        redirect = next((u.redirect for u in reversed(updates) if u.redirect is not None), None)
        if redirect is not None and not formatter.streams:
            status, headers = 303, [*headers, (b"location", redirect.encode("latin-1", "replace"))]
        body = formatter.format(updates).encode()
        encoding = self.compression.choose(call.headers) if len(body) >= MIN_SIZE else None
        if encoding is not None:
            body = self.compression.whole(encoding, body)
            headers = [*headers, (b"content-encoding", encoding.encode()), (b"vary", b"accept-encoding")]
        return ReadyResponse(body, status, headers)

    def streamed(self, call: EventRequest, response: StreamResponseT) -> StreamResponseT:
        """``response``, compressed if the caller accepts an encoding this app offers."""
        response.encoding = self.compression.choose(call.headers, stream=True)
        response.rests = "sec-fetch-mode" in call.headers
        return response

    def _headers(self, formatter: Formatter) -> list[tuple[bytes, bytes]]:
        """The formatter's headers, encoded once."""
        headers = self._encoded.get(id(formatter))
        if headers is None:
            headers = Response(b"", headers=formatter.headers, media_type=formatter.media_type).raw_headers
            headers = self._encoded[id(formatter)] = [(k, v) for k, v in headers if k != b"content-length"]
        return headers

    def state(self, call: EventRequest, entity: str, state: dict[str, Any], status: int = 200) -> Response:
        """An instance's whole public state."""
        return self.answer(call, [Update(entity, state, state)], status)

    async def updates(self, call: EventRequest, updates: AsyncGenerator[Update, None], streams: bool) -> Response:
        """An event's updates: streamed as they come when the event ``streams`` (a generator) and
        the format can, else collected into one answer. The first is awaited here, so an event
        that fails before its first step gets a plain error answer."""
        formatter = self.formatter(call)
        try:
            first = await updates.__anext__()
            if formatter.streams and streams:
                return self.streamed(call, UpdatesResponse(formatter, [first], updates, send_timeout=self.send_timeout))
            rest = [update async for update in updates]
        except BaseException:
            await updates.aclose()
            raise
        return self.answer(call, [first, *rest])

    async def background(self, call: EventRequest, updates: AsyncGenerator[Update, None]) -> Response:
        """A background event's updates: streamed from the start, and cancelled when the caller
        goes away, if the format streams; else collected into one answer."""
        formatter = self.formatter(call)
        if formatter.streams:
            response = UpdatesResponse(formatter, [], updates, until_disconnect=True, send_timeout=self.send_timeout)
            return self.streamed(call, response)
        async with aclosing(updates):
            return self.answer(call, [update async for update in updates])

    def error(self, call: EventRequest, error: EventError) -> Response:
        try:
            formatter = self.formatter(call)
        except EventError:
            return Response(error.message, error.status, error.headers, "text/plain")
        body = formatter.format_error(error)
        if self.datastar_error_status is None or not call.is_datastar:
            return Response(body, error.status, error.headers, formatter.media_type)
        # sent with another status so the Datastar client applies the error signals; the log and
        # the metrics say what really happened
        logger.info(
            "%s %s refused with %d, answered %d for the page to show it: %s",
            call.method, call.path, error.status, self.datastar_error_status, error.message,
            extra={"status": error.status},
        )  # fmt: skip
        return RefusedResponse(body, self.datastar_error_status, error.headers, formatter.media_type, error.status)


async def cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Cancels ``scope`` once the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
