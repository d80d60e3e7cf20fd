"""The quick-start demo: a counter everyone shares, kept in a SQLite file, live in every tab.

pip install -e ".[demo]" && python examples/demo.py      # then open http://127.0.0.1:8000
"""

from __future__ import annotations

import os

import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.pages import datastar_script


class Counter(Entity):
    """One count per browser session."""

    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event
    def reset(self) -> None:
        self.count = 0


class SharedCounter(Entity):
    """One count for everyone, saved in SQLite, pushed live to every open page."""

    model_config = {"scope": "global", "store": "sql"}
    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount


secret = os.environ.get("STARMODEL_SECRET_KEY", "demo-only-secret")
sm = StarModel(entities=[Counter, SharedCounter], base_path="/sm", secret_key=secret)


def page(request: object) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>starmodel_asgi demo</title>{datastar_script()}
<style>body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }}
section {{ border: 1px solid #ddd; border-radius: .5rem; padding: 0 1rem 1rem; margin: 1rem 0; }}
button {{ font-size: 1rem; padding: .3rem .8rem; }}</style></head>
<body>
  {Counter.holder()}
  {SharedCounter.holder(sync="live")}
  <h1>starmodel_asgi</h1>
  <section>
    <h2>Your counter</h2>
    <p>Count: <strong id="count" data-text="{Counter.signal.count}">0</strong></p>
    <button id="inc" data-on:click="{Counter.increment(amount=1)}">+1</button>
    <button id="inc5" data-on:click="{Counter.increment(amount=5)}">+5</button>
    <button id="reset" data-on:click="{Counter.reset()}">reset</button>
  </section>
  <section>
    <h2>Everyone's counter (open a second tab)</h2>
    <p>Count: <strong id="shared" data-text="{SharedCounter.signal.count}">0</strong></p>
    <button id="shared-inc" data-on:click="{SharedCounter.increment()}">+1 for everyone</button>
  </section>
</body></html>""")


app = Starlette(routes=[Route("/", page), Mount("/sm", app=sm)], lifespan=sm.lifespan)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
