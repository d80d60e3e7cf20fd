"""StarModel mounted in a FastHTML app: a counter, an event answering FastHTML elements, errors
on the page.

    pip install -e ".[fasthtml,demo]" && python examples/fasthtml_app.py      # http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import os
from typing import Any

import uvicorn
from fasthtml.common import H1, B, Button, Div, FastHTML, Input, Main, NotStr, P, Span, Title

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.contrib.fasthtml import use_datastar_attrs
from starmodel_asgi.pages import datastar_script

#: shows the status of any failed request (Datastar drops the body of non-200 answers)
SHOW_ERRORS = "evt.detail.type === 'error' && ($msg = 'Request failed: ' + evt.detail.argsRaw.status)"


class Counter(Entity):
    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event(selector="#greeting", mode="inner")
    def greet(self, name: str = "stranger") -> Any:
        return Span(B(f"Hello, {name or 'stranger'}!"), f" The count is {self.count}.")


use_datastar_attrs()  # data_on_click=... renders data-on:click, as Datastar 1.0 reads it
sm = StarModel(entities=[Counter], base_path="/sm", secret_key=os.environ.get("STARMODEL_SECRET_KEY", "dev-only"))
app = FastHTML(
    hdrs=[NotStr(datastar_script())],
    default_hdrs=False,
    secret_key=os.environ.get("FASTHTML_SECRET_KEY", "dev-only"),
    on_shutdown=[sm.aclose],
)
app.mount("/sm", sm)


@app.route("/")
def index() -> Any:
    signals = json.dumps({"amount": "1", "name": "", "msg": ""})
    return Title("StarModel on FastHTML"), Main(
        NotStr(Counter.holder()),
        H1("Count: ", Span("0", id="count", data_text=Counter.signal.count)),
        Input(id="amount", data_bind="amount"),
        Button("Add", id="add", data_on_click=f"$msg = ''; {Counter.increment()}"),
        P(
            Input(id="name", data_bind="name", placeholder="your name"),
            Button("Greet", id="greet", data_on_click=Counter.greet()),
        ),
        Div(id="greeting"),
        P(id="error", data_text="$msg", style="color: crimson"),
        data_signals=signals,
        data_on_datastar_fetch=SHOW_ERRORS,
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
