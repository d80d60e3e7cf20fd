"""``GET /{entity}/live``: a long-lived stream of one instance's state."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import anyio
from starlette.types import Receive, Scope, Send

from starmodel_asgi.app import StreamResponse
from starmodel_asgi.dispatch import channel_name, rendered
from starmodel_asgi.entity import Entity
from starmodel_asgi.formatters import DatastarFormatter, Formatter
from starmodel_asgi.http import Update

if TYPE_CHECKING:
    from starmodel_asgi.app import StarModel

logger = logging.getLogger("starmodel_asgi")


class LiveResponse(StreamResponse):
    """Sends the current state at once, then each change published for the instance, and a
    keep-alive comment whenever nothing happened for ``keepalive`` seconds. Ends when the
    client goes away, releasing its subscription."""

    def __init__(self, app: StarModel, formatter: Formatter, entity: type[Entity], key: str) -> None:
        if not formatter.streams:
            formatter = next((f for f in app.formatters if f.streams), DatastarFormatter())
        super().__init__(formatter)
        self.app, self.formatter, self.entity, self.key = app, formatter, entity, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
            await self._stream(send)
            tg.cancel_scope.cancel()

    async def _stream(self, send: Send) -> None:
        app, entity = self.app, self.entity
        async with app.broadcast.subscribe(channel_name(entity, self.key)) as messages:
            # subscribed before reading, so no change between the read and the first message is lost
            instance = await app.dispatcher.read(entity, self.key)
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            sent: dict[str, Any] = {}
            sent = await self._push(send, instance, sent)
            iterator = messages.__aiter__()
            while True:
                with anyio.move_on_after(app.keepalive):
                    message = await iterator.__anext__()
                    instance = entity.model_validate(json.loads(message))
                    sent = await self._push(send, instance, sent)
                    continue
                await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})

    async def _push(self, send: Send, instance: Entity, sent: dict[str, Any]) -> dict[str, Any]:
        state = instance.public_state()
        changed = {k: v for k, v in state.items() if k not in sent or sent[k] != v}
        update = Update(self.entity.entity_name(), changed, state, rendered(instance))
        body = self.formatter.format([update]).encode()
        await send({"type": "http.response.body", "body": body, "more_body": True})
        return state


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
