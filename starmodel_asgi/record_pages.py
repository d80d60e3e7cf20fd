"""What a page builds for a record entity's collection: its create and delete actions, its live
list, and the "load more" of a newest-first list (``Entity`` inherits them)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlencode

from pydantic import BaseModel

from starmodel_asgi.events import Action, with_query
from starmodel_asgi.pages import SafeHTML, inert_json
from starmodel_asgi.query import build_query
from starmodel_asgi.spec import EntitySpec, record_spec, served_spec


class RecordPages:
    """The class-level builders of a record entity's pages."""

    @classmethod
    def __starmodel_target__(cls) -> EntitySpec:
        """Where the class-level action builder and holders point: the app that registered this
        class last (``sm.action(...)`` names another); ``LookupError`` if no app serves it."""
        return served_spec(cast("type[BaseModel]", cls))  # an Entity

    @classmethod
    def create_action(cls, **fields: Any) -> Action:
        """``Todo.create_action(title="Milk")`` -> ``"@post('/sm/todo?title=Milk')"``: the action
        that creates a record (``POST /{entity}``). Fields left out come from the page's signals
        (a bound ``$todo.title``) or a form; only client-writable fields may be given."""
        spec = records(cls, "create_action")
        if unknown := fields.keys() - spec.writable:
            takes = ", ".join(sorted(spec.writable)) or "none: mark fields ClientWritable"
            raise TypeError(
                f"{cls.__name__}.create_action() cannot set {', '.join(sorted(unknown))}"
                f" (a new record takes its client-writable fields: {takes})"
            )
        return Action("post", with_query(spec.collection_url(), fields))

    @classmethod
    def delete_action(cls, id: str | int) -> Action:
        """``Todo.delete_action(todo.id)`` -> ``"@delete('/sm/todo/<id>')"``: the action that
        deletes a record (``DELETE /{entity}/{id}``); its live lists drop it."""
        return Action("delete", records(cls, "delete_action").url(id))

    @classmethod
    def live_list(
        cls,
        limit: int | None = None,
        tag: str = "div",
        *,
        where: Mapping[str, Any] | None = None,
        order: str | None = None,
        newest_first: bool = False,
        **attrs: str,
    ) -> SafeHTML:
        """The element a record entity's live list fills: ``<div id="message-list">`` opening
        ``GET /{entity}/live`` on load (the newest ``limit`` records, oldest first; only those
        matching ``where``, in ``order``, as ``sm.list`` takes them; newest first with
        ``newest_first``, new records then prepended), with a ``_viewers`` signal for
        ``presence`` entities and ``_count`` for ``aggregates``. ``attrs`` become HTML
        attributes. A newest-first list grows by ``limit`` older records on ``load_more()``.
        The page reopens the stream after the server restarts."""
        spec = records(cls, "live_list")
        if limit is not None and not 0 < limit <= spec.list_limit:
            raise ValueError(
                f"{cls.__name__}.live_list(limit={limit}): the app sends 1..{spec.list_limit} records per list;"
                " lower limit or raise StarModel(list_limit=...)"
            )
        params = build_query(spec, where, order, public=True).params()
        if limit is not None:
            params["limit"] = int(limit)
        if newest_first:
            params["newest_first"] = 1
        url = spec.collection_url("live")
        if params:
            url += "?" + urlencode(params)
        extra = "".join(
            f' {k.rstrip("_").replace("_", "-")}="{html.escape(str(v), quote=True)}"' for k, v in attrs.items()
        )
        if newest_first:  # the same element asks again, so Datastar ends the stream it replaces
            more = html.escape(f"{url}&shown=", quote=True)
            extra += f" data-on:{LOAD_MORE}=\"@get('{more}' + el.children.length, {{retry: 'always'}})\""
        local = inert_json({spec.name: local_signals(spec)})
        return SafeHTML(
            f"<{tag} id=\"{spec.name}-list\" data-signals__ifmissing='{html.escape(local, quote=True)}'"
            f" data-init=\"@get('{html.escape(url, quote=True)}', {{retry: 'always'}})\"{extra}></{tag}>"
        )

    @classmethod
    def load_more(cls) -> str:
        """The expression that asks a newest-first ``live_list`` for ``limit`` older records, for
        the page's own button: ``<button data-on:click="{Message.load_more()}">Older</button>``.
        Those records stay live like the others."""
        spec = cls.__starmodel_target__()
        return f"document.getElementById('{spec.name}-list').dispatchEvent(new CustomEvent('{LOAD_MORE}'))"


#: The DOM event a newest-first live list answers by asking for older records.
LOAD_MORE = "sm-load-more"


def records(entity: type[RecordPages], helper: str) -> EntitySpec:
    """The spec of the app serving ``entity``, a record entity (``helper`` is refused otherwise)."""
    return record_spec(entity.__starmodel_target__(), f"{entity.__name__}.{helper}")


def local_signals(spec: EntitySpec) -> dict[str, Any]:
    """The signals the server sets and the page never sends back: blank errors, and the number
    of viewers of a ``presence`` entity."""
    local = {**spec.no_errors, "_viewers": 0} if spec.presence else spec.no_errors
    return {**local, "_count": dict.fromkeys(spec.aggregates, 0)} if spec.aggregates else local
