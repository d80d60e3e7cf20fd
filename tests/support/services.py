"""The real services a test needs (PostgreSQL, Redis, Chromium), named by environment variables."""

from __future__ import annotations

import os

import pytest


def require(env: str, what: str) -> str:
    """The URL of a real service for a test, from the environment. Unset: the test skips with the
    reason, unless STARMODEL_REQUIRE_SERVICES=1 (as in CI), where it fails."""
    value = os.environ.get(env)
    if value:
        return value
    message = f"{what} tests need {env} set"
    if os.environ.get("STARMODEL_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (STARMODEL_REQUIRE_SERVICES=1)")
    pytest.skip(message)


async def drop_redis_keys(url: str, prefix: str) -> None:
    """Deletes a test's own Redis keys (everything under its unique ``prefix``)."""
    from redis.asyncio import Redis

    raw = Redis.from_url(url, decode_responses=True)
    try:
        keys = [k async for k in raw.scan_iter(match=f"{prefix}*")]
        if keys:
            await raw.delete(*keys)
    finally:
        await raw.aclose()
