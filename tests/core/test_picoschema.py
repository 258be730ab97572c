"""Picoschema → JSON Schema, rule by rule (reference notes §2.3 and the §C.3 checklist)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from promptdock.errors import PromptSyntaxError
from promptdock.picoschema import JSON_SCHEMA_TYPES, SCALAR_TYPES, picoschema_to_json_schema


def obj(
    properties: dict[str, Any], required: list[str] | None = None, additional: Any = False
) -> dict[str, Any]:
    """The JSON Schema object the converter builds, keys in its order."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = additional
    return out


# --- top level -------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, "", {}, []])
def test_empty_or_null_schema_is_no_schema(empty: object) -> None:
    assert picoschema_to_json_schema(empty) is None


@pytest.mark.parametrize("scalar", [t for t in SCALAR_TYPES if t != "any"])
def test_top_level_scalar_string(scalar: str) -> None:
    assert picoschema_to_json_schema(scalar) == {"type": scalar}


def test_top_level_string_with_description() -> None:
    assert picoschema_to_json_schema("number,   the count") == {
        "type": "number",
        "description": "the count",
    }


def test_top_level_any_is_the_empty_schema_not_type_any() -> None:
    # Deliberate: Dotprompt's {"type": "any"} is rejected by every JSON Schema validator.
    assert picoschema_to_json_schema("any") == {}
    assert picoschema_to_json_schema("any, whatever") == {"description": "whatever"}


@pytest.mark.parametrize("json_type", sorted(JSON_SCHEMA_TYPES))
def test_mapping_with_known_type_is_json_schema_passthrough(json_type: str) -> None:
    schema = {"type": json_type, "description": "d", "x-extra": [1, 2]}
    result = picoschema_to_json_schema(schema)
    assert result == schema
    assert result is not schema


def test_passthrough_is_a_copy_so_the_input_is_never_changed() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    snapshot = copy.deepcopy(schema)
    result = picoschema_to_json_schema(schema)
    assert result is not None
    result["properties"]["a"]["type"] = "number"
    assert schema == snapshot


def test_properties_mapping_gets_type_object_added() -> None:
    result = picoschema_to_json_schema({"properties": {"a": {"type": "string"}}})
    assert result == {"properties": {"a": {"type": "string"}}, "type": "object"}


def test_unknown_type_key_is_not_passthrough_but_a_picoschema_field() -> None:
    # 'type: email' is not a JSON Schema type, so 'type' is just a field name.
    assert picoschema_to_json_schema({"type": "string, the kind"}) == obj(
        {"type": {"type": "string", "description": "the kind"}}, ["type"]
    )


def test_non_empty_list_at_top_level_is_an_error() -> None:
    with pytest.raises(PromptSyntaxError, match=r"^input\.schema: a Picoschema field must be"):
        picoschema_to_json_schema(["a"], root="input.schema")


# --- objects -----------------------------------------------------------------------------------


def test_object_required_in_declaration_order_and_additional_properties_false() -> None:
    result = picoschema_to_json_schema({"b": "string", "a?": "integer", "c": "boolean"})
    assert result == obj(
        {"b": {"type": "string"}, "a": {"type": ["integer", "null"]}, "c": {"type": "boolean"}},
        ["b", "c"],
    )
    assert result is not None
    assert list(result) == ["type", "properties", "required", "additionalProperties"]


def test_required_is_omitted_when_every_field_is_optional() -> None:
    result = picoschema_to_json_schema({"a?": "string"})
    assert result is not None
    assert "required" not in result


def test_properties_is_present_even_when_empty() -> None:
    assert picoschema_to_json_schema({"(*)": "string"}) == obj({}, None, {"type": "string"})


@pytest.mark.parametrize("scalar", [t for t in SCALAR_TYPES if t != "any"])
def test_each_scalar_field_and_its_optional_form(scalar: str) -> None:
    assert picoschema_to_json_schema({"f": scalar, "g?": scalar}) == obj(
        {"f": {"type": scalar}, "g": {"type": [scalar, "null"]}}, ["f"]
    )


def test_any_field_is_empty_schema_and_stays_so_when_optional() -> None:
    assert picoschema_to_json_schema({"a": "any", "b?": "any", "c?": "any, free"}) == obj(
        {"a": {}, "b": {}, "c": {"description": "free"}}, ["a"]
    )


def test_description_split_at_first_comma_spaces_after_dropped_later_commas_kept() -> None:
    result = picoschema_to_json_schema({"a": "string,   one, two,three"})
    assert result == obj({"a": {"type": "string", "description": "one, two,three"}}, ["a"])


def test_space_before_the_comma_stays_in_the_type_name_and_fails() -> None:
    with pytest.raises(PromptSyntaxError, match=r"schema\.a: unknown type 'number '"):
        picoschema_to_json_schema({"a": "number ,x"})


def test_empty_description_after_comma_is_dropped() -> None:
    assert picoschema_to_json_schema({"a": "string,"}) == obj({"a": {"type": "string"}}, ["a"])


def test_nested_mapping_is_an_object_without_parenthetical() -> None:
    result = picoschema_to_json_schema({"user": {"name": "string", "age?": "integer"}})
    assert result == obj(
        {"user": obj({"name": {"type": "string"}, "age": {"type": ["integer", "null"]}}, ["name"])},
        ["user"],
    )


def test_optional_nested_mapping_without_parenthetical_becomes_nullable() -> None:
    # The parsed value has a string type ('object'), so the optional rule applies.
    result = picoschema_to_json_schema({"meta?": {"k": "string"}})
    assert result == obj(
        {"meta": {**obj({"k": {"type": "string"}}, ["k"]), "type": ["object", "null"]}}
    )


def test_wildcard_sets_additional_properties_to_its_parse() -> None:
    assert picoschema_to_json_schema({"(*)": "number, lucky"}) == {
        "type": "object",
        "properties": {},
        "additionalProperties": {"type": "number", "description": "lucky"},
    }


def test_wildcard_alongside_fields() -> None:
    assert picoschema_to_json_schema({"id": "string", "(*)": "any"}) == obj(
        {"id": {"type": "string"}}, ["id"], {}
    )


def test_field_name_must_be_a_string() -> None:
    with pytest.raises(PromptSyntaxError, match=r"^schema: field names must be strings, got 1"):
        picoschema_to_json_schema({1: "string"})


@pytest.mark.parametrize("bad", [5, 2.5, True, ["a", "b"]])
def test_value_neither_string_nor_mapping_is_an_error_naming_the_field(bad: object) -> None:
    with pytest.raises(PromptSyntaxError) as info:
        picoschema_to_json_schema({"user": {"age": bad}}, root="input.schema")
    assert str(info.value) == (
        "input.schema.user.age: a Picoschema field must be a type string (such as 'string, a "
        f"description') or a mapping of fields, got {type(bad).__name__} {bad!r}"
    )


# --- parentheticals ----------------------------------------------------------------------------


def test_array_parenthetical_with_items_and_optional_nullable() -> None:
    result = picoschema_to_json_schema({"id": "string", "tags?(array, the tags)": "string"})
    assert result == obj(
        {
            "id": {"type": "string"},
            "tags": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "the tags",
            },
        },
        ["id"],
    )


def test_array_of_objects() -> None:
    result = picoschema_to_json_schema({"items(array)": {"sku": "string"}})
    assert result == obj(
        {"items": {"type": "array", "items": obj({"sku": {"type": "string"}}, ["sku"])}}, ["items"]
    )


def test_object_parenthetical_and_optional_object() -> None:
    result = picoschema_to_json_schema(
        {"a(object)": {"x": "integer"}, "b?(object, B)": {"y?": "string"}}
    )
    assert result == obj(
        {
            "a": obj({"x": {"type": "integer"}}, ["x"]),
            "b": {
                **obj({"y": {"type": ["string", "null"]}}),
                "type": ["object", "null"],
                "description": "B",
            },
        },
        ["a"],
    )


def test_object_parenthetical_needs_a_mapping() -> None:
    with pytest.raises(PromptSyntaxError) as info:
        picoschema_to_json_schema({"a(object)": "string"}, root="output.schema")
    assert str(info.value) == (
        "output.schema.a: '(object)' needs a mapping of fields below it, got str 'string'"
    )


def test_enum_has_no_type_and_optional_appends_null() -> None:
    result = picoschema_to_json_schema({"color?(enum, c)": ["RED", "BLUE"], "size(enum)": [1, 2]})
    assert result == obj(
        {"color": {"enum": ["RED", "BLUE", None], "description": "c"}, "size": {"enum": [1, 2]}},
        ["size"],
    )


def test_optional_enum_already_containing_null_is_unchanged() -> None:
    assert picoschema_to_json_schema({"c?(enum)": ["A", None]}) == obj({"c": {"enum": ["A", None]}})


def test_enum_list_of_the_caller_is_not_mutated() -> None:
    choices = ["A", "B"]
    picoschema_to_json_schema({"c?(enum)": choices})
    assert choices == ["A", "B"]


def test_enum_needs_a_list() -> None:
    with pytest.raises(PromptSyntaxError) as info:
        picoschema_to_json_schema({"c(enum)": "A"})
    assert str(info.value) == (
        "schema.c: '(enum)' needs a list of allowed values, such as [RED, BLUE], got str 'A'"
    )


def test_parenthetical_description_overrides_the_value_description() -> None:
    assert picoschema_to_json_schema({"n(array, outer)": "string, inner"}) == obj(
        {
            "n": {
                "type": "array",
                "items": {"type": "string", "description": "inner"},
                "description": "outer",
            }
        },
        ["n"],
    )
    result = picoschema_to_json_schema({"o(object, outer)": {"description": "string"}})
    assert result is not None
    assert result["properties"]["o"]["description"] == "outer"


def test_empty_parenthetical_is_like_none() -> None:
    assert picoschema_to_json_schema({"a()": "string"}) == obj({"a": {"type": "string"}}, ["a"])


def test_unknown_parenthetical_kind_names_the_field_path() -> None:
    with pytest.raises(PromptSyntaxError) as info:
        picoschema_to_json_schema({"user": {"tags(list)": "string"}}, root="input.schema")
    assert str(info.value) == (
        "input.schema.user.tags: parenthetical type must be 'object', 'array' or 'enum', got 'list'"
    )


def test_optional_marker_after_the_parenthesis_is_an_error_with_the_fix() -> None:
    with pytest.raises(PromptSyntaxError) as info:
        picoschema_to_json_schema({"color(enum)?": ["A"]})
    assert str(info.value) == (
        "schema.color: field 'color(enum)?' must end with ')'; write it as 'color?(enum)' "
        "(an optional marker '?' goes before the parenthesis)"
    )


def test_unclosed_parenthesis_is_an_error() -> None:
    with pytest.raises(PromptSyntaxError, match=r"write it as 'tags\(array\)'"):
        picoschema_to_json_schema({"tags(array": "string"})


# --- named schemas and the LiteLLM dialect -----------------------------------------------------


def test_unknown_type_without_registry_names_it_and_lists_scalars() -> None:
    with pytest.raises(PromptSyntaxError) as info:
        picoschema_to_json_schema({"user": {"addr": "Address"}}, root="input.schema")
    assert str(info.value) == (
        "input.schema.user.addr: unknown type 'Address': valid types are any, boolean, integer, "
        "null, number, string (or array/object); other names need a registered named schema."
    )


def test_python_type_names_get_a_suggestion() -> None:
    with pytest.raises(PromptSyntaxError, match=r"unknown type 'int'.*did you mean 'integer'\?$"):
        picoschema_to_json_schema({"age": "int"})


def test_unknown_type_with_registry_lists_the_known_names() -> None:
    with pytest.raises(PromptSyntaxError) as info:
        picoschema_to_json_schema("Missing", named_schemas={"B": {}, "A": {}})
    assert str(info.value) == (
        "schema: unknown type 'Missing': it is not a scalar type (any, boolean, integer, null, "
        "number, string, or array/object) nor a named schema (A, B)."
    )


def test_named_schema_description_override_then_nullable() -> None:
    named = {"Foo": {"type": "number", "description": "a foo"}}
    result = picoschema_to_json_schema({"foo?": "Foo, optional"}, named_schemas=named)
    assert result == obj({"foo": {"type": ["number", "null"], "description": "optional"}})
    assert named == {"Foo": {"type": "number", "description": "a foo"}}


def test_named_schema_at_top_level_and_in_array() -> None:
    named = {"Item": obj({"sku": {"type": "string"}}, ["sku"])}
    assert picoschema_to_json_schema("Item", named_schemas=named) == named["Item"]
    result = picoschema_to_json_schema({"items(array)": "Item"}, named_schemas=named)
    assert result == obj({"items": {"type": "array", "items": named["Item"]}}, ["items"])


def test_named_schema_without_string_type_is_not_made_nullable() -> None:
    named = {"Either": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}
    result = picoschema_to_json_schema({"e?": "Either"}, named_schemas=named)
    assert result == obj({"e": {"anyOf": [{"type": "string"}, {"type": "integer"}]}})


def test_litellm_bare_array_and_object_are_json_schema_types() -> None:
    result = picoschema_to_json_schema({"tags": "array", "meta?": "object, extra"})
    assert result == obj(
        {"tags": {"type": "array"}, "meta": {"type": ["object", "null"], "description": "extra"}},
        ["tags"],
    )


def test_litellm_bare_container_wins_over_a_named_schema() -> None:
    assert picoschema_to_json_schema("array", named_schemas={"array": {"x": 1}}) == {
        "type": "array"
    }


# --- the worked examples of §2.3 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pico", "expected"),
    [
        ("string", {"type": "string"}),
        ("number,   the count", {"type": "number", "description": "the count"}),
        (
            {"id": "string", "tags?(array, the tags)": "string"},
            obj(
                {
                    "id": {"type": "string"},
                    "tags": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                        "description": "the tags",
                    },
                },
                ["id"],
            ),
        ),
        (
            {"color?(enum, c)": ["RED", "BLUE"]},
            obj({"color": {"enum": ["RED", "BLUE", None], "description": "c"}}),
        ),
        (
            {"(*)": "number, lucky"},
            {
                "type": "object",
                "properties": {},
                "additionalProperties": {"type": "number", "description": "lucky"},
            },
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}},
            {"type": "object", "properties": {"a": {"type": "string"}}},
        ),
        (
            {"properties": {"a": {"type": "string"}}},
            {"properties": {"a": {"type": "string"}}, "type": "object"},
        ),
    ],
)
def test_worked_examples(pico: object, expected: dict[str, Any]) -> None:
    assert picoschema_to_json_schema(pico) == expected
