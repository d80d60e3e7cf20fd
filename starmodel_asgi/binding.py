"""From a request to an event's arguments and an instance's client-writable fields, validated,
with readable messages."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from starmodel_asgi.errors import invalid
from starmodel_asgi.events import EventDescriptor, sequence_names
from starmodel_asgi.messages import readable_errors
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.values import EventRequest


def client_values(spec: EntitySpec, request: EventRequest) -> dict[str, Any]:
    """The entity's namespace in the request's signals (``{"counter": {...}}``). For a record's
    event, nothing when the namespace holds another record (its ``id`` differs): on a page
    listing many records, one record's events must not take another's values."""
    namespace = request.signals.get(spec.name)
    if not isinstance(namespace, dict):
        return {}
    if spec.is_record and "id" in namespace and "id" in request.path_params:
        return namespace if namespace["id"] == request.path_params["id"] else {}
    return namespace


def one_or_all(values: Mapping[str, list[Any]], sequences: Collection[str]) -> dict[str, Any]:
    """A query string's or form's values: every value for a list parameter, else the only one."""
    return {k: v if k in sequences or len(v) > 1 else v[0] for k, v in values.items()}


def sources(spec: EntitySpec, request: EventRequest, lists: Collection[str]) -> list[Mapping[str, Any]]:
    """Where arguments come from, first match wins: path, query string, form fields, top-level
    signals, then the entity's namespace, but only for names that are not server fields (the
    page's copy of a field mirrors saved state; it is never input) or are client-writable.
    ``lists`` names the parameters that take every value of a query or form name."""
    namespace = {k: v for k, v in client_values(spec, request).items() if k not in spec.fields or k in spec.writable}
    return [
        request.path_params,
        one_or_all(request.query, lists) if request.query else {},
        one_or_all(request.form, lists) if request.form else {},
        request.signals,
        namespace,
    ]


def pick(names: Collection[str], found: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Each name's value from the first source that has it."""
    data: dict[str, Any] = {}
    for name in names:
        for source in found:
            if name in source:
                data[name] = source[name]
                break
    return data


def bind_params(descriptor: EventDescriptor, spec: EntitySpec, request: EventRequest) -> dict[str, Any]:
    """The event's arguments, validated; a bad one is a 422 naming it in a sentence. A parameter
    typed as a Pydantic model that no value names is built from the values named like the
    model's fields (a whole form in one parameter); its errors are keyed by those names."""
    model = descriptor.params_model
    if request.query and (unknown := request.query.keys() - descriptor.accepts):
        takes = ", ".join(sorted(descriptor.accepts)) or "none"
        event = f"{spec.entity.__name__}.{descriptor.info.name}"
        raise invalid(spec.name, dict.fromkeys(sorted(unknown), f"{event} has no such parameter (it takes: {takes})"))
    kwargs: dict[str, Any] = {}
    if descriptor.param_names:
        data = pick(descriptor.param_names, sources(spec, request, descriptor.sequence_params))
        for name, form in descriptor.form_models.items():
            if name not in data:
                names = [field.alias or key for key, field in form.model_fields.items()]
                data[name] = pick(names, sources(spec, request, sequence_names(form)))
        try:
            kwargs = dict(model.__pydantic_validator__.validate_python(data).__dict__)
        except ValidationError as exc:
            raise invalid(spec.name, readable_errors(exc, model, descriptor.form_models)) from None
    for name in descriptor.injected.request:
        kwargs[name] = request
    for name in descriptor.injected.host_request:
        kwargs[name] = request.raw
    for name in descriptor.injected.signals:
        kwargs[name] = request.signals
    for name in descriptor.injected.depends:
        kwargs[name] = request.services[name]
    return kwargs


def client_writes(spec: EntitySpec, request: EventRequest, *, creating: bool = False) -> dict[str, Any]:
    """The client-writable fields the page sent in the entity's namespace (for a new record, also
    as form fields or top-level JSON, like an event's arguments)."""
    values = pick(spec.writable, sources(spec, request, ())) if creating else client_values(spec, request)
    return {name: values[name] for name in spec.writable & values.keys()}


def apply_client_writes(spec: EntitySpec, instance: BaseModel, request: EventRequest) -> None:
    """Sets the client-writable fields the page sent; each bad value is a 422 naming it."""
    set_fields(spec, instance, client_writes(spec, request))


def set_fields(spec: EntitySpec, instance: BaseModel, values: dict[str, Any]) -> None:
    """Sets each of ``values`` on ``instance``, validated as assigned; the bad ones are one 422
    naming each."""
    errors: dict[str, str] = {}
    for name, value in values.items():
        try:
            setattr(instance, name, value)
        except ValidationError as exc:
            errors.update(readable_errors(exc, type(instance)))
    if errors:
        raise invalid(spec.name, errors)


def client_instance(spec: EntitySpec, request: EventRequest | None) -> BaseModel:
    """A ``store="client"`` instance: the state the page sent, validated like any input."""
    values = client_values(spec, request) if request is not None else {}
    public = spec.public - {"id"}
    model = spec.entity
    try:
        return model.model_validate({k: v for k, v in values.items() if k in public})
    except ValidationError as exc:
        raise invalid(spec.name, readable_errors(exc, model)) from None
