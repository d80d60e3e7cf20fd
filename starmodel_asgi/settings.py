"""The settings a deployment changes, from code or from ``STARMODEL_<NAME>`` in the environment
(code wins), each checked when the app is built, naming the argument or variable at fault. Going
from one worker to several is then configuration only (``STARMODEL_BROADCAST_URL``, ...)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from starmodel_asgi.origins import trusted


class _Unset:
    """A setting not given in code: it comes from the environment, else its default."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

SchemaMode = Literal["add", "check"]
SCHEMA_MODES: tuple[SchemaMode, ...] = get_args(SchemaMode)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///starmodel.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _seconds(value: Any) -> float:
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError("must be a positive number of seconds")
    return seconds


def _seconds_or_none(value: Any) -> float | None:
    """Seconds, or ``None`` (``none`` or ``off`` in the environment): never."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return None
    return _seconds(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise ValueError("must be a whole number >= 1")
    number = int(value)
    if number < 1:
        raise ValueError("must be a whole number >= 1")
    return number


def _switch(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("", "auto"):
        return None
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true, false or auto")


def _metrics(value: Any) -> Any:
    """On or off, or the ``prometheus_client.CollectorRegistry`` to register them in."""
    if isinstance(value, bool | str):
        return bool(_switch(value))
    if not hasattr(value, "register"):
        raise ValueError("must be true, false or a prometheus_client CollectorRegistry")
    return value


def schema_mode(value: Any) -> SchemaMode:
    """``"add"`` or ``"check"``: what a SQL table missing the columns of new fields gets."""
    word = value.strip().lower() if isinstance(value, str) else value
    if word not in SCHEMA_MODES:
        raise ValueError('must be "add" (add missing columns) or "check" (refuse to serve, name the migration)')
    return word


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _url(schemes: tuple[str, ...], example: str) -> Callable[[Any], str]:
    """A URL whose scheme is one of ``schemes``."""

    def read(value: Any) -> str:
        url = _text(value)
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in schemes or not (rest or scheme == "memory"):
            raise ValueError(f"must be a URL like {example} (its scheme one of {', '.join(schemes)})")
        return url

    return read


def _trusted(value: Any) -> frozenset[str]:
    return trusted(origin for origin in _list(value) if origin)


def _list(value: Any) -> list[str]:
    """A comma-separated variable, or what the code gave."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


def _keys(value: Any) -> str | bytes | Sequence[str | bytes] | None:
    if isinstance(value, str):  # from the environment: comma-separated, newest first
        keys = _list(value)
        return keys[0] if len(keys) == 1 else keys
    return value  # type: ignore[no-any-return]


#: Each setting: its default, and how a value (from code, or the variable's text) is read.
SETTINGS: Mapping[str, tuple[Any, Callable[[Any], Any]]] = {
    "database_url": (
        DEFAULT_DATABASE_URL,
        _url(("sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg"), "postgresql+asyncpg://user@host/db"),
    ),
    "redis_url": (DEFAULT_REDIS_URL, _url(("redis", "rediss", "unix"), "redis://host:6379/0")),
    "broadcast_url": (
        "memory://",
        _url(
            ("memory", "redis", "rediss", "unix", "postgres", "postgresql", "postgresql+asyncpg"), "redis://host:6379/0"
        ),
    ),
    "secret_key": (None, _keys),
    "session_ttl": (24 * 3600.0, _seconds_or_none),
    "trusted_origins": (frozenset(), _trusted),
    "max_body_size": (1024 * 1024, _count),
    "compress": (None, _switch),
    "list_limit": (100, _count),
    "keepalive": (15.0, _seconds),
    "presence_interval": (2.0, _seconds),
    "body_timeout": (30.0, _seconds),
    "send_timeout": (10.0, _seconds),
    "max_background": (4, _count),
    "slow_event": (1.0, _seconds_or_none),
    "health_timeout": (1.0, _seconds),
    "metrics": (False, _metrics),
    "tracing": (None, _switch),
    "schema": ("add", schema_mode),
}


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    broadcast_url: str
    secret_key: str | bytes | Sequence[str | bytes] | None
    session_ttl: float | None
    trusted_origins: frozenset[str]
    max_body_size: int
    compress: bool | None
    list_limit: int
    keepalive: float
    presence_interval: float
    body_timeout: float
    send_timeout: float
    max_background: int
    slow_event: float | None
    health_timeout: float
    metrics: Any  # False, True or a CollectorRegistry
    tracing: bool | None
    schema: SchemaMode


#: Settings whose ``None`` in code means "not given" (the others' ``None`` means something: no
#: session expiry, compression if the extra is installed).
NONE_IS_UNSET = frozenset({"database_url", "redis_url", "broadcast_url", "secret_key"})


def settings(environ: Mapping[str, str] | None = None, **given: Any) -> Settings:
    """Each of ``SETTINGS``: as given in code, else from ``STARMODEL_<NAME>``, else its default;
    a bad value is a ``ValueError`` naming the argument or the variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (default, read) in SETTINGS.items():
        value = given.get(name, UNSET)
        if value is UNSET or (value is None and name in NONE_IS_UNSET):
            variable = f"STARMODEL_{name.upper()}"
            if variable not in environ:
                values[name] = default
                continue
            value, source = environ[variable], f"{variable}={environ[variable]!r}"
        else:
            source = f"{name}={value!r}"
        try:
            values[name] = read(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None
    return Settings(**values)
