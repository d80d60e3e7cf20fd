"""Typos in actions are named, not silently ignored: a parameter the event does not have (in the
builder, and over HTTP), a Datastar option that does not exist, an event parameter without a type;
and under mypy with ``starmodel_asgi.mypy_plugin``, a typo or a wrong type in a builder's call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON

pytestmark = pytest.mark.anyio


class Counter(Entity):
    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event
    def bump(self, step=2) -> None:  # type: ignore[no-untyped-def]  # the default gives its type: int
        self.count += step


async def test_a_parameter_the_event_does_not_have_is_a_422_naming_it() -> None:
    sm = StarModel([Counter], base_path="", secret_key="typo")
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        answer = await client.post("/counter/increment?amont=5", json={}, headers=JSON)
        assert answer.status_code == 422
        assert answer.json()["errors"] == {"amont": "Counter.increment has no such parameter (it takes: amount)"}
        assert (await client.get("/counter", headers=JSON)).json() == {"count": 0}  # nothing changed
        assert (await client.post("/counter/increment?amount=5", json={}, headers=JSON)).json() == {"count": 5}


async def test_an_unannotated_parameter_takes_its_defaults_type() -> None:
    sm = StarModel([Counter], base_path="", secret_key="typo")
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        assert (await client.post("/counter/bump?step=3", json={}, headers=JSON)).json() == {"count": 3}
        refused = await client.post("/counter/bump?step=two", json={}, headers=JSON)
        assert refused.status_code == 422 and "step" in refused.json()["errors"]


def test_the_builder_names_a_parameter_the_event_does_not_have() -> None:
    StarModel([Counter], secret_key="typo")
    assert Counter.increment(amount=2) == "@post('/sm/counter/increment?amount=2')"
    with pytest.raises(TypeError, match=r"increment\(\) has no parameter amont \(it takes: amount\)"):
        Counter.increment(amont=2)


def test_a_parameter_without_a_type_or_default_is_refused_when_the_app_is_built() -> None:
    class Loose(Entity):
        @event
        def go(self, where) -> None:  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(TypeError, match=r"@event go: parameter 'where' needs a type \(where: int, say\)"):
        StarModel([Loose], secret_key="typo")


TYPOS = """\
from typing import Annotated

from starmodel_asgi import Depends, Entity, EventRequest, Signals, event


def get_mailer() -> str:
    return "mailer"


class Counter(Entity):
    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event(method="GET")
    def look(
        self, request: EventRequest, signals: Signals, note: str, mailer: Annotated[str, Depends(get_mailer)]
    ) -> None:
        pass


fine: list[str] = [
    Counter.increment(amount=2),
    Counter.increment(),
    Counter.look(note="from the page or here"),
    Counter.increment("a-record-id", amount=3),
    str(Counter.increment),
    Counter.create_action(title="fields are checked when called"),
    Counter.delete_action("t1"),
]
typo = Counter.increment(amont=1)  # error
wrong_type = Counter.increment(amount="two")  # error
injected = Counter.look(request=None)  # error
wrong_id = Counter.delete_action(["t1"])  # error
"""


def test_mypy_strict_with_the_plugin_names_typos_wrong_types_and_injected_parameters(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(TYPOS)
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\nplugins = starmodel_asgi.mypy_plugin\n")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "shop.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    expected = [str(n) for n, line in enumerate(TYPOS.splitlines(), 1) if line.endswith("# error")]
    assert [line.split(":")[1] for line in errors] == expected, checked.stdout
    assert 'Unexpected keyword argument "amont"' in errors[0] and 'did you mean "amount"' in errors[0]
    assert 'incompatible type "str"; expected "int | None"' in errors[1]
    assert 'Unexpected keyword argument "request"' in errors[2]
    assert 'incompatible type "list[str]"; expected "str | int"' in errors[3]
