"""``GET /openapi.json``: every route of the app, each event's parameters as their Pydantic JSON
Schema, and the answers, as an OpenAPI 3.1 document for outside tools."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from pydantic_core import core_schema

from starmodel_asgi.query import filterable, scalar_type
from starmodel_asgi.spec import EntitySpec

REF = "#/components/schemas/{model}"
ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
        "status": {"type": "integer"},
    },
}
SSE = {"text/event-stream": {"schema": {"type": "string"}}}


class Schemas(GenerateJsonSchema):
    """Pydantic's JSON Schema, with uploaded files as binary strings."""

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> dict[str, Any]:
        return {"type": "string", "format": "binary"}

    def is_instance_schema(self, schema: core_schema.IsInstanceSchema) -> dict[str, Any]:
        return {"type": "string", "format": "binary"}


def openapi_json(specs: Collection[EntitySpec], root_path: str = "") -> bytes:
    """The document served at ``{root_path}/openapi.json``: its server is where the app is mounted."""
    return json.dumps({**document(specs), "servers": [{"url": root_path or "/"}]}).encode()


def document(specs: Collection[EntitySpec], title: str = "StarModel") -> dict[str, Any]:
    """The OpenAPI document; paths are relative to where the app is mounted."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    state: dict[str, type[BaseModel]] = {}
    writable: dict[str, type[BaseModel]] = {}
    for spec in specs:
        state[spec.name] = _state_model(spec)
        writable[spec.name] = _writable_model(spec)
        models += [(state[spec.name], "serialization"), (writable[spec.name], "validation")]
        models += [(d.params_model, "validation") for d in spec.events.values()]
    refs, definitions = models_json_schema(models, ref_template=REF, schema_generator=Schemas)
    paths: dict[str, Any] = {}
    for spec in specs:
        state_ref = refs[(state[spec.name], "serialization")]
        record = "/{id}" if spec.is_record else ""
        id_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}] if record else []
        if spec.is_record:
            filters = _filters(spec)
            listed = {"200": _json({"type": "array", "items": state_ref})}
            paths[f"/{spec.name}"] = {
                "get": _op(f"List {spec.name} records", [*_page(), *filters, _order(spec)], listed),
                "post": _op(
                    f"Create a {spec.name} record",
                    [],
                    {"201": _json(state_ref), "200": {"description": "Datastar", "content": SSE}},
                    refs[(writable[spec.name], "validation")],
                ),
            }
            live = [*_page(), *filters, _order(spec), *_newest_first()]
            paths[f"/{spec.name}/live"] = {"get": _op(f"Live list of {spec.name} records", live, _stream())}
            paths[f"/{spec.name}/count"] = {"get": _op(f"Count {spec.name} records", filters, COUNTED)}
            paths[f"/{spec.name}/{{id}}"] = {
                "get": _op(f"Read a {spec.name} record", id_param, {"200": _json(state_ref)}),
                "delete": _op(f"Delete a {spec.name} record", id_param, {"204": {"description": "Deleted"}}),
            }
        else:
            paths[f"/{spec.name}"] = {"get": _op(f"Read the caller's {spec.name}", [], {"200": _json(state_ref)})}
        paths[f"/{spec.name}{record}/live"] = {"get": _op(f"Live state of a {spec.name}", id_param, _stream())}
        for segment, descriptor in spec.events.items():
            collection = descriptor.info.collection
            at, id_of = ("", []) if collection else (record, id_param)
            method = descriptor.info.method.lower()
            params = refs[(descriptor.params_model, "validation")]
            summary = (descriptor.func.__doc__ or f"{spec.name}.{descriptor.info.name}").strip().splitlines()[0]
            content = {**_json(state_ref)["content"], **SSE}
            answers = {"200": {"description": "The state after the event", "content": content}}
            if method in ("get", "delete"):
                operation = _op(summary, [*id_of, *_query(definitions, params)], answers)
            else:
                operation = _op(summary, id_of, answers, params, forms=True)
            paths[f"/{spec.name}{at}/{segment}"] = {method: operation}
    paths.setdefault("/health", HEALTH)  # an entity named health keeps its path
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {"schemas": {**definitions.get("$defs", {}), "Error": ERROR_SCHEMA}},
    }


#: ``GET /{entity}/count``'s answer
COUNTED = {
    "200": {
        "description": "How many records match",
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}}
            }
        },
    }
}
_CHECKS = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"enum": ["ok", "degraded"]},
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["ok", "ms"],
                "properties": {"ok": {"type": "boolean"}, "ms": {"type": "number"}, "error": {"type": "string"}},
            },
        },
    },
}
#: ``GET /health``: each store and the broadcast reached, with their latency.
HEALTH = {
    "get": {
        "summary": "The stores and the broadcast reached, with their latency",
        "parameters": [],
        "responses": {
            "200": {"description": "Every check passed", "content": {"application/json": {"schema": _CHECKS}}},
            "503": {"description": "A check failed", "content": {"application/json": {"schema": _CHECKS}}},
        },
    }
}


def _state_model(spec: EntitySpec) -> type[BaseModel]:
    """What the page sees: public fields and computed fields."""
    entity = spec.entity
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in entity.model_fields.items() if n in spec.public}
    for name, computed in entity.model_computed_fields.items():
        fields[name] = (computed.return_type, ...)
    model: type[BaseModel] = create_model(f"{entity.__name__}State", **fields)
    return model


def _writable_model(spec: EntitySpec) -> type[BaseModel]:
    """What a create may set: the client-writable fields."""
    entity = spec.entity
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in entity.model_fields.items() if n in spec.writable}
    model: type[BaseModel] = create_model(f"{entity.__name__}Create", **fields)
    return model


def _op(
    summary: str,
    parameters: list[dict[str, Any]],
    answers: dict[str, Any],
    body: dict[str, Any] | None = None,
    *,
    forms: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "parameters": parameters}
    if body is not None:
        content = {"application/json": {"schema": body}}
        if forms:
            content |= {"application/x-www-form-urlencoded": {"schema": body}, "multipart/form-data": {"schema": body}}
        operation["requestBody"] = {"required": False, "content": content}
    errors = {code: {"description": text, "content": {"application/json": {"schema": ERROR}}} for code, text in ERRORS}
    operation["responses"] = {**answers, **errors}
    return operation


ERRORS = [
    ("400", "Malformed body"),
    ("401", "Authentication required"),
    ("403", "Refused: cross-site, or by authorize"),
    ("404", "No such record, entity or event"),
    ("405", "Method not allowed"),
    ("406", "No answer format for the request"),
    ("413", "Body too large"),
    ("422", "Invalid input: a sentence per parameter"),
    ("500", "An exception inside the event (logged)"),
    ("503", "The state is unavailable"),
]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "The public state", "content": {"application/json": {"schema": schema}}}


def _stream() -> dict[str, Any]:
    return {"200": {"description": "Datastar server-sent events, until the client leaves", "content": SSE}}


def _page() -> list[dict[str, Any]]:
    return [
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
    ]


def _newest_first() -> list[dict[str, Any]]:
    """A live list's order (``newest_first=1``: newest on top) and its "load more" (``shown``: the
    records the page shows, by which the window grows)."""
    return [
        {"name": "newest_first", "in": "query", "required": False, "schema": {"type": "boolean"}},
        {"name": "shown", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
    ]


JSON_TYPES: dict[type, str] = {bool: "boolean", int: "integer", float: "number"}


def _filters(spec: EntitySpec) -> list[dict[str, Any]]:
    """``?field=value``: one query parameter per public field a list can filter by."""
    fields = spec.entity.model_fields
    out = []
    for name in filterable(spec.entity, spec.public):
        kind = scalar_type(fields[name].annotation)
        schema = {"type": JSON_TYPES.get(kind, "string") if kind is not None else "string"}
        out.append({"name": name, "in": "query", "required": False, "schema": schema})
    return out


def _order(spec: EntitySpec) -> dict[str, Any]:
    """``?order=field`` (``-field`` descending; ``created``, the default, or ``-created``)."""
    names = [*filterable(spec.entity, spec.public), "created"]
    choices = sorted({prefix + name for name in names for prefix in ("", "-")})
    return {"name": "order", "in": "query", "required": False, "schema": {"enum": choices}}


def _query(definitions: dict[str, Any], ref: dict[str, Any]) -> list[dict[str, Any]]:
    """A GET/DELETE event's parameters, as query parameters."""
    name = ref["$ref"].rsplit("/", 1)[-1]
    model = definitions.get("$defs", {}).get(name, {})
    required = set(model.get("required", ()))
    return [
        {"name": field, "in": "query", "required": field in required, "schema": schema}
        for field, schema in model.get("properties", {}).items()
    ]
