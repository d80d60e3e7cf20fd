"""Presence: how many live streams watch an instance, counted across workers through the broadcast.

Each process counts its own open streams per channel and tells the others on
``sm-viewers:<channel>`` whenever its count changes, and again every ``interval`` seconds. A process
that starts watching a channel says hello, and every other process watching it answers with its
count at once. What a process last heard from another expires ``3 * interval`` seconds later, so
the viewers of a worker that died without a word (``kill -9``) drop out within that time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from starmodel_asgi.broadcast import Broadcast, Message
from starmodel_asgi.broadcast.channels import Channels, Subscriber
from starmodel_asgi.wire import viewers_channel

logger = logging.getLogger("starmodel_asgi")


class Presence:
    """One per app: ``join(channel)`` for each open live stream of a ``presence`` entity."""

    def __init__(
        self, broadcast: Broadcast, interval: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.broadcast, self.interval, self._clock = broadcast, interval, clock
        self.worker = uuid.uuid4().hex
        self._local: dict[str, int] = {}  # channel -> streams open here
        self._heard: dict[str, dict[str, tuple[int, float]]] = {}  # channel -> worker -> (count, expires)
        self._said = 0  # numbers this worker's notes: a note overtaken by a newer one is ignored
        self._last: dict[str, dict[str, int]] = {}  # channel -> worker -> number of its newest note
        self._totals: dict[str, int] = {}
        self._watchers = Channels()  # each stream's view of its channel's total
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._beat: asyncio.Task[None] | None = None

    def count(self, channel: str) -> int:
        """The viewers of ``channel`` across every worker heard from."""
        return self._totals.get(channel, 0)

    @asynccontextmanager
    async def join(self, channel: str) -> AsyncIterator[Subscriber]:
        """Counts one more viewer of ``channel`` while the block runs; yields the total each time
        it changes (the first right away), as a string."""
        watcher, _ = self._watchers.add(channel)
        try:
            first = channel not in self._local
            self._local[channel] = self._local.get(channel, 0) + 1
            if first:
                await self._start(channel)
            self._update(channel)
            await self._say(channel, hello=first)
            yield watcher
        finally:
            self._watchers.remove(channel, watcher)
            with anyio.CancelScope(shield=True):
                await self._leave(channel)

    async def _leave(self, channel: str) -> None:
        if channel not in self._local:  # the app was closed meanwhile
            return
        left = self._local[channel] - 1
        if left:
            self._local[channel] = left
            self._update(channel)
            await self._say(channel)
            return
        del self._local[channel]
        self._forget(channel)
        reader = self._readers.pop(channel, None)
        if reader is not None:
            reader.cancel()
        await self._say(channel, count=0)

    async def _start(self, channel: str) -> None:
        """Listens to the other workers' counts of ``channel`` before saying hello, so no answer
        is missed."""
        ready = anyio.Event()
        loop = asyncio.get_running_loop()
        self._readers[channel] = loop.create_task(self._read(channel, ready), name=f"starmodel-presence {channel}")
        if self._beat is None or self._beat.done():
            self._beat = loop.create_task(self._heartbeat(), name="starmodel-presence")
        with anyio.move_on_after(self.interval):
            await ready.wait()

    async def _read(self, channel: str, ready: anyio.Event) -> None:
        try:
            me = asyncio.current_task()
            async with self.broadcast.subscribe(viewers_channel(channel), every=True) as notes:
                ready.set()
                async for note in notes:
                    if self._readers.get(channel) is not me:  # replaced: the channel was left, then joined again
                        return
                    await self._heard_note(channel, note)
        except Exception:
            logger.exception("presence of %s stopped listening", channel)
        finally:
            ready.set()

    async def _heard_note(self, channel: str, note: Message) -> None:
        if note is None:  # the backend reconnected: ask everyone again
            await self._say(channel, hello=True)
            return
        try:
            data = json.loads(note)
            worker, count, number = str(data["w"]), int(data["n"]), int(data["s"])
            hello = bool(data.get("hello"))
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable presence note on %s: %.80r", channel, note)
            return
        if worker == self.worker or channel not in self._local:
            return
        last = self._last.setdefault(channel, {})
        if number <= last.get(worker, -1):  # notes may arrive out of order (a pool of connections)
            return
        last[worker] = number
        heard = self._heard.setdefault(channel, {})
        if count > 0:
            heard[worker] = (count, self._clock() + 3 * self.interval)
        else:
            heard.pop(worker, None)
        self._update(channel)
        if hello:
            await self._say(channel)

    async def _heartbeat(self) -> None:
        while self._local:
            await anyio.sleep(self.interval)
            now = self._clock()
            for channel in list(self._local):
                heard = self._heard.get(channel, {})
                for worker in [w for w, (_, expires) in heard.items() if expires <= now]:
                    del heard[worker]  # gone without a word
                self._update(channel)
                await self._say(channel)

    def _update(self, channel: str) -> None:
        total = self._local.get(channel, 0) + sum(n for n, _ in self._heard.get(channel, {}).values())
        if self._totals.get(channel) != total:
            self._totals[channel] = total
            self._watchers.deliver(channel, str(total))

    async def _say(self, channel: str, *, hello: bool = False, count: int | None = None) -> None:
        self._said += 1
        count = self._local.get(channel, 0) if count is None else count
        note: dict[str, object] = {"w": self.worker, "n": count, "s": self._said}
        if hello:
            note["hello"] = True
        try:
            with anyio.fail_after(self.interval):
                await self.broadcast.publish(viewers_channel(channel), json.dumps(note))
        except Exception:
            logger.warning("could not publish the viewers of %s; the next heartbeat will", channel, exc_info=True)

    async def aclose(self) -> None:
        """Tell the other workers this one's viewers are gone, and stop listening."""
        for channel in list(self._local):
            await self._say(channel, count=0)
        tasks = [*self._readers.values(), *([self._beat] if self._beat else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in list(self._local):
            self._forget(channel)
        self._readers.clear()
        self._local.clear()
        self._watchers.close()
        self._beat = None

    def _forget(self, channel: str) -> None:
        for table in (self._heard, self._last, self._totals):
            table.pop(channel, None)
