"""Deployment settings from the environment (``STARMODEL_<NAME>``): code wins, a bad value fails
the build naming the variable, and going to several workers is configuration only."""

from __future__ import annotations

import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.broadcast.redis import RedisBroadcast
from starmodel_asgi.settings import settings


class Note(Entity):
    text: str = ""

    @event
    def write(self, text: str) -> None:
        self.text = text


def test_settings_come_from_the_environment_when_code_does_not_give_them(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "STARMODEL_BROADCAST_URL": "redis://127.0.0.1:1/0",
        "STARMODEL_SECRET_KEY": "new-key, old-key",
        "STARMODEL_SESSION_TTL": "3600",
        "STARMODEL_TRUSTED_ORIGINS": "https://a.example, https://b.example",
        "STARMODEL_MAX_BODY_SIZE": "2048",
        "STARMODEL_COMPRESS": "false",
        "STARMODEL_LIST_LIMIT": "20",
        "STARMODEL_KEEPALIVE": "5",
        "STARMODEL_PRESENCE_INTERVAL": "1.5",
        "STARMODEL_BODY_TIMEOUT": "12",
        "STARMODEL_SEND_TIMEOUT": "3",
        "STARMODEL_MAX_BACKGROUND": "2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sm = StarModel([Note])
    s = sm.settings
    assert isinstance(sm.broadcast, RedisBroadcast)
    assert s.secret_key == ["new-key", "old-key"]
    assert (s.session_ttl, s.max_body_size, s.compress, s.list_limit) == (3600.0, 2048, False, 20)
    assert (s.keepalive, s.presence_interval, s.body_timeout, s.send_timeout, s.max_background) == (5, 1.5, 12, 3, 2)
    assert s.trusted_origins == {"https://a.example", "https://b.example"}
    assert sm.endpoints.max_body_size == 2048 and sm.dispatcher.runs.most == 2

    given = StarModel([Note], session_ttl=None, list_limit=50, compress=None, broadcast_url="memory://")
    assert (given.settings.session_ttl, given.settings.list_limit, given.settings.compress) == (None, 50, None)
    assert not isinstance(given.broadcast, RedisBroadcast)  # code wins


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("STARMODEL_SESSION_TTL", "soon", "STARMODEL_SESSION_TTL='soon'"),
        ("STARMODEL_MAX_BODY_SIZE", "1MB", "STARMODEL_MAX_BODY_SIZE='1MB': must be a whole number >= 1"),
        ("STARMODEL_KEEPALIVE", "-1", "STARMODEL_KEEPALIVE='-1': must be a positive number of seconds"),
        ("STARMODEL_COMPRESS", "maybe", "STARMODEL_COMPRESS='maybe': must be true, false or auto"),
        (
            "STARMODEL_TRUSTED_ORIGINS",
            "a.example",
            "STARMODEL_TRUSTED_ORIGINS='a.example': 'a.example' is not an origin",
        ),
        ("STARMODEL_DATABASE_URL", "mysql://x/y", "STARMODEL_DATABASE_URL='mysql://x/y': must be a URL like"),
        ("STARMODEL_DATABASE_URL", "starmodel.db", "STARMODEL_DATABASE_URL='starmodel.db': must be a URL like"),
        ("STARMODEL_REDIS_URL", "http://x", "STARMODEL_REDIS_URL='http://x': must be a URL like redis://"),
        ("STARMODEL_BROADCAST_URL", "ftp://x", "STARMODEL_BROADCAST_URL='ftp://x': must be a URL like redis://"),
    ],
)
def test_a_bad_variable_fails_the_build_naming_it(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        settings({variable: value})


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("body_timeout", 0, "body_timeout=0: must be a positive number of seconds"),
        ("max_background", 0, "max_background=0: must be a whole number >= 1"),
        ("list_limit", "many", "list_limit='many': must be a whole number >= 1"),
    ],
)
def test_a_bad_argument_fails_the_build_naming_it(argument: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StarModel([Note], secret_key="k", **{argument: value})  # type: ignore[arg-type]
