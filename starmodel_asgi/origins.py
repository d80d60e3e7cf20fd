"""The cross-site check: a request that may change state must come from this site, a trusted
origin, or a client no other site can make a browser imitate."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from urllib.parse import urlsplit

from starmodel_asgi.errors import EventError
from starmodel_asgi.incoming import JSON_TYPES, SIMPLE_TYPES, content_type
from starmodel_asgi.values import is_datastar

#: Methods that change nothing: they skip the check (unless the route changes state anyway).
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def check_origin(headers: Mapping[str, str], trusted_origins: Collection[str], scheme: str = "http") -> None:
    """Refuses (403) a request that may change state and comes from another site, as Django's
    CSRF check does without a token. Datastar's header or a JSON body cannot be sent cross-site
    without a CORS preflight, which this app never grants: those pass. Otherwise (a plain form or
    link) the ``Origin`` must be this site (scheme and host) or a trusted origin; without
    ``Origin``, a ``Sec-Fetch-Site`` other than same-origin is refused, and the ``Referer`` must be
    this site or trusted (required for a form over https, where browsers always send one)."""
    if is_datastar(headers):
        return
    if content_type(headers) in JSON_TYPES:
        return
    own = f"{scheme}://{headers.get('host', '')}"
    origin = headers.get("origin")
    if origin is not None:
        if _same(origin, own, trusted_origins):
            return
        raise EventError(403, "Cross-site request refused (Origin)")
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise EventError(403, "Cross-site request refused (Sec-Fetch-Site)")
    referer = headers.get("referer")
    if referer is None:
        # a form a browser posts over https carries an Origin or a Referer; a client that sends
        # neither and no form is not a browser, and no browser can be made to send it
        if scheme == "https" and content_type(headers) in SIMPLE_TYPES:
            raise EventError(403, "Cross-site request refused (no Referer over https)")
        return
    if not _same(referer, own, trusted_origins):
        raise EventError(403, "Cross-site request refused (Referer)")


def _same(url: str, own: str, trusted_origins: Collection[str]) -> bool:
    """Whether ``url`` (an Origin or a Referer) is of this site, scheme included, or trusted (a
    malformed one is not)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    return origin == own.lower() or origin in trusted_origins


def trusted(origins: Iterable[str]) -> frozenset[str]:
    """``trusted_origins``, checked: each a scheme and a host (``https://app.example.com``)."""
    checked = set()
    for origin in origins:
        parts = urlsplit(origin.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ValueError(f"{origin!r} is not an origin like 'https://app.example.com'")
        checked.add(f"{parts.scheme}://{parts.netloc}".lower())
    return frozenset(checked)
