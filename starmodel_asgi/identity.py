"""Who is calling: the app's own signed session cookie, and the user hook for ``scope="user"``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any


class SessionSigner:
    """Signs session ids with HMAC-SHA256; a value that does not verify is no session at all."""

    def __init__(self, secret_key: str | bytes, cache_size: int = 10_000) -> None:
        self._key = secret_key.encode() if isinstance(secret_key, str) else secret_key
        self._verified: dict[str, str] = {}  # cookie value -> session id, already checked
        self._cache_size = cache_size

    def _signature(self, session_id: str) -> str:
        digest = hmac.new(self._key, session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, session_id: str) -> str:
        return f"{session_id}.{self._signature(session_id)}"

    def unsign(self, value: str | None) -> str | None:
        if not value or "." not in value:
            return None
        known = self._verified.get(value)
        if known is not None:
            return known
        session_id, _, signature = value.rpartition(".")
        if not (session_id and hmac.compare_digest(signature, self._signature(session_id))):
            return None
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified[value] = session_id
        return session_id

    @staticmethod
    def new_session_id() -> str:
        return secrets.token_urlsafe(24)


def default_user(scope: Mapping[str, Any]) -> str | None:
    """The user id from ``scope["user"]`` as host auth middleware sets it (Starlette's
    ``AuthenticationMiddleware``, Django's ``AuthMiddleware`` via ``contrib.django``, or a plain
    string). Unauthenticated users are no user."""
    user = scope.get("user")
    if user is None:
        return None
    if isinstance(user, str):
        return user or None
    if not getattr(user, "is_authenticated", True):
        return None
    for attr in ("identity", "pk", "id", "username"):  # never display_name: two users may share one
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:  # starlette's BaseUser leaves identity to subclasses
            continue
        if value not in (None, ""):
            return str(value)
    raise TypeError(
        f"{type(user).__name__} has no identity, pk, id or username to key scope='user' entities by: "
        "give it one, or pass StarModel(get_user=...)"
    )
