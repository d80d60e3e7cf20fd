"""Validation messages a page can show: one sentence per field or parameter, naming it."""

from __future__ import annotations

import typing
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails


class Message:
    """``Annotated[float, Field(gt=0), Message("Enter a price above zero.")]``: what the page is
    told when this field or parameter is invalid, whatever the reason."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Message({self.text!r})"


#: Pydantic error types -> sentences; ``{label}`` is the field's title or its name, humanised,
#: and the other names come from the error's context.
TEMPLATES = {
    "missing": "{label} is required.",
    "string_type": "{label} must be text.",
    "string_too_short": "{label} must be at least {min_length} characters long.",
    "string_too_short:1": "{label} cannot be empty.",
    "string_too_long": "{label} must be at most {max_length} characters long.",
    "string_pattern_mismatch": "{label} is not in the expected format.",
    "int_parsing": "{label} must be a whole number.",
    "int_type": "{label} must be a whole number.",
    "int_from_float": "{label} must be a whole number.",
    "float_parsing": "{label} must be a number.",
    "float_type": "{label} must be a number.",
    "decimal_parsing": "{label} must be a number.",
    "decimal_type": "{label} must be a number.",
    "finite_number": "{label} must be a finite number.",
    "bool_parsing": "{label} must be yes or no.",
    "bool_type": "{label} must be yes or no.",
    "greater_than": "{label} must be greater than {gt}.",
    "greater_than_equal": "{label} must be at least {ge}.",
    "less_than": "{label} must be less than {lt}.",
    "less_than_equal": "{label} must be at most {le}.",
    "multiple_of": "{label} must be a multiple of {multiple_of}.",
    "too_short": "{label} needs at least {min_length} items.",
    "too_long": "{label} takes at most {max_length} items.",
    "literal_error": "{label} must be one of {expected}.",
    "enum": "{label} must be one of {expected}.",
    "date_parsing": "{label} must be a date (YYYY-MM-DD).",
    "date_from_datetime_parsing": "{label} must be a date (YYYY-MM-DD).",
    "datetime_parsing": "{label} must be a date and time.",
    "datetime_from_date_parsing": "{label} must be a date and time.",
    "time_parsing": "{label} must be a time (HH:MM).",
    "uuid_parsing": "{label} must be a UUID.",
    "url_parsing": "{label} must be a URL.",
    "value_error": "{error}",
    "assertion_error": "{error}",
    "is_instance_of": "{label} must be a {class}.",
    "is_instance_of:UploadFile": "{label} must be a file upload.",
    "model_type": "{label} must be an object of fields.",
    "dict_type": "{label} must be an object.",
    "list_type": "{label} must be a list.",
}


def humanise(name: str) -> str:
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else "The value"


def field_at(model: type[BaseModel], loc: Sequence[int | str]) -> tuple[FieldInfo | None, str, str]:
    """The field a location points at (following nested models), its dotted name, and its label:
    the field's name, and where inside its value the location goes on (``Lines item 2``,
    ``Prices entry eur``)."""
    field: FieldInfo | None = None
    current: Any = model
    names: list[str] = []
    label = ""
    for part in loc:
        names.append(str(part))
        if isinstance(part, int):
            label += f" item {part + 1}"
        elif not (isinstance(current, type) and issubclass(current, BaseModel)):
            label += f" entry {part}" if label else humanise(part)
        else:
            field = current.model_fields.get(part)
            current = _model_in(field.annotation) if field is not None else None
            label = field.title if field is not None and field.title else humanise(part)
    return field, ".".join(names), label


def _model_in(annotation: Any) -> Any:
    """The model inside ``Model``, ``Model | None`` or ``list[Model]``, else the annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def sentence(error: ErrorDetails, field: FieldInfo | None, label: str) -> str:
    """One readable sentence for one Pydantic error about the value ``label`` names."""
    if field is not None:
        own = next((m for m in field.metadata if isinstance(m, Message)), None)
        if own is not None:
            return own.text
    context = {str(k): v for k, v in (error.get("ctx") or {}).items()}
    if "error" in context:
        context["error"] = str(context["error"])
    # a specific sentence first: by the expected class (files), or for an empty string
    detail = context.get("class", context.get("min_length"))
    template = TEMPLATES.get(f"{error['type']}:{detail}") or TEMPLATES.get(error["type"])
    if template is not None:
        try:
            return template.format(label=label, **context)
        except (KeyError, IndexError):
            pass
    return f"{label}: {error['msg'][:1].lower()}{error['msg'][1:]}."


def readable_errors(exc: ValidationError, model: type[BaseModel], flatten: Collection[str] = ()) -> dict[str, str]:
    """``{"price": "Price must be a number."}``: one sentence per bad field or parameter, keyed by
    its dotted name; for the parameters in ``flatten`` (a whole form bound to one model), by the
    form field's own name."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = error["loc"]
        field, _, label = field_at(model, loc)
        key = ".".join(str(part) for part in (loc[1:] if loc and loc[0] in flatten and len(loc) > 1 else loc))
        errors.setdefault(key or "body", sentence(error, field, label or "Body"))
    return errors
