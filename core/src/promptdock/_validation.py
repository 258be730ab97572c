"""Check the variables passed to a prompt against its ``input.schema``.

Picoschema compiles to a small JSON Schema subset (``type``, ``properties``, ``required``,
``additionalProperties``, ``items``, ``enum`` plus annotations such as ``description``). Schemas
that stay inside it get a hand-written validator built from closures, cheap enough for the
per-call path. Any other keyword (``minLength``, ``pattern``, ``oneOf``, ``$ref``...) switches the
whole schema to ``jsonschema``'s Draft 2020-12 validator, imported only then.

Both paths agree on what is valid, with two deliberate widenings of JSON's types for Python
callers: any :class:`~collections.abc.Mapping` is an ``object`` and a ``tuple`` is an ``array``.

**Extra top-level variables are always allowed**, even under ``additionalProperties: false``
(which Picoschema emits for every object): callers routinely pass a shared context dict to many
prompts, and a variable the template never reads is harmless. Nested objects follow their schema
exactly.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Number
from typing import TYPE_CHECKING, Any

from promptdock.errors import InputValidationError, PromptSyntaxError

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

__all__ = ["Validator", "compile_validator"]

Validator = Callable[[Mapping[str, Any]], None]
"""Checks a prompt's variables; raises :class:`~promptdock.errors.InputValidationError`."""

_Check = Callable[[Any, str], None]
"""Checks one value found at a field path (``"user.tags[2]"``)."""

_ANNOTATIONS = frozenset(
    {"description", "title", "default", "examples", "$comment", "$schema", "deprecated"}
)
_SUBSET_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum"}
)
_KNOWN_TYPES = frozenset({"string", "integer", "number", "boolean", "null", "object", "array"})
_STRING_ROOT_KEYS = frozenset({"type", "properties", "required", "additionalProperties"})

_CACHE_SIZE = 256
_cache: dict[tuple[int, str | None], tuple[Mapping[str, Any], Validator]] = {}
_cache_lock = threading.Lock()


def compile_validator(schema: Mapping[str, Any], *, prompt_id: str | None) -> Validator:
    """Build (or reuse) the validator for a prompt's input schema.

    The result is cached per schema object and prompt id; the cache holds the schema so its id
    cannot be reused while the entry lives.

    :param schema: the prompt's ``input.schema`` as JSON Schema (an object schema).
    :param prompt_id: named in error messages; ``None`` when the schema belongs to no prompt.
    :returns: a callable taking the variables and returning ``None`` when they are valid.
    :raises PromptSyntaxError: the schema falls outside the fast subset and is not a valid
        Draft 2020-12 schema.
    """
    key = (id(schema), prompt_id)
    entry = _cache.get(key)
    if entry is not None and entry[0] is schema:
        return entry[1]
    validator = _build(schema, prompt_id)
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            # Oldest first: schemas belong to loaded prompts, which are themselves cached.
            del _cache[next(iter(_cache))]
        _cache[key] = (schema, validator)
    return validator


def _build(schema: Mapping[str, Any], prompt_id: str | None) -> Validator:
    if _in_subset(schema):
        check = _Compiler(prompt_id).node(schema, root=True)
        if check is None:
            return _accept_all
        fields = _string_fields(schema)
        if fields is not None:
            # The usual prompt: every variable a string or a list of strings. When each one is,
            # there is nothing to report; else the full check finds what is wrong (or passes an
            # absent optional variable, or a tuple).
            names = tuple(fields)
            kinds = tuple(fields.values())
            lists = tuple(name for name, kind in fields.items() if kind is list)

            def validate_strings(variables: Mapping[str, Any]) -> None:
                if type(variables) is dict and tuple(map(type, map(variables.get, names))) == kinds:
                    for name in lists:
                        if not set(map(type, variables[name])) <= _JUST_STR:
                            break
                    else:
                        return
                check(variables, "")

            return validate_strings

        def validate(variables: Mapping[str, Any]) -> None:
            check(variables, "")

        return validate
    return _jsonschema_validator(schema, prompt_id)


def _string_fields(schema: Mapping[str, Any]) -> dict[str, type] | None:
    """For a root schema that asks only for strings and lists of strings, each property's
    Python type (``str`` or ``list``); ``None`` for any other schema.

    At the root ``additionalProperties`` is ignored (see the module docstring) and annotations
    constrain nothing; ``required`` must name declared properties.
    """
    if schema.get("type", "object") not in ("object", ["object"]):
        return None
    if not all(key in _STRING_ROOT_KEYS or key in _ANNOTATIONS for key in schema):
        return None
    properties = schema.get("properties", {})
    if not set(schema.get("required", ())) <= set(properties):
        return None
    kinds: dict[str, type] = {}
    for name, sub in properties.items():
        if _is_plain_string(sub):
            kinds[name] = str
        elif _is_string_list(sub):
            kinds[name] = list
        else:
            return None
    return kinds


def _is_string_list(schema: Any) -> bool:
    """Whether ``schema`` asks for an array of plain strings and nothing more."""
    return (
        isinstance(schema, Mapping)
        and schema.get("type") in ("array", ["array"])
        and _is_plain_string(schema.get("items"))
        and all(key in ("type", "items") or key in _ANNOTATIONS for key in schema)
    )


_JUST_STR = frozenset({str})


def _accept_all(variables: Mapping[str, Any]) -> None:
    """Validator for a schema that constrains nothing."""


# ---------------------------------------------------------------------------------------------
# The fast subset


def _in_subset(schema: Any) -> bool:
    """Whether the hand-written validator understands every keyword of ``schema``."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping):
        return False
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key not in _SUBSET_KEYWORDS:
            return False
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names:
                return False
            if not all(isinstance(n, str) and n in _KNOWN_TYPES for n in names):
                return False
            if len(set(names)) != len(names):  # invalid JSON Schema: let jsonschema say so
                return False
        elif key == "properties":
            if not isinstance(value, Mapping):
                return False
            if not all(isinstance(k, str) and _in_subset(v) for k, v in value.items()):
                return False
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                return False
        elif key in ("additionalProperties", "items"):
            if not _in_subset(value):
                return False
        elif key == "enum" and not isinstance(value, list):
            return False
    return True


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    # JSON has one number type, so 3.0 is an integer (as in jsonschema since Draft 6).
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) or (
        isinstance(value, Number) and not isinstance(value, bool)
    )


def _is_object(value: Any) -> bool:
    # The exact dict test first: the Mapping ABC check is several times slower.
    return isinstance(value, dict) or isinstance(value, Mapping)  # noqa: SIM101


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": _is_object,
    "array": lambda v: isinstance(v, (list, tuple)),
}


def _json_equal(one: Any, two: Any) -> bool:
    """JSON equality: ``True`` is not ``1``, but ``1`` is ``1.0``; containers compare deeply."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, bool) or isinstance(two, bool):
        return False  # `is` already matched equal booleans
    if isinstance(one, (list, tuple)) and isinstance(two, (list, tuple)):
        return len(one) == len(two) and all(
            _json_equal(a, b) for a, b in zip(one, two, strict=True)
        )
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return one.keys() == two.keys() and all(_json_equal(one[k], two[k]) for k in one)
    try:
        return bool(one == two)
    except Exception:  # an exotic object whose __eq__ fails is simply not equal
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {_short(value)}"


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _expected(schema: Any) -> str:
    """How a schema reads in a message: ``string``, ``string or null``, ``one of 'a', 'b'``."""
    if schema is False:
        return "nothing: the schema forbids it"
    if not isinstance(schema, Mapping):
        return "any value"
    if "enum" in schema and isinstance(schema["enum"], list):
        return "one of " + ", ".join(_short(v) for v in schema["enum"])
    types = schema.get("type")
    if isinstance(types, str):
        return types
    if isinstance(types, list) and types:
        return " or ".join(str(t) for t in types)
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "any value"


class _Compiler:
    """Turns a subset schema into nested ``_Check`` closures, naming ``prompt_id`` in errors."""

    def __init__(self, prompt_id: str | None) -> None:
        self.prompt_id = prompt_id
        self.prefix = f"prompt {prompt_id!r}: " if prompt_id else ""

    def fail(self, path: str, problem: str) -> InputValidationError:
        subject = f"variable {path!r}" if path else "the variables"
        return InputValidationError(
            f"{self.prefix}{subject} {problem}", prompt_id=self.prompt_id, field=path or None
        )

    def node(self, schema: Any, *, root: bool = False) -> _Check | None:
        """The check for one schema node; ``None`` when the node accepts everything."""
        if schema is True:
            return None
        if schema is False:
            return self._reject_all()
        checks: list[_Check] = []
        type_check = self._type(schema)
        if type_check is not None:
            checks.append(type_check)
        if "enum" in schema:
            checks.append(self._enum(schema["enum"]))
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            object_check = self._object(schema, root=root)
            if object_check is not None:
                checks.append(object_check)
        if "items" in schema:
            items_check = self._items(schema["items"])
            if items_check is not None:
                checks.append(items_check)
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]
        all_checks = tuple(checks)

        def check_all(value: Any, path: str) -> None:
            for check in all_checks:
                check(value, path)

        return check_all

    def _reject_all(self) -> _Check:
        def reject(value: Any, path: str) -> None:
            raise self.fail(path, "is not allowed here (its schema is 'false')")

        return reject

    def _type(self, schema: Mapping[str, Any]) -> _Check | None:
        names = schema.get("type")
        if names is None:
            return None
        if isinstance(names, str):
            names = [names]
        expected = " or ".join(names)
        tests = tuple(_TYPE_TESTS[n] for n in dict.fromkeys(names))
        if names == ["string"]:  # the common case, one call less than check_one

            def check_string(value: Any, path: str) -> None:
                if not isinstance(value, str):
                    raise self.fail(path, f"must be string, {_got(value)}")

            return check_string
        if len(tests) == 1:
            test = tests[0]

            def check_one(value: Any, path: str) -> None:
                if not test(value):
                    raise self.fail(path, f"must be {expected}, {_got(value)}")

            return check_one

        def check_any(value: Any, path: str) -> None:
            for candidate in tests:
                if candidate(value):
                    return
            raise self.fail(path, f"must be {expected}, {_got(value)}")

        return check_any

    def _enum(self, members: list[Any]) -> _Check:
        strings = frozenset(m for m in members if isinstance(m, str))
        others = tuple(m for m in members if not isinstance(m, str))
        expected = _expected({"enum": members})

        def check_enum(value: Any, path: str) -> None:
            if isinstance(value, str):
                if value in strings:
                    return
            elif any(_json_equal(value, m) for m in others):
                return
            raise self.fail(path, f"must be {expected}, {_got(value)}")

        return check_enum

    def _object(self, schema: Mapping[str, Any], *, root: bool) -> _Check | None:
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = dict.fromkeys(schema.get("required", ()))
        # (name, check, required?, expected) in declaration order, then required-only names.
        fields: list[tuple[str, _Check | None, bool, str]] = [
            (name, self.node(sub), name in required, _expected(sub))
            for name, sub in properties.items()
        ]
        fields += [(name, None, True, "any value") for name in required if name not in properties]
        fields = [f for f in fields if f[1] is not None or f[2]]
        extra = None if root else schema.get("additionalProperties", True)
        extra_check = None if extra is None or extra is True else self.node(extra)
        known = frozenset(properties)
        allowed = ", ".join(repr(n) for n in properties) or "no variables"
        if not fields and extra_check is None:
            return None
        entries = tuple(fields)
        # Plain string fields (most prompt variables) are checked first, all at once: when each
        # one holds a str, only the other fields are left to check one by one, in order; else
        # every field is, in order, so the first field at fault is the one reported.
        plain = tuple(name for name, _, _, _ in entries if _is_plain_string(properties.get(name)))
        plain_types = (str,) * len(plain)
        rest = tuple(entry for entry in entries if entry[0] not in plain)
        fail = self.fail
        missing = object()

        def check_object(value: Any, path: str) -> None:
            if not _is_object(value):
                return  # `type` (if any) reports the wrong type; JSON Schema ignores the rest
            to_check = entries
            if plain and tuple(map(type, map(value.get, plain))) == plain_types:
                to_check = rest
            for name, check, is_required, expected in to_check:
                item = value.get(name, missing)
                if item is missing:
                    if is_required:
                        hint = "" if path else "; pass it or give it a default under input.default"
                        raise fail(_child(path, name), f"is required (expected {expected}){hint}")
                elif check is not None:
                    check(item, _child(path, name))
            if extra_check is not None:
                for name in value:
                    if name not in known:
                        if extra is False:
                            raise fail(
                                _child(path, str(name)),
                                f"is not allowed: {path!r} accepts only {allowed}; "
                                "remove it or add it to the schema",
                            )
                        extra_check(value[name], _child(path, str(name)))

        return check_object

    def _items(self, items: Any) -> _Check | None:
        check = self.node(items)
        if check is None:
            return None
        if _is_plain_string(items):
            fail = self.fail

            def check_strings(value: Any, path: str) -> None:
                # No index path is built for items that pass: most do.
                if isinstance(value, (list, tuple)):
                    for index, item in enumerate(value):
                        if not isinstance(item, str):
                            raise fail(f"{path}[{index}]", f"must be string, {_got(item)}")

            return check_strings

        def check_items(value: Any, path: str) -> None:
            if isinstance(value, (list, tuple)):
                for index, item in enumerate(value):
                    check(item, f"{path}[{index}]")

        return check_items


def _is_plain_string(schema: Any) -> bool:
    """Whether ``schema`` asks for a string and nothing more (annotations aside)."""
    return (
        isinstance(schema, Mapping)
        and schema.get("type") in ("string", ["string"])
        and all(key == "type" or key in _ANNOTATIONS for key in schema)
    )


# ---------------------------------------------------------------------------------------------
# Everything else: jsonschema, loaded on first use


@functools.cache
def _validator_class() -> Any:
    """Draft 2020-12 with the same type widenings as the fast path.

    So a schema's meaning does not depend on which validator it happens to get.
    """
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many(
        {
            "object": lambda _checker, value: _is_object(value),
            "array": lambda _checker, value: isinstance(value, (list, tuple)),
        }
    )
    return validators.extend(Draft202012Validator, type_checker=checker)


def _jsonschema_validator(schema: Mapping[str, Any], prompt_id: str | None) -> Validator:
    from jsonschema import exceptions

    validator_class = _validator_class()
    # Extra top-level variables are allowed (see the module docstring).
    root = {
        k: v
        for k, v in schema.items()
        if k not in ("additionalProperties", "unevaluatedProperties")
    }
    where = f"prompt {prompt_id!r}: " if prompt_id else ""
    try:
        validator_class.check_schema(root)
    except exceptions.SchemaError as exc:
        location = "".join(f"[{p!r}]" for p in exc.absolute_path)
        raise PromptSyntaxError(
            f"{where}input.schema{location} is not a valid JSON Schema: {_clip(exc.message)}; "
            "fix the schema (Draft 2020-12) or write it in Picoschema"
        ) from None
    validator = validator_class(root)

    def validate(variables: Mapping[str, Any]) -> None:
        error = exceptions.best_match(validator.iter_errors(variables))
        if error is not None:
            raise _translate(error, prompt_id) from None

    return validate


def _clip(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."


def _format_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _child(path, str(part))
    return path


def _translate(error: ValidationError, prompt_id: str | None) -> InputValidationError:
    """A jsonschema error in the same words as the fast path's."""
    compiler = _Compiler(prompt_id)
    path = _format_path(error.absolute_path)
    keyword = error.validator
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    instance = error.instance
    if keyword == "required" and isinstance(instance, Mapping):
        names: Sequence[Any] = error.validator_value
        name = next((n for n in names if n not in instance), None)
        if name is not None:
            sub = schema.get("properties", {}).get(name)
            hint = "" if path else "; pass it or give it a default under input.default"
            return compiler.fail(
                _child(path, name), f"is required (expected {_expected(sub)}){hint}"
            )
    if keyword == "type":
        return compiler.fail(
            path, f"must be {_expected({'type': error.validator_value})}, {_got(instance)}"
        )
    if keyword == "enum":
        return compiler.fail(path, f"must be {_expected(schema)}, {_got(instance)}")
    return compiler.fail(path, f"is invalid ({keyword}): {_clip(error.message)}")
