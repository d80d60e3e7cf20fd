"""The values an event call takes and gives, whatever host delivered it: the request as the core
sees it, and the updates, elements and redirects it answers with."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from starmodel_asgi.errors import Invalid


def is_datastar(headers: Mapping[str, str]) -> bool:
    """Whether the request came from Datastar's client (lower-case header names)."""
    return headers.get("datastar-request", "").lower() == "true"


class Signals(dict[str, Any]):
    """The Datastar signals a request carried; annotate an event parameter with it to receive them."""


class App(Protocol):
    """What an event reaches through ``request.app``: the serving ``StarModel``'s server side,
    whose creates, edits, reads and deletes join the event's unit of work."""

    async def create(self, entity: type[Any], **fields: Any) -> Any: ...

    def edit(self, entity: type[Any], key: str | None = None) -> AbstractAsyncContextManager[Any]: ...

    async def get(self, entity: type[Any], key: str | None = None) -> Any: ...

    async def list(
        self,
        entity: type[Any],
        limit: int = 100,
        offset: int = 0,
        *,
        where: Mapping[str, Any] | None = None,
        order: str | None = None,
    ) -> list[Any]: ...

    async def count(self, entity: type[Any], where: Mapping[str, Any] | None = None) -> int: ...

    async def delete(self, entity: type[Any], key: str) -> None: ...


#: ``EventRequest.app`` of a request no app built (one a test makes by hand).
NO_APP = cast(App, None)


@dataclass
class EventRequest:
    """One call as the core sees it, whatever host framework delivered it.

    ``query`` and ``form`` map each name to all its values (a form's files are Starlette
    ``UploadFile``s); ``raw`` is the host's own request object (for the ASGI layer, a
    ``starlette.requests.Request``) for events that need more.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, list[str]] = field(default_factory=dict)
    path_params: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, list[Any]] = field(default_factory=dict)
    signals: Signals = field(default_factory=Signals)
    session_id: str | None = None
    user_id: str | None = None
    raw: Any = None
    #: the page may still show an earlier failure's ``_error``/``_errors``: a success clears them
    errors_shown: bool = False
    #: what the event's ``Depends`` providers gave, by parameter name
    services: dict[str, Any] = field(default_factory=dict)
    #: the ``StarModel`` serving the event: ``await request.app.create(Message, text=...)``
    app: App = NO_APP

    @property
    def is_datastar(self) -> bool:
        """Whether the request came from Datastar's client (its ``Datastar-Request: true`` header)."""
        return is_datastar(self.headers)


@dataclass(frozen=True)
class Element:
    """HTML an event returned or yielded, with where it should land."""

    html: str
    selector: str | None = None
    mode: str | None = None
    use_view_transition: bool | None = None


@dataclass
class Update:
    """One step of an event's answer: changed public fields, HTML, and the state after it."""

    entity: str
    changed: dict[str, Any]
    state: dict[str, Any]
    elements: list[Element] = field(default_factory=list)
    #: where the page should go next (an event returned or yielded a ``Redirect``)
    redirect: str | None = None
    #: the first update of a successful event: the ``_error``/``_errors`` signals that clear what
    #: an earlier failure showed
    cleared: dict[str, Any] | None = None
    #: the event deleted its own instance
    gone: bool = False
    #: client-writable fields among ``changed``, with the value the page held when it sent the
    #: request (or a live stream last sent): the page takes the new value only where it still
    #: holds that one (``guards.py``)
    guarded: dict[str, Any] = field(default_factory=dict)
    #: text typed on after the value sent is kept after the new value (an event's answer; a live
    #: stream does not know what the page sent)
    rebase: bool = True


@dataclass(frozen=True)
class Redirect:
    """Return (or yield) ``Redirect("/products/p1")`` from an event to send the page there: a
    Datastar page navigates, a JSON client gets ``303`` with ``Location``. Only paths and http(s)
    URLs are accepted, so a redirect built from input cannot run script; a path stays on this site
    (``//host`` and backslashes, which browsers read as another site, are refused), and no control
    character could break the answer's headers."""

    url: str

    def __post_init__(self) -> None:
        url = self.url
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        bad = (
            parts is None
            or parts.scheme.lower() not in ("", "http", "https")
            or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in url)
            or "\\" in url
            or (not parts.scheme and (parts.netloc or url.startswith("//")))
            or (parts.scheme and not parts.netloc)
        )
        if bad:
            # a 422 when an event builds it from input (not echoing it); a ValueError to Python callers
            raise Invalid(422, "Redirect takes a path on this site or an http(s) URL ('/products/p1', 'https://...')")
