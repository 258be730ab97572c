"""Parsing a chat completion body: what steers the proxy, what goes upstream, what is refused."""

from __future__ import annotations

import inspect

import pytest

from promptdock import PromptDock
from promptdock.proxy.chat import (
    CONTROL_FIELDS,
    REFUSED_FIELDS,
    ChatRequest,
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
