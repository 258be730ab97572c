"""Parsing a chat completion body: what steers the proxy, what goes upstream, what is refused."""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any

import pytest

from promptdock import PromptDock
from promptdock.proxy.chat import (
    CONTROL_FIELDS,
    REFUSED_FIELDS,
    ChatRequest,
    _new_chat_request,
    parse_chat_request,
)
from promptdock.proxy.errors import ApiError


def test_control_fields_are_split_from_upstream_parameters() -> None:
    request = parse_chat_request(
        b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true,'
        b' "prompt_id": "support/triage", "prompt_variables": {"ticket": "t"},'
        b' "prompt_version": "2", "temperature": 0.3, "tools": [], "top_k": 5}'
    )

    assert request == ChatRequest(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        prompt_id="support/triage",
        prompt_variables={"ticket": "t"},
        prompt_version=2,
        stream=True,
        params={"temperature": 0.3, "tools": [], "top_k": 5},
    )


def test_optional_fields_default_to_nothing() -> None:
    request = parse_chat_request(b'{"model": "m"}')

    assert request == ChatRequest("m", None, None, None, None, False, {})


def test_every_keyword_of_prepare_request_is_steered_or_refused() -> None:
    # A body field that reached prepare_request as a keyword could redirect the upstream
    # call (api_base) or replace its credentials: each one must be handled explicitly.
    keywords = {
        name
        for name, parameter in inspect.signature(PromptDock.prepare_request).parameters.items()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD and name != "self"
    }

    assert keywords <= CONTROL_FIELDS | REFUSED_FIELDS
    assert not CONTROL_FIELDS & REFUSED_FIELDS


@pytest.mark.parametrize("field", sorted(REFUSED_FIELDS))
def test_refused_fields_are_400(field: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(b'{"model": "m", "%s": "x"}' % field.encode())

    assert caught.value.status == 400
    assert caught.value.param == field
    assert caught.value.code == "param_not_allowed"
    assert caught.value.message == (
        f"{field!r} may not be set in the request: the proxy's config.yaml decides where "
        f"requests go and with which credentials; remove it"
    )


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b'{"model": ""}', "model", "'model' is required"),
        (b'{"model": 4}', "model", "'model' is required"),
        (b'{"model": "m", "messages": {}}', "messages", "'messages' must be a list"),
        (
            b'{"model": "m", "messages": [{"content": "x"}]}',
            "messages[0]",
            "messages[0] must be an object with a string 'role'",
        ),
        (b'{"model": "m", "prompt_id": ""}', "prompt_id", "'prompt_id' must be a non-empty"),
        (b'{"model": "m", "prompt_version": -1}', "prompt_version", "'prompt_version' must be"),
        (b'{"model": "m", "prompt_version": true}', "prompt_version", "'prompt_version' must"),
        (
            b'{"model": "m", "append_messages": 1}',
            "append_messages",
            "'append_messages' must be true",
        ),
        (
            b'{"model": "m", "mock_response": 1}',
            "mock_response",
            "'mock_response' must be a string",
        ),
    ],
)
def test_invalid_fields_are_400_naming_them(body: bytes, param: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(body)

    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.message.startswith(message)


def test_body_that_is_not_utf8_is_400() -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(b'{"model": "\xff"}')

    assert caught.value.code == "invalid_json"
    assert caught.value.message.startswith("the request body is not valid JSON (")


def test_the_quick_constructor_sets_every_field() -> None:
    names: list[Any] = [field.name for field in fields(ChatRequest)]
    assert list(inspect.signature(_new_chat_request).parameters) == names
    made = _new_chat_request(*names)
    assert made == ChatRequest(*names)
    assert vars(made) == dict(zip(names, names, strict=True))


@pytest.mark.parametrize(
    "body",
    [
        '{"model": "m", "top_k": "\u00e9"}'.encode("utf-16"),  # with its byte order mark
        '{"model": "m", "top_k": "\u00e9"}'.encode("utf-16-le"),
        '{"model": "m", "top_k": "\u00e9"}'.encode("utf-8-sig"),
        b' {"model": "m", "top_k": "\xc3\xa9"}',
        b'{"model": "m", "top_k": "\xc3\xa9"}',
    ],
)
def test_bodies_are_decoded_as_json_loads_decodes_them(body: bytes) -> None:
    assert parse_chat_request(body).params == {"top_k": "\u00e9"}


def test_a_lone_surrogate_is_kept_as_json_loads_keeps_it() -> None:
    request = parse_chat_request(b'{"model": "m", "top_k": "\xed\xa0\x80"}')

    assert request.params == {"top_k": "\ud800"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'{"model": "m",}',
            "Expecting property name enclosed in double quotes: line 1 column 15 (char 14)",
        ),
        (b"{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (
            b'{"model": "\xff"}',
            "'utf-8' codec can't decode byte 0xff in position 11: invalid start byte",
        ),
        (b"", "Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_a_body_that_is_not_json_is_400_saying_why(body: bytes, reason: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(body)

    assert caught.value.status == 400
    assert caught.value.code == "invalid_json"
    assert caught.value.message == (
        f"the request body is not valid JSON ({reason}); send a JSON object such as "
        '{"model": "...", "messages": [...]}'
    )
