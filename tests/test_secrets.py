"""Secrets: key rotation for the session cookie, and no random key in production."""

from __future__ import annotations

import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR

pytestmark = pytest.mark.anyio


class Visits(Entity):
    count: int = 0

    @event
    def visit(self) -> None:
        self.count += 1


async def visit(sm: StarModel, cookies: httpx.Cookies) -> httpx.Response:
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t", cookies=cookies) as client:
        response = await client.post("/visits/visit", headers={"Accept": "application/json"})
        cookies.update(response.cookies)
        return response


async def test_rotated_keys_keep_old_sessions_and_sign_new_ones_with_the_first_key() -> None:
    old = StarModel([Visits], secret_key="old-key")
    cookies = httpx.Cookies()
    assert (await visit(old, cookies)).json() == {"count": 1}
    signed_by_old = cookies["sm_session"]

    rotated = StarModel([Visits], secret_key=["new-key", "old-key"], stores=old._stores)
    assert (await visit(rotated, cookies)).json() == {"count": 2}  # the old cookie still verifies
    assert rotated.sessions.signer.unsign(signed_by_old) is not None
    # ... and its answer signs the same session again with the new key
    assert cookies["sm_session"] != signed_by_old
    assert rotated.sessions.signer.unsign(cookies["sm_session"]) == rotated.sessions.signer.unsign(signed_by_old)

    fresh = httpx.Cookies()
    await visit(rotated, fresh)
    only_new = StarModel([Visits], secret_key="new-key", stores=old._stores)
    assert only_new.sessions.signer.unsign(fresh["sm_session"]) is not None  # new cookies: first key
    assert only_new.sessions.signer.unsign(signed_by_old) is None  # the old key, once dropped, is gone
    # a visitor who came back during the rotation keeps the session once the old key is dropped
    assert (await visit(only_new, cookies)).json() == {"count": 3}


async def test_a_forged_or_tampered_cookie_is_no_session() -> None:
    sm = StarModel([Visits], secret_key="key")
    signer = sm.sessions.signer
    good = signer.sign("abc")
    assert signer.unsign(good) == "abc"
    for bad in (good[:-1] + ("A" if good[-1] != "A" else "B"), "abc.", ".sig", "abc", "", "x" * 5000, "é.é"):
        assert signer.unsign(bad) is None, bad


def test_production_refuses_to_start_without_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STARMODEL_SECRET_KEY", raising=False)
    monkeypatch.setenv("STARMODEL_ENV", "production")
    with pytest.raises(RuntimeError, match="secret_key in production"):
        StarModel([Visits])
    monkeypatch.setenv("STARMODEL_SECRET_KEY", "from-the-environment")
    StarModel([Visits])  # a key from the environment is enough


def test_without_a_key_outside_production_it_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("STARMODEL_SECRET_KEY", raising=False)
    monkeypatch.delenv("STARMODEL_ENV", raising=False)
    StarModel([Visits])
    assert "no secret_key" in caplog.text


@pytest.mark.parametrize("key", ["", [], ["new", ""]])
def test_an_empty_key_is_refused_when_the_app_is_built(key: object) -> None:
    with pytest.raises(ValueError, match="secret_key"):
        StarModel([Visits], secret_key=key)  # type: ignore[arg-type]


async def test_datastar_requests_work_with_rotated_keys() -> None:
    sm = StarModel([Visits], secret_key=["a", "b"])
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        first = await client.post("/visits/visit", headers=DATASTAR)
        second = await client.post("/visits/visit", headers=DATASTAR)
        assert '"count":2' in second.text and first.status_code == 200
