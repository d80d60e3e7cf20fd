"""StarModel mounted in a Litestar app: a counter, an event answering HTML, errors on the page.

pip install -e ".[litestar,demo]" && python examples/litestar_app.py      # http://127.0.0.1:8000
"""

from __future__ import annotations

import html
import os

import uvicorn
from litestar import Litestar, MediaType, get

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.contrib.litestar import mount
from starmodel_asgi.pages import datastar_script

#: shows the status of any failed request (Datastar drops the body of non-200 answers)
SHOW_ERRORS = "evt.detail.type === 'error' && ($msg = 'Request failed: ' + evt.detail.argsRaw.status)"


class Counter(Entity):
    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event(selector="#greeting", mode="inner")
    def greet(self, name: str = "stranger") -> str:
        return f"<b>Hello, {html.escape(name or 'stranger')}!</b> The count is {self.count}."


sm = StarModel(entities=[Counter], base_path="/sm", secret_key=os.environ.get("STARMODEL_SECRET_KEY", "dev-only"))


@get("/", media_type=MediaType.HTML)
async def page() -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>StarModel on Litestar</title>{datastar_script()}</head>
<body data-signals='{{"amount": "1", "name": "", "msg": ""}}' data-on:datastar-fetch="{SHOW_ERRORS}">
  {Counter.holder()}
  <h1>Count: <span id="count" data-text="{Counter.signal.count}">0</span></h1>
  <input id="amount" data-bind:amount> <button id="add" data-on:click="$msg = ''; {Counter.increment()}">Add</button>
  <p><input id="name" data-bind:name placeholder="your name">
     <button id="greet" data-on:click="{Counter.greet()}">Greet</button></p>
  <div id="greeting"></div>
  <p id="error" data-text="$msg" style="color: crimson"></p>
</body></html>"""


app = Litestar(route_handlers=[page, mount(sm)], lifespan=[sm.lifespan])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
