"""The cross-site check for plain forms and links (no Datastar header, no JSON), as Django's CSRF
check decides without a token: Origin with its scheme, then Sec-Fetch-Site, then Referer."""

from __future__ import annotations

import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport

pytestmark = pytest.mark.anyio

FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}


class Tally(Entity):
    model_config = {"scope": "global"}
    count: int = 0

    @event
    def add(self) -> None:
        self.count += 1


CASES = [
    # (scheme of the request, headers, allowed)
    ("http", {"Origin": "http://site.test"}, True),
    ("https", {"Origin": "https://site.test"}, True),
    ("https", {"Origin": "http://site.test"}, False),  # the scheme is compared, as Django does
    ("http", {"Origin": "https://evil.test"}, False),
    ("http", {"Origin": "null"}, False),
    ("http", {"Origin": "https://partner.test"}, True),  # trusted
    ("http", {"Sec-Fetch-Site": "same-origin"}, True),
    ("http", {"Sec-Fetch-Site": "none"}, True),  # typed in the address bar, a bookmark
    ("http", {"Sec-Fetch-Site": "same-site"}, False),  # a sibling subdomain may be someone else's
    ("http", {"Sec-Fetch-Site": "cross-site"}, False),
    ("http", {"Referer": "http://site.test/page"}, True),
    ("http", {"Referer": "https://evil.test/page"}, False),
    ("https", {"Referer": "http://site.test/page"}, False),  # an https site trusts no http page
    ("https", {"Referer": "https://partner.test/x"}, True),
    ("https", {}, False),  # a form over https: browsers send a Referer or an Origin, none is refused
    ("http", {}, True),  # over http a privacy setting may drop both
]


async def test_a_bodyless_post_from_a_non_browser_client_over_https_passes() -> None:
    """No form encoding, no Origin, no Referer: no browser sends that, so it forges nothing."""
    sm = StarModel([Tally], base_path="", secret_key="csrf")
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="https://site.test") as client:
        assert (await client.post("/tally/add", headers={"Accept": "application/json"})).status_code == 200


@pytest.mark.parametrize(("scheme", "headers", "allowed"), CASES)
async def test_a_plain_form_post_is_checked_like_django_does(
    scheme: str, headers: dict[str, str], allowed: bool
) -> None:
    sm = StarModel([Tally], base_path="", secret_key="csrf", trusted_origins=["https://partner.test"])
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url=f"{scheme}://site.test") as client:
        response = await client.post("/tally/add", headers={**FORM, **headers}, content=b"")
        assert response.status_code == (200 if allowed else 403), response.text
        assert (await sm.get(Tally)).count == (1 if allowed else 0)  # refused: nothing changed
        if not allowed:
            assert "Cross-site request refused" in response.json()["error"]


@pytest.mark.parametrize("origin", ["partner.test", "https://partner.test/path", "ftp://partner.test"])
def test_trusted_origins_are_checked_when_the_app_is_built(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin like"):
        StarModel([Tally], secret_key="csrf", trusted_origins=[origin])
