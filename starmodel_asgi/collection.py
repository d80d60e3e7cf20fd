"""Collection events: ``@event`` above ``@classmethod`` on a record entity, routed without an id
and run with the class, every ``request.app`` write it makes in one unit of work."""

from __future__ import annotations

from types import MethodType

from starmodel_asgi.binding import bind_params
from starmodel_asgi.dispatch import Dispatcher, call, retried
from starmodel_asgi.elements import to_elements
from starmodel_asgi.entity import entity_class
from starmodel_asgi.events import EventDescriptor
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.unit import Unit
from starmodel_asgi.values import EventRequest, Redirect, Update


async def run_collection(
    dispatcher: Dispatcher, spec: EntitySpec, descriptor: EventDescriptor, request: EventRequest
) -> Update:
    """The event called with the entity class, in a unit its ``request.app`` calls join (run
    again when a hold finds a record busy); its answer carries only what it returned: it has no
    instance, so no signals."""
    kwargs = bind_params(descriptor, spec, request)
    bound = MethodType(descriptor.func, entity_class(spec))

    async def once(unit: Unit) -> Update:
        result = await call(unit, descriptor, bound, kwargs)
        redirect = result.url if isinstance(result, Redirect) else None
        cleared = spec.no_errors if request.errors_shown else None
        update = Update(spec.name, {}, {}, to_elements(result, descriptor.info), redirect, cleared)
        await unit.commit()
        return update

    return await retried(dispatcher, spec, descriptor, request, once)
