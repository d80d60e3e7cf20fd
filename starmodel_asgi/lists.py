"""``GET /{entity}/live`` on a record entity: the newest records, kept up to date from any worker.

The list's channel only says "something changed" (a fresh token per create, change or delete);
each stream re-reads its window of records and sends the difference from what the page holds:
new records appended to ``#{entity}-list`` (or prepended, when a delete brings an older one back
into the window), changed ones morphed by their element id ``{entity}-{id}``, gone ones removed.
A newest-first list (``?newest_first=1``) shows the same window the other way round: new records
are prepended, and ``&shown=N`` (the page's "load more") makes the window ``N`` records wider.
A burst of changes costs one read, since a stream that falls behind only keeps the newest token;
streams of one process share each read and its rendering (``render(self, viewer)``: each stream
renders the records that changed for its own viewer).
"""

from __future__ import annotations

import html as html_escape
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
from starlette.types import Receive, Scope, Send

from starmodel_asgi.aggregates import Counts, Tallies
from starmodel_asgi.broadcast import Payload
from starmodel_asgi.elements import rendered
from starmodel_asgi.entity import Entity
from starmodel_asgi.errors import EventError
from starmodel_asgi.formatters import Formatter
from starmodel_asgi.live import Live, LiveStream
from starmodel_asgi.logs import LIVE, get_logger
from starmodel_asgi.query import EVERYTHING, Query
from starmodel_asgi.recent import Recent
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.values import Element, EventRequest, Update
from starmodel_asgi.wire import list_channel

#: How many pages of ``list_limit`` records a newest-first live list may grow to with "load more".
MAX_PAGES = 10

logger = get_logger(LIVE)

#: Asked for each record a stream would send: ``False`` leaves it out.
Allowed = Callable[[Entity], Awaitable[bool]]


@dataclass(frozen=True)
class Row:
    """One record as a list shows it: its id and its element's HTML."""

    id: str
    record: Entity
    html: str


def row_of(spec: EntitySpec, record: Entity, viewer: EventRequest | None = None) -> Row | None:
    """The record's ``render()`` (``render(viewer)`` when given), given the element id
    ``{entity}-{id}`` if it has none (wrapped in a ``<div>``). ``None`` when rendering fails
    (logged): the list goes on without it."""
    try:
        html = "".join(e.html for e in rendered(record, viewer))
    except Exception:
        logger.exception("%s.render() failed for %s; leaving it out of the live list", spec.entity.__name__, record.id)
        return None
    dom_id = record.dom_id
    if f'id="{dom_id}"' not in html and f"id='{dom_id}'" not in html:
        html = f'<div id="{html_escape.escape(dom_id, quote=True)}">{html}</div>'
    return Row(record.id, record, html)


class Windows:
    """The rows each recent list message gives, read and rendered once per process however many
    streams watch, whatever their ``limit``: one read of the widest window open for the entity,
    which each stream cuts to its own. Concurrent askers wait for the first one's read. Bounded
    by count and bytes."""

    def __init__(self, size: int = 64, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._done: Recent[tuple[str, str], Reading] = Recent(size, max_bytes)
        self._pending: dict[tuple[str, str], Reading] = {}
        self._open: dict[str, Counter[int]] = {}  # entity -> the limits of its open lists

    @contextmanager
    def watching(self, name: str, limit: int) -> Iterator[None]:
        """Counts an open list of ``limit`` records while the block runs."""
        limits = self._open.setdefault(name, Counter())
        limits[limit] += 1
        try:
            yield
        finally:
            limits[limit] -= 1
            if not limits[limit]:
                del limits[limit]
            if not limits:
                del self._open[name]

    async def get(self, name: str, message: str, limit: int, read: Callable[[int], Awaitable[list[Row]]]) -> list[Row]:
        """The newest ``limit`` rows after ``message``; ``read(width)`` reads the newest ``width``."""
        key = (name, message)
        reading = self._done.get(key) or self._pending.get(key)
        if reading is None or reading.width < limit:
            reading = await self._read(key, max((limit, *self._open.get(name, ()))), read)
        else:
            await reading.done.wait()
        if reading.error is not None:
            raise reading.error
        assert reading.rows is not None
        return reading.rows[-limit:]

    async def _read(self, key: tuple[str, str], width: int, read: Callable[[int], Awaitable[list[Row]]]) -> Reading:
        reading = self._pending[key] = Reading(width)  # askers meanwhile wait for it
        try:
            reading.rows = await read(width)
        except Exception as exc:
            reading.error = exc
        finally:
            if self._pending.get(key) is reading:
                del self._pending[key]
            reading.done.set()
        if reading.rows is not None:
            # records ~ their HTML twice; rows a stream renders for its viewer: about 1 KB a record
            self._done.put(key, reading, sum(3 * len(row.html) or 1024 for row in reading.rows))
        return reading


@dataclass
class Reading:
    """A read of the newest ``width`` rows, done or in progress (shared by the streams that ask
    meanwhile)."""

    width: int
    done: anyio.Event = field(default_factory=anyio.Event)
    rows: list[Row] | None = None
    error: Exception | None = None


class ListStream(LiveStream):
    """The newest ``limit`` records (oldest first, or newest first with ``newest_first``), then
    what each change does to them."""

    def __init__(
        self,
        live: Live,
        windows: Windows,
        formatter: Formatter,
        spec: EntitySpec,
        limit: int,
        allowed: Allowed | None,
        viewer: EventRequest | None = None,
        newest_first: bool = False,
        query: Query = EVERYTHING,
        tallies: Tallies | None = None,
    ) -> None:
        super().__init__(live, formatter, spec, list_channel(spec))
        self.windows, self.limit, self.allowed, self.viewer = windows, limit, allowed, viewer
        self.newest_first, self.query = newest_first, query
        # lists of one query share their reads
        self.shared = spec.name if query.plain else f"{spec.name}?{query.key}"
        self.tallies = tallies if spec.aggregates else None
        self.target = f"#{spec.name}-list"
        self._sent: dict[str, str] = {}  # id -> HTML, in page order
        self._rows: list[Row] = []
        self._own: dict[str, Row] = {}  # id -> the row as rendered for this stream's viewer
        self._counts: Counts = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.windows.watching(self.shared, self.limit):
            await super().__call__(scope, receive, send)

    async def start(self) -> None:
        self._rows = await self._window(None)
        self._counts = await self._tally(None)

    async def first(self, send: Send) -> None:
        rows, self._rows = self._rows, []
        self._sent = {row.id: row.html for row in rows}
        await self._patch(send, [Element("".join(self._sent.values()), self.target, "inner")], self._counts)

    async def follow(self, send: Send, messages: AsyncIterator[Payload]) -> None:
        async for message in messages:
            try:
                rows = await self._window(message)
                counts = await self._tally(message)
            except Exception:
                logger.exception("live list of %s could not re-read its records", self.spec.name)
                continue  # the next change or a reconnection brings them
            changed, self._counts = (counts if counts != self._counts else {}), counts
            await self._patch(send, self._changes(rows), changed)

    async def _tally(self, message: Payload) -> Counts:
        """The entity's aggregates after ``message`` (counted once per message and process)."""
        if self.tallies is None:
            return {}
        dispatcher, spec = self.live.dispatcher, self.spec

        async def count() -> Counts:
            return {name: await dispatcher.count(spec, query) for name, query in spec.aggregates.items()}

        return await self.tallies.get(spec, message, count)

    async def _window(self, message: Payload) -> list[Row]:
        """The rows this stream may show: read once per message and process, then asked of
        ``authorize`` one by one."""
        if message is None:  # messages may have been missed: this stream reads on its own
            rows = await self._read()
        else:
            rows = await self.windows.get(self.shared, message, self.limit, self._read)
        if self.allowed is not None:
            rows = [row for row in rows if await self._allowed(row)]
        if self.newest_first:
            rows = rows[::-1]
        return rows if self.viewer is None else self._for_viewer(rows)

    def _for_viewer(self, rows: list[Row]) -> list[Row]:
        """The rows rendered for this stream's viewer: only the records that changed since this
        stream last rendered them."""
        own: dict[str, Row] = {}
        for row in rows:
            mine = self._own.get(row.id)
            if mine is None or mine.record != row.record:
                mine = row_of(self.spec, row.record, self.viewer)
            if mine is not None:
                own[row.id] = mine
        self._own = own
        return list(own.values())

    async def _allowed(self, row: Row) -> bool:
        """``authorize``'s answer for one record; one that fails is refused (and logged), so one
        bad record cannot stop the list."""
        assert self.allowed is not None
        try:
            return await self.allowed(row.record)
        except Exception:
            logger.exception("authorize failed for %s %s; leaving it out of the live list", self.spec.name, row.id)
            return False

    async def _read(self, width: int | None = None) -> list[Row]:
        records = await self.live.dispatcher.list(self.spec, width or self.limit, 0, newest=True, query=self.query)
        if self.viewer is not None:  # each stream renders for its viewer
            return [Row(record.id, record, "") for record in records]
        return [row for record in records if (row := row_of(self.spec, record)) is not None]

    def _changes(self, rows: list[Row]) -> list[Element]:
        """The patches from what the page holds to ``rows``: removals, morphs, and new records
        prepended (an older one back in the window) or appended; the whole list again when
        records moved (the page's order would no longer match)."""
        new = {row.id: row.html for row in rows}
        old, self._sent = self._sent, new
        kept = [i for i in old if i in new]
        order = list(new)
        start = order.index(kept[0]) if kept else 0  # nothing kept: every record is appended
        if order[start : start + len(kept)] != kept:
            return [Element("".join(new.values()), self.target, "inner")]
        name = self.spec.name
        elements = [Element("", f"#{name}-{i}", "remove") for i in old if i not in new]
        elements += [Element(new[i], f"#{name}-{i}", "outer") for i in kept if new[i] != old[i]]
        for mode, ids in (("prepend", order[:start]), ("append", order[start + len(kept) :])):
            if ids:
                elements.append(Element("".join(new[i] for i in ids), self.target, mode))
        return elements

    async def _patch(self, send: Send, elements: list[Element], counts: Counts | None = None) -> None:
        if elements or counts:
            update = Update(self.spec.name, {"_count": counts} if counts else {}, {}, elements)
            await self._send(send, self.formatter.format([update]).encode())


def paging(spec: EntitySpec, query: Mapping[str, list[str]], list_limit: int) -> tuple[int, int]:
    """``?limit=&offset=``, checked."""
    try:
        limit = int(query.get("limit", [list_limit])[0])
        offset = int(query.get("offset", [0])[0])
    except ValueError:
        raise EventError(422, "limit and offset must be integers", spec.name) from None
    if not 0 < limit <= list_limit or not 0 <= offset < 2**62:  # what every store can count to
        raise EventError(422, f"limit must be 1..{list_limit}, offset 0..2**62", spec.name)
    return limit, offset


def newest_first_of(spec: EntitySpec, query: Mapping[str, list[str]], list_limit: int) -> tuple[bool, int]:
    """``?newest_first=1`` and, to load older records, ``&shown=`` (how many the page shows: the
    list then holds that many more)."""
    newest_first = query.get("newest_first", ["0"])[0] in ("1", "true")
    try:
        shown = int(query.get("shown", [0])[0])
    except ValueError:
        raise EventError(422, "shown must be an integer", spec.name) from None
    most = MAX_PAGES * list_limit
    if (shown and not newest_first) or not 0 <= shown <= most:
        raise EventError(422, f"shown (older records of a newest_first list) must be 0..{most}", spec.name)
    return newest_first, shown
