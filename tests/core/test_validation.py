"""Input validation: the fast Picoschema-subset validator and the jsonschema fallback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_mock import MockerFixture

from promptdock import _validation
from promptdock._validation import compile_validator
from promptdock.errors import InputValidationError, PromptSyntaxError


def obj(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    """An object schema shaped the way Picoschema writes one."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def fails(
    schema: Mapping[str, Any], variables: Mapping[str, Any], prompt_id: str | None = "hello"
) -> pytest.ExceptionInfo[InputValidationError]:
    """The InputValidationError that ``variables`` raise, as a pytest ExceptionInfo."""
    validate = compile_validator(schema, prompt_id=prompt_id)
    with pytest.raises(InputValidationError) as info:
        validate(variables)
    return info


@pytest.fixture
def fast_only(mocker: MockerFixture) -> None:
    """Fail the test if the jsonschema fallback is used."""
    mocker.patch.object(
        _validation, "_jsonschema_validator", side_effect=AssertionError("slow path")
    )


# ------------------------------------------------------------------------------------------
# The fast subset


@pytest.mark.usefixtures("fast_only")
class TestFastPath:
    def test_missing_required_variable_names_field_prompt_and_type(self) -> None:
        info = fails(obj(["user_message"], user_message={"type": "string"}), {})
        assert str(info.value) == (
            "prompt 'hello': variable 'user_message' is required (expected string); "
            "pass it or give it a default under input.default"
        )
        assert info.value.prompt_id == "hello"
        assert info.value.field == "user_message"

    def test_wrong_type_names_the_expected_and_actual_type(self) -> None:
        info = fails(obj(["count"], count={"type": "integer"}), {"count": "x"})
        assert str(info.value) == "prompt 'hello': variable 'count' must be integer, got str 'x'"
        assert info.value.field == "count"

    def test_without_prompt_id_the_message_has_no_prompt(self) -> None:
        info = fails(obj(["n"], n={"type": "number"}), {"n": "1"}, prompt_id=None)
        assert str(info.value) == "variable 'n' must be number, got str '1'"
        assert info.value.prompt_id is None

    @pytest.mark.parametrize("value", [3, -1, 3.0, 10**30])
    def test_integer_accepts_whole_numbers(self, value: object) -> None:
        compile_validator(obj(["n"], n={"type": "integer"}), prompt_id="p")({"n": value})

    @pytest.mark.parametrize(
        ("value", "got"), [(True, "bool True"), (2.5, "float 2.5"), ("3", "str '3'")]
    )
    def test_integer_rejects_bools_fractions_and_strings(self, value: object, got: str) -> None:
        info = fails(obj(["n"], n={"type": "integer"}), {"n": value})
        assert str(info.value).endswith(f"must be integer, got {got}")

    @pytest.mark.parametrize("value", [3, 2.5, -0.0])
    def test_number_accepts_ints_and_floats(self, value: object) -> None:
        compile_validator(obj(["n"], n={"type": "number"}), prompt_id="p")({"n": value})

    def test_number_rejects_bool(self) -> None:
        info = fails(obj(["n"], n={"type": "number"}), {"n": False})
        assert str(info.value).endswith("variable 'n' must be number, got bool False")

    def test_type_list_allows_each_type(self) -> None:
        schema = obj(name={"type": ["string", "null"]})
        validate = compile_validator(schema, prompt_id="p")
        validate({"name": None})
        validate({"name": "Ada"})
        info = fails(schema, {"name": 5})
        assert str(info.value).endswith("variable 'name' must be string or null, got int 5")

    def test_optional_variable_may_be_absent(self) -> None:
        compile_validator(obj(["a"], a={"type": "string"}, b={"type": "string"}), prompt_id="p")(
            {"a": "x"}
        )

    def test_extra_top_level_variables_are_allowed_despite_additional_properties_false(
        self,
    ) -> None:
        schema = obj(["a"], a={"type": "string"})
        compile_validator(schema, prompt_id="p")({"a": "x", "shared_context": {"anything": 1}})

    def test_nested_objects_follow_additional_properties_false(self) -> None:
        schema = obj(user=obj(["name"], name={"type": "string"}, age={"type": "integer"}))
        info = fails(schema, {"user": {"name": "Ada", "nickname": "A"}})
        assert str(info.value) == (
            "prompt 'hello': variable 'user.nickname' is not allowed: 'user' accepts only "
            "'name', 'age'; remove it or add it to the schema"
        )
        assert info.value.field == "user.nickname"

    def test_nested_required_and_type_errors_use_dotted_paths(self) -> None:
        schema = obj(user=obj(["name"], name={"type": "string"}, age={"type": "integer"}))
        missing = fails(schema, {"user": {}})
        assert (
            str(missing.value)
            == "prompt 'hello': variable 'user.name' is required (expected string)"
        )
        wrong = fails(schema, {"user": {"name": "Ada", "age": "old"}})
        assert (
            str(wrong.value) == "prompt 'hello': variable 'user.age' must be integer, got str 'old'"
        )
        assert wrong.value.field == "user.age"

    def test_additional_properties_schema_checks_extra_values(self) -> None:
        schema = obj(scores={"type": "object", "additionalProperties": {"type": "integer"}})
        compile_validator(schema, prompt_id="p")({"scores": {"a": 1, "b": 2}})
        info = fails(schema, {"scores": {"a": 1, "b": "two"}})
        assert str(info.value).endswith("variable 'scores.b' must be integer, got str 'two'")

    def test_items_are_checked_with_their_index(self) -> None:
        schema = obj(tags={"type": "array", "items": {"type": "string"}})
        compile_validator(schema, prompt_id="p")({"tags": ["a", "b"]})
        info = fails(schema, {"tags": ["a", 2]})
        assert str(info.value) == "prompt 'hello': variable 'tags[1]' must be string, got int 2"
        assert info.value.field == "tags[1]"

    def test_items_of_objects(self) -> None:
        schema = obj(people={"type": "array", "items": obj(["name"], name={"type": "string"})})
        info = fails(schema, {"people": [{"name": "a"}, {}]})
        assert info.value.field == "people[1].name"

    def test_array_type_rejects_a_string(self) -> None:
        info = fails(obj(tags={"type": "array", "items": {"type": "string"}}), {"tags": "a,b"})
        assert str(info.value).endswith("variable 'tags' must be array, got str 'a,b'")

    def test_enum_lists_the_allowed_values(self) -> None:
        schema = obj(["color"], color={"enum": ["RED", "GREEN"]})
        compile_validator(schema, prompt_id="p")({"color": "RED"})
        info = fails(schema, {"color": "BLUE"})
        assert str(info.value) == (
            "prompt 'hello': variable 'color' must be one of 'RED', 'GREEN', got str 'BLUE'"
        )
        missing = fails(schema, {})
        assert "is required (expected one of 'RED', 'GREEN')" in str(missing.value)

    def test_enum_tells_true_from_one_but_not_one_from_one_point_zero(self) -> None:
        schema = obj(["v"], v={"enum": [1, None, [1, 2]]})
        validate = compile_validator(schema, prompt_id="p")
        for ok in (1, 1.0, None, [1, 2], (1, 2)):
            validate({"v": ok})
        for bad in (True, "1", [1], [True, 2]):
            with pytest.raises(InputValidationError, match="must be one of 1, None, \\[1, 2\\]"):
                validate({"v": bad})

    def test_description_and_other_annotations_are_ignored(self) -> None:
        schema = obj(["q"], q={"type": "string", "description": "the question", "title": "Q"})
        schema["description"] = "inputs"
        compile_validator(schema, prompt_id="p")({"q": "why?"})
        assert "expected string" in str(fails(schema, {}).value)

    def test_any_type_accepts_everything_but_is_still_required(self) -> None:
        schema = obj(["x"], x={"description": "anything"})
        compile_validator(schema, prompt_id="p")({"x": object()})
        assert "variable 'x' is required (expected any value)" in str(fails(schema, {}).value)

    def test_required_name_without_a_property_schema(self) -> None:
        info = fails({"type": "object", "required": ["token"]}, {})
        assert "variable 'token' is required (expected any value)" in str(info.value)

    def test_false_property_schema_rejects_any_value(self) -> None:
        info = fails(obj(legacy=False), {"legacy": 1})
        assert str(info.value).endswith(
            "variable 'legacy' is not allowed here (its schema is 'false')"
        )

    def test_mappings_count_as_objects_and_tuples_as_arrays(self) -> None:
        schema = obj(
            user=obj(["name"], name={"type": "string"}),
            tags={"type": "array", "items": {"type": "string"}},
        )
        validate = compile_validator(schema, prompt_id="p")
        validate(MappingProxyType({"user": MappingProxyType({"name": "Ada"}), "tags": ("a",)}))

    def test_long_values_are_shortened_in_messages(self) -> None:
        info = fails(obj(["n"], n={"type": "integer"}), {"n": "x" * 500})
        assert len(str(info.value)) < 140
        assert str(info.value).endswith("...")

    def test_the_first_field_at_fault_is_reported_whatever_its_type(self) -> None:
        # String fields are checked together first; the report still follows declaration order.
        schema = obj(
            ["a", "b", "c"], a={"type": "string"}, b={"type": "integer"}, c={"type": "string"}
        )
        assert fails(schema, {"a": 1, "b": "x", "c": 2}).value.field == "a"
        assert fails(schema, {"a": "x", "b": "x", "c": 2}).value.field == "b"
        assert fails(schema, {"b": 1, "c": 2}).value.field == "a"
        info = fails(schema, {"a": "x", "b": 1, "c": None})
        assert str(info.value) == "prompt 'hello': variable 'c' must be string, got NoneType None"
        compile_validator(schema, prompt_id="p")({"a": "x", "b": 1, "c": "y", "extra": 0})

    def test_all_string_schemas_report_like_any_other(self) -> None:
        schema = obj(["a"], a={"type": "string", "description": "d"}, b={"type": "string"})
        validate = compile_validator(schema, prompt_id="p")
        validate({"a": "x"})  # b is optional
        validate(MappingProxyType({"a": "x", "b": "y"}))
        info = fails(schema, {"a": "x", "b": 2})
        assert str(info.value) == "prompt 'hello': variable 'b' must be string, got int 2"
        info = fails(schema, MappingProxyType({"b": "y"}))
        assert str(info.value) == (
            "prompt 'hello': variable 'a' is required (expected string); "
            "pass it or give it a default under input.default"
        )

    def test_lists_of_strings_report_like_any_other(self) -> None:
        schema = obj(
            ["tags"], tags={"type": "array", "items": {"type": "string"}}, q={"type": "string"}
        )
        validate = compile_validator(schema, prompt_id="p")
        validate({"tags": []})
        validate({"tags": ("a", "b"), "q": "x"})
        info = fails(schema, {"tags": ["a", "b", 3], "q": "x"})
        assert str(info.value) == "prompt 'hello': variable 'tags[2]' must be string, got int 3"
        info = fails(schema, {"tags": "a", "q": "x"})
        assert str(info.value) == "prompt 'hello': variable 'tags' must be array, got str 'a'"

    def test_string_subclasses_are_strings(self) -> None:
        class Name(str):
            pass

        schema = obj(
            ["a"], a={"type": "string"}, tags={"type": "array", "items": {"type": "string"}}
        )
        compile_validator(schema, prompt_id="p")({"a": Name("x"), "tags": [Name("y")]})

    def test_string_fields_with_more_than_a_type_are_fully_checked(self) -> None:
        schema = obj(["color"], color={"type": "string", "enum": ["RED"], "description": "d"})
        assert fails(schema, {"color": "BLUE"}).value.field == "color"

    def test_an_empty_schema_accepts_anything(self) -> None:
        validate = compile_validator({}, prompt_id="p")
        assert validate is _validation._accept_all
        validate({"whatever": 1})


# ------------------------------------------------------------------------------------------
# Caching


def test_validators_are_cached_per_schema_object_and_prompt() -> None:
    schema = obj(["a"], a={"type": "string"})
    first = compile_validator(schema, prompt_id="p")
    assert compile_validator(schema, prompt_id="p") is first
    assert compile_validator(schema, prompt_id="q") is not first
    equal_but_new = obj(["a"], a={"type": "string"})
    assert compile_validator(equal_but_new, prompt_id="p") is not first


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_validation, "_cache", {})
    monkeypatch.setattr(_validation, "_CACHE_SIZE", 3)
    schemas = [obj([str(i)], **{str(i): {"type": "string"}}) for i in range(5)]
    for schema in schemas:
        compile_validator(schema, prompt_id="p")
    assert len(_validation._cache) == 3
    assert (id(schemas[-1]), "p") in _validation._cache


# ------------------------------------------------------------------------------------------
# The jsonschema fallback


class TestFallback:
    def test_keyword_outside_the_subset_uses_jsonschema(self) -> None:
        schema = obj(["name"], name={"type": "string", "minLength": 3})
        compile_validator(schema, prompt_id="hello")({"name": "Ada"})
        info = fails(schema, {"name": "Al"})
        assert str(info.value) == (
            "prompt 'hello': variable 'name' is invalid (minLength): 'Al' is too short"
        )
        assert info.value.field == "name"

    def test_required_and_type_errors_read_like_the_fast_path(self) -> None:
        schema = obj(["count"], count={"type": "integer", "minimum": 0})
        missing = fails(schema, {})
        assert str(missing.value) == (
            "prompt 'hello': variable 'count' is required (expected integer); "
            "pass it or give it a default under input.default"
        )
        assert missing.value.field == "count"
        wrong = fails(schema, {"count": "x"})
        assert str(wrong.value) == "prompt 'hello': variable 'count' must be integer, got str 'x'"

    def test_nested_paths_and_enum(self) -> None:
        schema = obj(
            items={
                "type": "array",
                "items": obj(["kind"], kind={"enum": ["a", "b"]}),
                "maxItems": 5,
            }
        )
        info = fails(schema, {"items": [{"kind": "a"}, {"kind": "z"}]})
        assert str(info.value) == (
            "prompt 'hello': variable 'items[1].kind' must be one of 'a', 'b', got str 'z'"
        )
        assert info.value.field == "items[1].kind"

    def test_ref_and_pattern(self) -> None:
        schema = {
            "type": "object",
            "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
            "properties": {"currency": {"$ref": "#/$defs/code"}},
            "required": ["currency"],
        }
        compile_validator(schema, prompt_id="fx")({"currency": "EUR"})
        info = fails(schema, {"currency": "euro"}, prompt_id="fx")
        assert str(info.value).startswith("prompt 'fx': variable 'currency' is invalid (pattern): ")
        assert info.value.field == "currency"

    def test_top_level_extras_are_allowed_here_too(self) -> None:
        schema = obj(["a"], a={"type": "string", "maxLength": 5})
        compile_validator(schema, prompt_id="p")({"a": "x", "extra": 1})
        nested = obj(inner={**obj(b={"type": "string"}), "minProperties": 0})
        info = fails(nested, {"inner": {"c": 1}})
        assert info.value.field == "inner"
        assert "(additionalProperties)" in str(info.value)

    def test_mappings_and_tuples_keep_their_meaning(self) -> None:
        schema = obj(
            user={**obj(["name"], name={"type": "string"}), "minProperties": 1},
            tags={"type": "array", "items": {"type": "string"}, "minItems": 1},
        )
        compile_validator(schema, prompt_id="p")(
            {"user": MappingProxyType({"name": "Ada"}), "tags": ("a",)}
        )

    def test_invalid_schema_is_a_syntax_error_naming_the_prompt(self) -> None:
        schema = obj(name={"type": "string", "minLength": -1})
        with pytest.raises(PromptSyntaxError) as info:
            compile_validator(schema, prompt_id="hello")
        message = str(info.value)
        assert message.startswith(
            "prompt 'hello': input.schema['properties']['name']['minLength'] is not a valid "
            "JSON Schema: "
        )
        assert message.endswith("fix the schema (Draft 2020-12) or write it in Picoschema")

    def test_unknown_type_name_falls_back_and_is_reported(self) -> None:
        with pytest.raises(PromptSyntaxError, match="is not a valid JSON Schema"):
            compile_validator(obj(a={"type": "str"}), prompt_id="p")


def test_jsonschema_is_imported_only_for_schemas_outside_the_subset() -> None:
    code = (
        "import sys\n"
        "from promptdock._validation import compile_validator\n"
        "schema = {'type': 'object', 'properties': {'q': {'type': 'string', 'description': 'd'},"
        " 'tags': {'type': 'array', 'items': {'enum': ['a']}}}, 'required': ['q'],"
        " 'additionalProperties': False}\n"
        "compile_validator(schema, prompt_id='p')({'q': 'x', 'tags': ['a']})\n"
        "assert 'jsonschema' not in sys.modules, 'imported early'\n"
        "compile_validator({'properties': {'q': {'minLength': 1}}}, prompt_id='p')({'q': 'x'})\n"
        "assert 'jsonschema' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------
# Both paths agree on what is valid

_SCALAR_TYPES = ["string", "integer", "number", "boolean", "null"]
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.0, 1.0, 2.5, -1.5])
    | st.sampled_from(["", "a", "b"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3)
    ),
    max_leaves=8,
)


def _subset_schemas() -> st.SearchStrategy[Any]:
    def node(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        names = st.lists(st.sampled_from("abc"), unique=True, max_size=3)
        objects = st.builds(
            lambda props, required, extra: {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": extra,
            },
            st.dictionaries(st.sampled_from("abc"), children, max_size=3),
            names,
            st.booleans() | children,
        )
        arrays = st.builds(lambda items: {"type": "array", "items": items}, children)
        return objects | arrays

    leaves = (
        st.sampled_from(_SCALAR_TYPES).map(lambda t: {"type": t})
        | st.lists(
            st.sampled_from([*_SCALAR_TYPES, "object", "array"]),
            min_size=1,
            max_size=3,
            unique=True,
        ).map(lambda ts: {"type": ts})
        | st.lists(_values, min_size=1, max_size=3).map(lambda e: {"enum": e})
        | st.booleans()
        | st.just({"description": "anything"})
    )
    return st.recursive(leaves, node, max_leaves=6)


@settings(max_examples=150, deadline=None)
@given(schema=_subset_schemas(), value=_values)
def test_fast_path_agrees_with_jsonschema(schema: Any, value: Any) -> None:
    root = {"type": "object", "properties": {"v": schema}, "required": ["v"]}
    fast = _validation._build(root, None)
    slow = _validation._jsonschema_validator(root, None)
    outcomes: list[bool | None] = []
    for validate in (fast, slow):
        try:
            validate({"v": value})
        except InputValidationError as exc:
            outcomes.append(exc.field is not None and exc.field.startswith("v"))
        else:
            outcomes.append(None)
    assert (outcomes[0] is None) == (outcomes[1] is None), (root, value)
    assert outcomes[0] in (None, True)


def test_fast_path_agrees_on_a_known_tricky_case() -> None:
    # bool is not an integer in either, and 1.0 is in both
    root = {"type": "object", "properties": {"v": {"type": "integer"}}}
    for value, valid in ((True, False), (1.0, True), (1.5, False)):
        for validate in (
            _validation._build(root, None),
            _validation._jsonschema_validator(root, None),
        ):
            if valid:
                validate({"v": value})
            else:
                with pytest.raises(InputValidationError, match=re.escape("must be integer")):
                    validate({"v": value})
