"""Datastar attributes for FastHTML elements.

FastHTML turns ``data_on_click=...`` into ``data-on-click``, which Datastar 1.0 ignores: its
attributes put a colon between the plugin and its key (``data-on:click``). Pass those as a dict:

    Button("+", **on(click=Counter.increment(amount=1)))
    Button("+", **{"data-on:click__debounce.300ms": Counter.increment()})   # with modifiers

Attributes without a key keep FastHTML's spelling: ``data_text=Counter.signal.count``,
``data_bind=Counter.signal.count.path``, ``data_signals=...``. Events may return FastHTML
elements: they render through their ``__html__``. Mount with ``app.mount("/sm", sm)``; close at
shutdown with ``FastHTML(on_shutdown=[sm.aclose])`` (FastHTML's ``lifespan=`` wants an async
generator, not the context manager ``sm.lifespan``).
"""

from __future__ import annotations


def on(**events: str) -> dict[str, str]:
    """``on(click=..., datastar_fetch=...)`` -> ``{"data-on:click": ..., "data-on:datastar-fetch": ...}``."""
    return {f"data-on:{name.replace('_', '-')}": str(action) for name, action in events.items()}
