"""Datastar attributes for FastHTML elements.

FastHTML turns ``data_on_click=...`` into ``data-on-click``, which Datastar 1.0 ignores: its
attributes put a colon between the plugin and its key (``data-on:click``). Either teach FastHTML
Datastar's spelling once, at start-up:

    use_datastar_attrs()
    Button("+", data_on_click=Counter.increment(amount=1))     # data-on:click="@post(...)"
    Input(data_bind_draft=True, data_on_keydown__debounce_300ms=...)  # data-bind:draft, __debounce.300ms

or pass those attributes as a dict:

    Button("+", **on(click=Counter.increment(amount=1)))
    Button("+", **{"data-on:click__debounce.300ms": Counter.increment()})   # with modifiers

Attributes without a key keep FastHTML's spelling: ``data_text=Counter.signal.count``,
``data_bind=Counter.signal.count.path``, ``data_signals=...``. Events may return FastHTML
elements: they render through their ``__html__``. Mount with ``app.mount("/sm", sm)``; close at
shutdown with ``FastHTML(on_shutdown=[sm.aclose])`` (FastHTML's ``lifespan=`` wants an async
generator, not the context manager ``sm.lifespan``).
"""

from __future__ import annotations

from fasthtml.components import attrmap_x, fh_cfg

#: Datastar 1.0 attributes that take a key after a colon (``data-on:click``, ``data-bind:name``)
KEYED = ("on", "bind", "attr", "class", "computed", "signals", "style", "indicator", "ref")
#: attributes that merely start like a keyed one (``data-on-intersect`` is a plugin of its own)
KEYLESS = ("on_intersect", "on_interval", "on_signal_patch", "on_signal_patch_filter")


def datastar_attrmap(name: str) -> str:
    """FastHTML's attribute name mapping, with Datastar's ``data-<plugin>:<key>__<modifiers>``:
    ``data_on_click`` -> ``data-on:click``, ``data_on_click__debounce_300ms`` ->
    ``data-on:click__debounce.300ms``; everything else as FastHTML maps it."""
    if name.startswith("data_"):
        rest, _, modifiers = name[len("data_") :].partition("__")
        plugin, _, key = rest.partition("_")
        if plugin in KEYED and key and not any(rest == k or rest.startswith(k + "_") for k in KEYLESS):
            mapped = f"data-{plugin}:{key.replace('_', '-')}"
            return f"{mapped}__{modifiers.replace('_', '.')}" if modifiers else mapped
    return str(attrmap_x(name))


def use_datastar_attrs() -> None:
    """Make FastHTML spell ``data_on_click=`` as Datastar 1.0 reads it, for this process."""
    fh_cfg["attrmap"] = datastar_attrmap


def on(**events: str) -> dict[str, str]:
    """``on(click=..., datastar_fetch=...)`` -> ``{"data-on:click": ..., "data-on:datastar-fetch": ...}``."""
    return {f"data-on:{name.replace('_', '-')}": str(action) for name, action in events.items()}
