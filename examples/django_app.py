"""StarModel served by a Django project's ASGI application: a counter, an event answering HTML,
errors on the page. One file, so settings are configured here; a real project keeps them in
settings.py and puts the last lines in its asgi.py.

    pip install -e ".[django,demo]" && python examples/django_app.py      # http://127.0.0.1:8000
"""

from __future__ import annotations

import html
import os

import uvicorn
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.contrib.django import mount
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


def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>StarModel on Django</title>{datastar_script()}</head>
<body data-signals='{{"amount": "1", "name": "", "msg": ""}}' data-on:datastar-fetch="{SHOW_ERRORS}">
  {Counter.holder()}
  <h1>Count: <span id="count" data-text="{Counter.signal.count}">0</span></h1>
  <input id="amount" data-bind:amount> <button id="add" data-on:click="$msg = ''; {Counter.increment()}">Add</button>
  <p><input id="name" data-bind:name placeholder="your name">
     <button id="greet" data-on:click="{Counter.greet()}">Greet</button></p>
  <div id="greeting"></div>
  <p id="error" data-text="$msg" style="color: crimson"></p>
</body></html>""")


urlpatterns = [path("", page)]

if not settings.configured:
    settings.configure(
        DEBUG=True,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "dev-only"),
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
    )

# asgi.py: Django answers everything but /sm. For scope="user" entities, with django.contrib.auth
# and sessions installed, add get_user=starmodel_asgi.contrib.django.django_user.
sm = StarModel(entities=[Counter], base_path="/sm", secret_key=os.environ.get("STARMODEL_SECRET_KEY", "dev-only"))
app = mount(get_asgi_application(), sm)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
