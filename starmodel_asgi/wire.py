"""The live wire: the channels changes are published on and what their messages say. Writers
(the unit of work) and readers (live streams, live lists, presence) both import it from here."""

from __future__ import annotations

import json
import uuid

from starmodel_asgi.spec import EntitySpec

#: Published when a record is deleted; no field can be named ``_deleted`` (Pydantic keeps it private).
DELETED = json.dumps({"_deleted": True})


def channel_name(spec: EntitySpec, key: str) -> str:
    """One instance's channel: each message is its new stored state as JSON, or ``DELETED``."""
    return f"sm:{spec.name}:{key}"


def list_channel(spec: EntitySpec) -> str:
    """Where a record entity's live lists hear that one of its records was created, changed or
    deleted (each message is a fresh token: the lists re-read their window)."""
    return f"sm:{spec.name}"


def list_token() -> str:
    return uuid.uuid4().hex


def viewers_channel(channel: str) -> str:
    """Where workers tell each other how many streams of ``channel`` they hold open."""
    return f"sm-viewers:{channel}"


#: Where each worker says, every presence interval, its viewer counts of all the channels it
#: watches (a census: it repairs lost notes on ``viewers_channel`` and shows the worker alive).
CENSUS_CHANNEL = "sm-viewers-census"
