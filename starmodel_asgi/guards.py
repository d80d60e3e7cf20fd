"""Typed text is never lost: an answer changes a field the page can type into (a client-writable
field it sent) only where the page still holds the value it sent.

An event that empties a draft (``self.draft = ""``) answers after a round trip; meanwhile the user
may have typed on. The answer cannot know that, so it carries a compare-and-set instead of a plain
signal patch: a hidden element, appended to ``<body>``, whose ``data-init`` runs once in the
Datastar client, sets each field and removes itself. Per field, with ``sent`` the value the
request carried, ``new`` the server's and ``now`` the page's:

- ``now`` is ``sent`` (nothing typed since): the field becomes ``new``;
- text that starts with ``sent`` (typed on after it): ``new`` followed by what was typed after,
  so an emptied draft keeps only the new text; but where ``new`` itself goes on from ``sent`` and
  the text already starts with ``new``, the page keeps it: the event's own live message got there
  first (with whatever was typed after it), and ``new`` must not be added twice;
- anything else (the user rewrote it): the page keeps ``now``, as LiveView keeps a focused input.

Live streams guard such fields too, with ``sent`` the value the stream last sent (the page's
copy until the user typed): a page where the user typed keeps its text, an idle one follows.
They do not rebase (the stream does not know what a request sent).
"""

from __future__ import annotations

import html
from typing import Any

from starmodel_asgi.pages import inert_json

#: the attribute carrying ``{"<entity>": {"<field>": [sent, new]}}`` (what ``testing.Page`` reads)
GUARD_ATTRIBUTE = "data-starmodel-guard"

#: one field's compare-and-set, an expression without ``;`` (whatever way a Datastar build reads it)
_SET = (
    "{ref} = ((now, sent, next) => now === sent || JSON.stringify(now) === JSON.stringify(sent) ? next"
    " : {otherwise})({ref}, {sent}, {new})"
)
_REBASE = (
    "typeof now === 'string' && typeof sent === 'string' && typeof next === 'string' && now.startsWith(sent)"
    " && !(next.length > sent.length && next.startsWith(sent) && now.startsWith(next))"
    " ? next + now.slice(sent.length) : now"
)


def guard_element(entity: str, fields: dict[str, tuple[Any, Any]], rebase: bool = True) -> str:
    """The element that sets ``fields`` (``{name: (sent, new)}``) of ``entity`` on the page, each
    only where the page still holds the value sent; with ``rebase``, text typed on after it
    follows the new value."""
    otherwise = _REBASE if rebase else "now"
    sets = [
        _SET.format(ref=f"${entity}.{name}", sent=inert_json(sent), new=inert_json(new), otherwise=otherwise)
        for name, (sent, new) in fields.items()
    ]
    expression = ", ".join([*sets, "el.remove()"])
    carried = inert_json({entity: {name: [sent, new] for name, (sent, new) in fields.items()}})
    return (
        f'<div hidden {GUARD_ATTRIBUTE}="{html.escape(carried, quote=True)}"'
        f' data-init="{html.escape(expression, quote=True)}"></div>'
    )
