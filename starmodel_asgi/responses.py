"""Responses whose bodies are sent piece by piece: event answers that stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from starmodel_asgi.formatters import Formatter
from starmodel_asgi.http import EventError, Update

logger = logging.getLogger("starmodel_asgi")


class StreamResponse(Response):
    """A response whose body is sent by ``__call__`` piece by piece (no Content-Length)."""

    def __init__(self, formatter: Formatter) -> None:
        super().__init__(None, 200, formatter.headers, formatter.media_type)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]


class UpdatesResponse(StreamResponse):
    """Streams updates as the dispatcher produces them, in the request's own task (so the
    instance lock is taken and released by one task)."""

    def __init__(self, formatter: Formatter, first: list[Update], rest: AsyncGenerator[Update, None]) -> None:
        super().__init__(formatter)
        self.formatter, self.first, self.rest = formatter, first, rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        fmt = self.formatter
        async with aclosing(self.rest) as rest:
            await send({"type": "http.response.body", "body": fmt.format(self.first).encode(), "more_body": True})
            try:
                async for update in rest:
                    chunk = fmt.format([update]).encode()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except EventError as exc:
                undo = [Update(exc.entity, exc.reset, exc.reset)] if exc.entity and exc.reset is not None else []
                body = (fmt.format(undo) + fmt.format_error(exc)).encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            except Exception:
                logger.exception("streaming an event answer failed")
                error = EventError(500, "Internal error", self.first[0].entity if self.first else None)
                await send({"type": "http.response.body", "body": fmt.format_error(error).encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
