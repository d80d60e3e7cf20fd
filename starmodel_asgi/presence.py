"""Presence: how many live streams watch an instance, counted across workers through the broadcast.

Each process counts its own open streams per channel and tells the others on
``sm-viewers:<channel>`` whenever its count changes. A process that starts watching a channel
says hello there, and every other process watching it answers with its count at once.

Every ``interval`` seconds each process also publishes its census on ``sm-viewers-census``: its
counts of all the channels it watches, in one message (a few where the backend carries only small
ones: PostgreSQL). A census repairs any per-channel note that was lost, counts out a channel its
sender no longer lists, and shows the sender alive: what a process heard from another expires
``3 * interval`` seconds after its last census or note, so the viewers of a worker that died
without a word (``kill -9``) drop out within that time. Idle, a worker thus publishes one message
an interval however many channels it watches, and hears one from each other worker.

Every note and census is numbered by its sender: one overtaken by a newer one is ignored.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from starmodel_asgi.broadcast import Broadcast, Capabilities, Payload
from starmodel_asgi.broadcast.channels import Channels, Inbox
from starmodel_asgi.logs import LIVE, get_logger, own_task
from starmodel_asgi.wire import CENSUS_CHANNEL, viewers_channel

logger = get_logger(LIVE)


class Presence:
    """One per app: ``join(channel)`` for each open live stream of a ``presence`` entity."""

    def __init__(
        self, broadcast: Broadcast, interval: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.broadcast, self.interval, self._clock = broadcast, interval, clock
        self._max_message = Capabilities.of(broadcast).max_message
        self.worker = uuid.uuid4().hex
        self._local: dict[str, int] = {}  # channel -> streams open here
        self._heard: dict[str, dict[str, int]] = {}  # worker -> channel watched here -> its count
        self._alive: dict[str, float] = {}  # worker -> when what it said expires
        self._said = 0  # numbers this worker's notes and censuses
        self._last: dict[str, dict[str, int]] = {}  # worker -> channel -> number of the newest heard
        self._totals: dict[str, int] = {}
        self._watchers = Channels()  # each stream's view of its channel's total
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._beat: asyncio.Task[None] | None = None
        self._opened = 0  # how many times aclose() ran: a stream that joined before leaves nothing after

    def count(self, channel: str) -> int:
        """The viewers of ``channel`` across every worker heard from."""
        return self._totals.get(channel, 0)

    @asynccontextmanager
    async def join(self, channel: str) -> AsyncIterator[Inbox]:
        """Counts one more viewer of ``channel`` while the block runs; yields the total each time
        it changes (the first right away), as a string."""
        watcher, _ = self._watchers.add(channel)
        opened = self._opened
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
                await self._leave(channel, opened)

    async def _leave(self, channel: str, opened: int) -> None:
        if opened != self._opened or channel not in self._local:  # the app was closed meanwhile
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
        self._readers[channel] = own_task(self._read(channel, ready), f"starmodel-presence {channel}")
        if self._beat is None or self._beat.done():
            self._beat = own_task(self._heartbeat(), "starmodel-presence")
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

    async def _heard_note(self, channel: str, note: Payload) -> None:
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
        self._alive[worker] = self._clock() + 3 * self.interval
        self._heard_count(worker, number, channel, count)
        if hello:
            await self._say(channel)

    def _heard_count(self, worker: str, number: int, channel: str, count: int) -> None:
        """``worker`` had ``count`` viewers of ``channel`` when it said note ``number``."""
        last = self._last.setdefault(worker, {})
        if number <= last.get(channel, -1):  # notes may arrive out of order (a pool of connections)
            return
        last[channel] = number
        heard = self._heard.setdefault(worker, {})
        if heard.get(channel, 0) == count:
            return
        if count > 0:
            heard[channel] = count
        else:
            heard.pop(channel, None)
        self._update(channel)

    async def _heartbeat(self) -> None:
        """While this process watches a channel: hears the other workers' censuses, says its
        own every ``interval``, and counts out the workers gone silent."""
        try:
            async with (
                self.broadcast.subscribe(CENSUS_CHANNEL, every=True) as censuses,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(self._read_censuses, censuses)
                while self._local:
                    await anyio.sleep(self.interval)
                    self._expire()
                    await self._census()
                self._beat = None  # no wait since the check: a join from now on starts another
                tg.cancel_scope.cancel()
        except Exception:
            logger.exception("presence stopped its heartbeat")
        finally:
            if self._beat is asyncio.current_task():
                self._beat = None

    async def _read_censuses(self, censuses: AsyncIterator[Payload]) -> None:
        async for census in censuses:
            if census is None:  # the backend reconnected: censuses come again each interval
                continue
            try:
                self._heard_census(census)
            except Exception:
                logger.exception("presence could not apply a census")

    def _heard_census(self, census: str) -> None:
        try:
            data: dict[str, Any] = json.loads(census)
            worker, number, counts = str(data["w"]), int(data["s"]), data["c"]
            first, end = str(data.get("a", "")), data.get("z")
            if not isinstance(counts, dict) or not (end is None or isinstance(end, str)):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable presence census: %.80r", census)
            return
        if worker == self.worker:
            return
        self._alive[worker] = self._clock() + 3 * self.interval
        for channel in counts.keys() & self._local.keys():
            try:
                count = int(counts[channel])
            except (ValueError, TypeError):
                continue
            self._heard_count(worker, number, channel, count)
        # the census covers every channel from ``first`` up to ``end``: one it leaves out has no viewer there
        for channel in [c for c in self._heard.get(worker, ()) if first <= c and (end is None or c < end)]:
            if channel not in counts:
                self._heard_count(worker, number, channel, 0)

    def _expire(self) -> None:
        now = self._clock()
        for worker in [w for w, expires in self._alive.items() if expires <= now]:
            del self._alive[worker]  # gone without a word
            self._last.pop(worker, None)
            for channel in self._heard.pop(worker, {}):
                self._update(channel)

    async def _census(self) -> None:
        self._said += 1
        try:
            with anyio.fail_after(self.interval):  # the whole census: a backend down must not delay expiry
                for message in self._census_messages():
                    await self.broadcast.publish(CENSUS_CHANNEL, message)
        except Exception:
            logger.warning("could not publish the presence census; the next heartbeat will", exc_info=True)

    def _census_messages(self) -> list[str]:
        """This worker's counts, in one message, or in several of at most the backend's
        ``max_message`` characters, each covering the channels from its ``a`` up to its ``z``."""
        head = {"w": self.worker, "s": self._said}
        limit = self._max_message
        if limit is None:
            return [json.dumps({**head, "c": self._local})]
        names = {channel: json.dumps(channel) for channel in self._local}
        room = limit - 100 - 2 * max(map(len, names.values()), default=0)  # beside the head, ``a`` and ``z``
        messages: list[str] = []
        page: dict[str, int] = {}
        first, size = "", 0
        for channel in sorted(self._local):
            entry = len(names[channel]) + len(str(self._local[channel])) + 4
            if page and size + entry > room:
                messages.append(json.dumps({**head, "c": page, "a": first, "z": channel}))
                page, first, size = {}, channel, 0
            page[channel], size = self._local[channel], size + entry
        messages.append(json.dumps({**head, "c": page, "a": first, "z": None}))
        return messages

    def _update(self, channel: str) -> None:
        total = self._local.get(channel, 0) + sum(heard.get(channel, 0) for heard in self._heard.values())
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
            logger.warning("could not publish the viewers of %s; the next census will", channel, exc_info=True)

    async def aclose(self) -> None:
        """Tell the other workers this one's viewers are gone, and stop listening."""
        self._opened += 1
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
        self._heard.clear()
        self._alive.clear()
        self._last.clear()
        self._watchers.close()
        self._beat = None

    def _forget(self, channel: str) -> None:
        self._totals.pop(channel, None)
        for table in (*self._heard.values(), *self._last.values()):
            table.pop(channel, None)
