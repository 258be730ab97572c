"""Picoschema, the compact schema language of Dotprompt, compiled to JSON Schema.

The conversion follows the Dotprompt specification rule for rule (the reference notes, §2.3 and
§C.3), plus the LiteLLM habit of writing ``tags: array`` or ``meta?: object`` for a bare JSON
Schema array or object. Two places differ on purpose, because the result is validated with
``jsonschema`` before rendering:

* a bare top-level ``any`` gives ``{}`` (Dotprompt emits ``{"type": "any"}``, which no JSON Schema
  validator accepts), the same as ``any`` inside an object;
* ``name(enum)?`` and ``name(object): string`` are errors with a fix in the message, where Dotprompt
  quietly builds a broken schema.

The converter never mutates its input: enum lists, named schemas and JSON Schema passed through are
copied.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from promptdock.errors import PromptSyntaxError

__all__ = ["JSON_SCHEMA_TYPES", "SCALAR_TYPES", "picoschema_to_json_schema"]

SCALAR_TYPES: tuple[str, ...] = ("any", "boolean", "integer", "null", "number", "string")
"""The type names a Picoschema field may use without a named-schema registry."""

JSON_SCHEMA_TYPES: frozenset[str] = frozenset({*SCALAR_TYPES, "object", "array"})
"""A top-level mapping whose ``type`` is one of these is already JSON Schema."""

_SCALARS = frozenset(SCALAR_TYPES)
# LiteLLM prompts write these bare, meaning the JSON Schema type rather than a named schema.
_BARE_CONTAINERS = frozenset({"array", "object"})
_WILDCARD = "(*)"
# Python spellings people reach for; used only to suggest a fix in the error message.
_HINTS = {
    "str": "string",
    "text": "string",
    "int": "integer",
    "float": "number",
    "double": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
    "none": "null",
}


def picoschema_to_json_schema(
    schema: object,
    *,
    named_schemas: Mapping[str, Mapping[str, Any]] | None = None,
    root: str = "schema",
) -> dict[str, Any] | None:
    """Compile a Picoschema (or pass through a JSON Schema) to a JSON Schema dict.

    ``None``, ``""`` and empty mappings or lists mean "no schema" and give ``None``. A string is a
    single type (``"number, the count"``); a mapping whose ``type`` is a JSON Schema type is
    returned as a copy; a mapping with a ``properties`` mapping gets ``"type": "object"`` added;
    any other mapping is a Picoschema object.

    :param schema: the value of an ``input.schema`` or ``output.schema`` frontmatter key.
    :param named_schemas: schemas that type names other than the scalars refer to
        (``{"Address": {...}}``); a description after the name overrides the registered one.
    :param root: how error messages name the schema itself (``"input.schema"``); fields are
        named below it (``"input.schema.user.tags"``).
    :raises PromptSyntaxError: the schema is malformed; the message names the field path.
    """
    if schema is None or (isinstance(schema, str | Mapping | list) and not schema):
        return None
    if isinstance(schema, str):
        return _parse_type(schema, named_schemas, root)
    if isinstance(schema, Mapping):
        declared = schema.get("type")
        if isinstance(declared, str) and declared in JSON_SCHEMA_TYPES:
            return copy.deepcopy(dict(schema))
        if isinstance(schema.get("properties"), Mapping):
            return {**copy.deepcopy(dict(schema)), "type": "object"}
    return _parse_value(schema, named_schemas, root)


def _split_description(text: str) -> tuple[str, str | None]:
    # Only spaces after the first comma go: "number ,x" keeps its trailing space in the type
    # name (and then fails as an unknown type), exactly as Dotprompt does.
    type_name, comma, description = text.partition(",")
    if not comma:
        return text, None
    return type_name, description.lstrip(" ") or None


def _parse_type(
    text: str,
    named: Mapping[str, Mapping[str, Any]] | None,
    path: str,
) -> dict[str, Any]:
    type_name, description = _split_description(text)
    result: dict[str, Any]
    if type_name == "any":
        result = {}
    elif type_name in _SCALARS or type_name in _BARE_CONTAINERS:
        result = {"type": type_name}
    else:
        result = _resolve_named(type_name, named, path)
    if description:
        result["description"] = description
    return result


def _resolve_named(
    type_name: str, named: Mapping[str, Mapping[str, Any]] | None, path: str
) -> dict[str, Any]:
    if named is not None and type_name in named:
        return copy.deepcopy(dict(named[type_name]))
    valid = ", ".join(SCALAR_TYPES)
    hint = _HINTS.get(type_name.strip().lower())
    fix = f"did you mean '{hint}'? " if hint else ""
    if named:
        known = ", ".join(sorted(named))
        where = f"it is not a scalar type ({valid}, or array/object) nor a named schema ({known})"
    else:
        where = (
            f"valid types are {valid} (or array/object); other names need a registered named schema"
        )
    raise PromptSyntaxError(f"{path}: unknown type {type_name!r}: {where}. {fix}".rstrip())


def _parse_value(
    value: object, named: Mapping[str, Mapping[str, Any]] | None, path: str
) -> dict[str, Any]:
    if isinstance(value, str):
        return _parse_type(value, named, path)
    if isinstance(value, Mapping):
        return _parse_object(value, named, path)
    raise PromptSyntaxError(
        f"{path}: a Picoschema field must be a type string (such as 'string, a description') "
        f"or a mapping of fields, got {type(value).__name__} {value!r}"
    )


def _parse_object(
    fields: Mapping[Any, Any], named: Mapping[str, Mapping[str, Any]] | None, path: str
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    additional: Any = False
    for key, value in fields.items():
        if not isinstance(key, str):
            raise PromptSyntaxError(
                f"{path}: field names must be strings, got {key!r}; quote it in the YAML"
            )
        if key == _WILDCARD:
            additional = _parse_value(value, named, f"{path}.{_WILDCARD}")
            continue
        name, paren, kind_text = key.partition("(")
        optional = name.endswith("?")
        prop_name = name[:-1] if optional else name
        field_path = f"{path}.{prop_name}"
        if paren and not kind_text.endswith(")"):
            raise _unclosed(key, prop_name, optional, kind_text, field_path)
        if not optional:
            required.append(prop_name)
        kind_info = kind_text[:-1]
        if not kind_info:
            prop = _parse_value(value, named, field_path)
            if optional and isinstance(prop.get("type"), str):
                prop["type"] = [prop["type"], "null"]
        else:
            kind, description = _split_description(kind_info)
            prop = _parse_parenthetical(kind, value, optional, named, field_path)
            # Attached after building, so it overrides a description given in the value.
            if description:
                prop["description"] = description
        properties[prop_name] = prop
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    result["additionalProperties"] = additional
    return result


def _unclosed(
    key: str, prop_name: str, optional: bool, kind_text: str, path: str
) -> PromptSyntaxError:
    inner = kind_text.rstrip("?").rstrip(")")
    marker = "?" if optional or kind_text.endswith("?") else ""
    return PromptSyntaxError(
        f"{path}: field {key!r} must end with ')'; write it as '{prop_name}{marker}({inner})' "
        "(an optional marker '?' goes before the parenthesis)"
    )


def _parse_parenthetical(
    kind: str,
    value: object,
    optional: bool,
    named: Mapping[str, Mapping[str, Any]] | None,
    path: str,
) -> dict[str, Any]:
    if kind == "array":
        return {
            "type": ["array", "null"] if optional else "array",
            "items": _parse_value(value, named, path),
        }
    if kind == "object":
        if not isinstance(value, Mapping):
            raise PromptSyntaxError(
                f"{path}: '(object)' needs a mapping of fields below it, got "
                f"{type(value).__name__} {value!r}"
            )
        prop = _parse_object(value, named, path)
        if optional:
            prop["type"] = ["object", "null"]
        return prop
    if kind == "enum":
        if not isinstance(value, list):
            raise PromptSyntaxError(
                f"{path}: '(enum)' needs a list of allowed values, such as [RED, BLUE], got "
                f"{type(value).__name__} {value!r}"
            )
        choices = list(value)
        if optional and None not in choices:
            choices.append(None)
        return {"enum": choices}
    raise PromptSyntaxError(
        f"{path}: parenthetical type must be 'object', 'array' or 'enum', got {kind!r}"
    )
