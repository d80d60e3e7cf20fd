"""DESIGN.md section 3, row by row, as a client sees it; runs under every host in tests/hosts.py."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import httpx
import pytest
from starlette.requests import Request

from starmodel_asgi import StarModel
from starmodel_asgi.testing import StreamingTransport
from tests.support.entities import ENTITIES
from tests.support.headers import DATASTAR, JSON
from tests.support.hosts import HOST_SESSIONS
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


@pytest.fixture
def sm() -> StarModel:
    return StarModel(entities=ENTITIES, secret_key="test-secret", get_user=user_from_header, max_body_size=10_000)


async def state(client: httpx.AsyncClient, entity: str = "counter") -> dict:
    r = await client.get(f"/{entity}", headers=JSON)
    assert r.status_code == 200, r.text
    return r.json()


# -- POST /{entity}/{event} -------------------------------------------------------------------


async def test_datastar_event_answers_sse_with_changed_signals(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/increment", headers=DATASTAR, json={"counter": {"count": 0}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert [e.event for e in events] == ["datastar-patch-signals"]
    assert events[0].signals == {"counter": {"count": 1}}


async def test_json_event_answers_public_state(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/increment?amount=3", headers=JSON)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"count": 3, "step": 1, "note": "", "tags": []}


async def test_state_persists_between_requests_of_one_session(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post("/counter/increment", headers=DATASTAR)
    assert (await state(client))["count"] == 3


async def test_async_event(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/add?amount=7", headers=DATASTAR)
    assert parse_sse(r.text)[0].signals == {"counter": {"count": 7}}


async def test_event_declaring_get_and_custom_path(client: httpx.AsyncClient) -> None:
    r = await client.get("/counter/peek", params={"datastar": '{"amount": 5}'}, headers=DATASTAR)
    assert r.status_code == 200
    (ev,) = parse_sse(r.text)
    assert ev.event == "datastar-patch-elements" and ev.elements == '<span id="peek">5</span>'
    r = await client.put("/counter/set-count?value=41", headers=JSON)
    assert r.status_code == 200 and r.json()["count"] == 41


async def test_no_change_sends_no_signals(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/greet", headers=DATASTAR, json={"name": "ada"})
    assert [e.event for e in parse_sse(r.text)] == ["datastar-patch-elements"]


# -- HTML answers -------------------------------------------------------------------------------


async def test_returned_html_lands_at_selector_with_mode(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/greet", headers=DATASTAR, json={"name": "ada"})
    (ev,) = parse_sse(r.text)
    assert ev.event == "datastar-patch-elements"
    assert ev.get("selector") == "#out" and ev.get("mode") == "inner"
    assert ev.elements == "<b>hello ada</b>"


async def test_objects_with_dunder_html_are_html(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/fragment", headers=DATASTAR)
    events = parse_sse(r.text)
    assert [e.event for e in events] == ["datastar-patch-signals", "datastar-patch-elements"]
    assert events[1].elements == '<div id="frag">fragment</div>'
    assert events[1].get("selector") is None  # morphs by id


async def test_several_elements_each_with_its_target(client: httpx.AsyncClient) -> None:
    events = parse_sse((await client.post("/counter/two_elements", headers=DATASTAR)).text)
    expected = [('<li id="a">a</li>', "append"), ('<li id="b">b</li>', "append")]
    assert [(e.elements, e.get("mode")) for e in events] == expected


async def test_non_html_return_is_a_server_error(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/not_html", headers=JSON)
    assert r.status_code == 500


# -- generators ----------------------------------------------------------------------------------


async def test_async_generator_streams_every_yield(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/progress", headers=DATASTAR)
    events = parse_sse(r.text)
    assert [e.event for e in events] == ["datastar-patch-signals", "datastar-patch-elements"] * 3
    assert [e.signals["counter"]["count"] for e in events[::2]] == [1, 2, 3]
    assert [e.elements for e in events[1::2]] == [f'<p id="progress">{i}</p>' for i in range(3)]
    assert (await state(client))["count"] == 3


async def test_sync_generator_streams_every_yield(client: httpx.AsyncClient) -> None:
    events = parse_sse((await client.post("/counter/sync_progress", headers=DATASTAR)).text)
    assert [e.signals for e in events] == [{"counter": {"count": 10}}, {"counter": {"count": 20}}]


async def test_generator_failing_midway_saves_nothing_and_resets_the_page(client: httpx.AsyncClient) -> None:
    await client.post("/counter/increment?amount=5", headers=JSON)
    r = await client.post("/counter/half_done", headers=DATASTAR)
    assert r.status_code == 200  # the stream had started
    events = parse_sse(r.text)
    assert events[0].signals == {"counter": {"count": 6}}  # the first step was streamed...
    assert "_error" in events[-1].signals["counter"]
    assert "second step broke" not in r.text
    assert merged_signals(events[:-1])["counter"]["count"] == 5  # ...and undone on the page
    assert (await state(client))["count"] == 5  # nothing was saved


async def test_generator_failing_midway_json_is_500(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/half_done", headers=JSON)
    assert r.status_code == 500
    assert (await state(client))["count"] == 0


async def test_changes_after_the_last_yield_are_saved_and_sent(client: httpx.AsyncClient) -> None:
    events = parse_sse((await client.post("/loader/load", headers=DATASTAR)).text)
    assert merged_signals(events) == {"loader": {"status": "done", "rows": 3}}
    assert events[-1].signals == {"loader": {"status": "done", "rows": 3}}
    assert await state(client, "loader") == {"status": "done", "rows": 3}


async def test_a_generator_that_never_yields_still_answers_and_saves(client: httpx.AsyncClient) -> None:
    r = await client.post("/loader/silent", headers=DATASTAR)
    assert parse_sse(r.text)[0].signals == {"loader": {"rows": 9}}
    assert (await client.post("/loader/silent", headers=JSON)).json() == {"status": "idle", "rows": 9}


# -- GET /{entity} ---------------------------------------------------------------------------------


async def test_get_state_as_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/counter", headers=JSON)
    assert r.status_code == 200
    assert r.json() == {"count": 0, "step": 1, "note": "", "tags": []}


async def test_get_state_as_datastar_patches_every_public_signal(client: httpx.AsyncClient) -> None:
    await client.post("/counter/increment", headers=DATASTAR)
    r = await client.get("/counter", headers=DATASTAR)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert merged_signals(parse_sse(r.text)) == {"counter": {"count": 1, "step": 1, "note": "", "tags": []}}


async def test_server_only_fields_and_ids_never_reach_the_client(client: httpx.AsyncClient) -> None:
    for r in [
        await client.get("/counter", headers=JSON),
        await client.get("/counter", headers=DATASTAR),
        await client.post("/counter/increment", headers=DATASTAR),
    ]:
        assert "s3cret" not in r.text and "secret" not in r.text
        assert '"id"' not in r.text


# -- parameter binding -----------------------------------------------------------------------------


async def test_query_values_are_coerced(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/add?amount=12", headers=JSON)
    assert r.json()["count"] == 12


async def test_binding_order_query_then_top_level_then_namespace(client: httpx.AsyncClient) -> None:
    body = {"counter": {"amount": 2}, "amount": 3}
    assert (await client.post("/counter/add?amount=1", headers=JSON, json=body)).json()["count"] == 1
    assert (await client.post("/counter/add", headers=JSON, json=body)).json()["count"] == 4  # 1 + 3
    ns_only = {"counter": {"amount": 2}}
    assert (await client.post("/counter/add", headers=JSON, json=ns_only)).json()["count"] == 6  # + 2
    assert (await client.post("/counter/add", headers=JSON, json={"amount": "4"})).json()["count"] == 10


async def test_list_parameter_from_repeated_query_and_from_signals(client: httpx.AsyncClient) -> None:
    assert (await client.post("/counter/tag?tags=a&tags=b", headers=JSON)).json()["tags"] == ["a", "b"]
    assert (await client.post("/counter/tag?tags=solo", headers=JSON)).json()["tags"] == ["solo"]
    assert (await client.post("/counter/tag", headers=JSON, json={"tags": ["c"]})).json()["tags"] == ["c"]


async def test_request_and_signals_are_injected_by_type(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/info?amount=2", headers=DATASTAR, json={"counter": {"count": 0}, "x": 1})
    assert parse_sse(r.text)[0].elements == "<p id=\"info\">POST ['counter', 'x'] 2</p>"


async def test_a_host_request_parameter_receives_the_starlette_request(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/host_info", headers={**DATASTAR, "x-probe": "hello"})
    assert parse_sse(r.text)[0].elements == '<p id="host">hello Request</p>'


# -- errors ------------------------------------------------------------------------------------------


async def test_unknown_entity_is_404(client: httpx.AsyncClient) -> None:
    for r in [await client.post("/nope/increment", headers=JSON), await client.get("/nope", headers=JSON)]:
        assert r.status_code == 404
        assert "nope" in r.json()["error"]


async def test_unknown_event_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/explode", headers=JSON)
    assert r.status_code == 404 and "explode" in r.json()["error"]


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/counter/a/b/c", headers=JSON)).status_code == 404
    assert (await client.post("/counter/1/increment", headers=JSON)).status_code == 404


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    r = await client.get("/counter/increment", headers=JSON)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await client.post("/counter/peek", headers=JSON)
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = await client.delete("/counter", headers=JSON)
    assert r.status_code == 405
    assert (await state(client))["count"] == 0


async def test_invalid_parameter_is_422_naming_it_and_changes_nothing(client: httpx.AsyncClient) -> None:
    await client.post("/counter/increment", headers=JSON)
    r = await client.post("/counter/increment?amount=lots", headers=JSON)
    assert r.status_code == 422
    assert "amount" in r.json()["errors"]
    assert "amount" in r.json()["error"]
    r = await client.post("/counter/add", headers=JSON)  # required and missing
    assert r.status_code == 422 and "amount" in r.json()["errors"]
    assert (await state(client))["count"] == 1


async def test_invalid_parameter_for_datastar_gives_an_error_signal(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/increment?amount=lots", headers=DATASTAR)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("text/event-stream")
    (ev,) = parse_sse(r.text)
    error = ev.signals["counter"]
    assert "amount" in error["_error"] and "amount" in error["_errors"]


async def test_the_next_success_clears_the_error_signals(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/increment?amount=lots", headers=DATASTAR)
    assert parse_sse(r.text)[0].signals["counter"]["_errors"]["amount"] == "Amount must be a whole number."
    r = await client.post("/counter/increment", headers=DATASTAR)
    signals = merged_signals(parse_sse(r.text))["counter"]
    assert signals["count"] == 1 and signals["_error"] == "" and signals["_errors"]["amount"] == ""
    r = await client.post("/counter/increment", headers=DATASTAR)
    assert [e.signals for e in parse_sse(r.text)] == [{"counter": {"count": 2}}]


async def test_datastar_errors_can_be_answered_200_so_the_page_applies_them() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k", datastar_error_status=200)
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        r = await c.post("/counter/increment?amount=lots", headers=DATASTAR)
        assert r.status_code == 200
        assert "amount" in parse_sse(r.text)[0].signals["counter"]["_errors"]
        assert (await c.post("/counter/increment?amount=lots", headers=JSON)).status_code == 422
        assert (await state(c))["count"] == 0


async def test_malformed_json_is_400_and_changes_nothing(client: httpx.AsyncClient) -> None:
    bad = {**DATASTAR, "Content-Type": "application/json"}
    r = await client.post("/counter/increment", headers=bad, content=b'{"counter": ')
    assert r.status_code == 400
    r = await client.post("/counter/increment", headers={**JSON, "Content-Type": "application/json"}, content=b"[1, 2]")
    assert r.status_code == 400
    r = await client.get("/counter/peek", params={"datastar": "{oops"}, headers=JSON)
    assert r.status_code == 400
    assert (await state(client))["count"] == 0


async def test_deeply_nested_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = await client.post("/counter/increment", headers={**DATASTAR, "Content-Type": "application/json"}, content=deep)
    assert r.status_code in (400, 413)
    small_deep = "[" * 3000 + "]" * 3000
    r = await client.get("/counter/peek", params={"datastar": small_deep}, headers=JSON)
    assert r.status_code == 400
    assert (await state(client))["count"] == 0


async def test_oversized_body_is_413_and_changes_nothing(client: httpx.AsyncClient) -> None:
    big = b'{"pad": "' + b"x" * 20_000 + b'"}'
    r = await client.post("/counter/increment", headers={**JSON, "Content-Type": "application/json"}, content=big)
    assert r.status_code == 413

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(30):
            yield b"x" * 1000

    r = await client.post("/counter/increment", headers={**JSON, "Content-Type": "application/json"}, content=chunks())
    assert r.status_code == 413
    assert (await state(client))["count"] == 0


async def test_exception_in_event_is_500_without_traceback_and_rolls_back(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await client.post("/counter/increment", headers=JSON)
    with caplog.at_level(logging.ERROR, logger="starmodel_asgi"):
        r = await client.post("/counter/fail", headers=JSON)
    assert r.status_code == 500
    assert "melted" not in r.text and "Traceback" not in r.text
    assert "counter.fail" in r.json()["error"]
    assert any(rec.exc_info and "database melted" in str(rec.exc_info[1]) for rec in caplog.records)
    assert (await state(client))["count"] == 1


async def test_exception_in_event_for_datastar_is_500_with_error_signal(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/fail", headers=DATASTAR)
    assert r.status_code == 500
    assert "melted" not in r.text
    assert "_error" in parse_sse(r.text)[0].signals["counter"]
    assert (await state(client))["count"] == 0


async def test_invalid_assignment_inside_event_is_a_500_not_the_clients_fault(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/bad_assign?value=abc", headers=JSON)
    assert r.status_code == 500
    assert (await state(client))["count"] == 0


async def test_nan_and_infinity_are_invalid_input(client: httpx.AsyncClient) -> None:
    await client.post("/counter/increment", headers=JSON)
    for value in ["inf", "-Infinity", "nan"]:
        r = await client.post(f"/counter/scale?factor={value}", headers=JSON)
        assert r.status_code == 422 and "factor" in r.json()["errors"]
    r = await client.post("/counter/scale", headers=DATASTAR, content=b'{"factor": NaN}')
    assert r.status_code == 422 and "NaN" not in r.text
    assert (await client.post("/counter/scale?factor=2.5", headers=JSON)).json()["count"] == 2


async def test_cross_site_form_post_is_refused(client: httpx.AsyncClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await client.post("/counter/increment", headers={**form, "Origin": "https://evil.example"}, content=b"amount=5")
    assert r.status_code == 403
    r = await client.post("/counter/increment", headers={**form, "Sec-Fetch-Site": "cross-site"}, content=b"amount=5")
    assert r.status_code == 403
    assert (await state(client))["count"] == 0


async def test_cross_site_get_event_is_refused_but_reads_are_not(client: httpx.AsyncClient) -> None:
    for headers in [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}]:
        assert (await client.get("/counter/sneaky", headers=headers)).status_code == 403
        assert (await client.get("/counter", headers={**JSON, **headers})).status_code == 200
    same_site = {**DATASTAR, "Sec-Fetch-Site": "same-origin"}
    assert (await client.get("/counter/sneaky", headers=same_site)).status_code == 200
    assert (await state(client))["count"] == 1


async def test_same_origin_form_post_is_allowed(client: httpx.AsyncClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://testserver", **JSON}
    r = await client.post("/counter/increment", headers=form, content=b"amount=5")
    assert r.status_code == 200 and r.json()["count"] == 5


async def test_datastar_and_json_requests_pass_the_origin_check(client: httpx.AsyncClient) -> None:
    evil = {"Origin": "https://evil.example"}
    assert (await client.post("/counter/increment", headers={**DATASTAR, **evil})).status_code == 200
    assert (await client.post("/counter/increment", headers={**JSON, **evil}, json={})).status_code == 200


# -- what clients may write ------------------------------------------------------------------------


async def test_clients_cannot_write_fields_or_ids_unless_marked(client: httpx.AsyncClient) -> None:
    signals = {"counter": {"count": 500, "step": 9, "secret": "hacked", "id": "other", "note": "mine"}}
    r = await client.post("/counter/echo_note", headers=DATASTAR, json=signals)
    events = parse_sse(r.text)
    assert events[-1].elements == '<p id="note">mine</p>'
    # the page is corrected back to the server's truth for fields it may not write
    assert merged_signals(events) == {"counter": {"count": 0, "step": 1}}
    assert await state(client) == {"count": 0, "step": 1, "note": "mine", "tags": []}
    r = await client.post("/counter/step_up", headers=DATASTAR, json=signals)
    assert (await state(client))["count"] == 1


async def test_invalid_client_written_field_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/echo_note", headers=JSON, json={"counter": {"note": {"not": "a string"}}})
    assert r.status_code == 422 and "note" in r.json()["errors"]


# -- identity and scopes ------------------------------------------------------------------------------


async def test_sessions_are_isolated(make_client: Callable[[StarModel], httpx.AsyncClient], sm: StarModel) -> None:
    async with make_client(sm) as alice, make_client(sm) as bob:
        await alice.post("/counter/increment?amount=5", headers=JSON)
        await bob.post("/counter/increment", headers=JSON)
        assert (await state(alice))["count"] == 5
        assert (await state(bob))["count"] == 1


async def test_app_issues_a_signed_http_only_session_cookie(client: httpx.AsyncClient, host: str) -> None:
    if host in HOST_SESSIONS:
        pytest.skip("the host's own session carries the app's session id (test_hosts.py)")
    r = await client.post("/counter/increment", headers=JSON)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("sm_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Max-Age=86400" in cookie
    r = await client.post("/counter/increment", headers=JSON)
    assert r.headers["set-cookie"].split(";")[0] == cookie.split(";")[0]  # renewed, same session
    assert (await state(client))["count"] == 2


async def test_tampered_cookie_is_a_new_session(
    make_client: Callable[[StarModel], httpx.AsyncClient], sm: StarModel, host: str
) -> None:
    if host in HOST_SESSIONS:
        pytest.skip("the host's own session carries the app's session id (test_hosts.py)")
    async with make_client(sm) as alice:
        await alice.post("/counter/increment?amount=5", headers=JSON)
        value = alice.cookies["sm_session"]
        sid, _, sig = value.rpartition(".")
    forged = [f"{sid}.{'A' * len(sig)}", f"{sid}x.{sig}", sid, "garbage"]
    for bad in forged:
        async with make_client(sm) as mallory:
            mallory.cookies.set("sm_session", bad)
            r = await mallory.get("/counter", headers=JSON)
            assert r.json()["count"] == 0
            assert "set-cookie" in r.headers  # a new session was issued


async def test_global_scope_is_shared(make_client: Callable[[StarModel], httpx.AsyncClient], sm: StarModel) -> None:
    async with make_client(sm) as a, make_client(sm) as b:
        await a.post("/shared/bump", headers=JSON)
        await b.post("/shared/bump", headers=JSON)
        assert (await state(a, "shared"))["total"] == 2


async def test_user_scope_follows_the_user_across_sessions(
    make_client: Callable[[StarModel], httpx.AsyncClient], sm: StarModel
) -> None:
    async with make_client(sm) as laptop, make_client(sm) as phone, make_client(sm) as other:
        await laptop.post("/profile/visit", headers={**JSON, "x-user": "ada"})
        await phone.post("/profile/visit", headers={**JSON, "x-user": "ada"})
        await other.post("/profile/visit", headers={**JSON, "x-user": "bob"})
        r = await other.get("/profile", headers={**JSON, "x-user": "ada"})
        assert r.json() == {"visits": 2}
        assert (await other.get("/profile", headers={**JSON, "x-user": "bob"})).json() == {"visits": 1}


async def test_user_scope_without_a_user_is_401(client: httpx.AsyncClient) -> None:
    assert (await client.post("/profile/visit", headers=JSON)).status_code == 401
    assert (await client.get("/profile", headers=JSON)).status_code == 401


# -- serialisation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["bump", "bump_sync"])
async def test_a_thousand_concurrent_increments_give_exactly_a_thousand(client: httpx.AsyncClient, event: str) -> None:
    async def bump() -> None:
        r = await client.post(f"/shared/{event}", headers=DATASTAR)
        assert r.status_code == 200

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(bump)
    assert (await state(client, "shared"))["total"] == 1000
