"""Parse a ``POST /v1/chat/completions`` body: parsed once, checked, split for the dock.

``model``, ``messages``, ``stream`` and promptdock's ``prompt_id``, ``prompt_variables`` and
``prompt_version`` steer the request; every other field (``temperature``, ``tools``,
``response_format``, vendor extensions...) is passed to the upstream as a parameter, where it
wins over the deployment's ``litellm_params`` and the prompt's frontmatter.

Fields that would change where a request goes or with which credentials (``api_base``,
``api_key``, ``extra_headers``...) are refused: the proxy's config decides that, and a client
able to set ``api_base`` could have the proxy send its upstream key anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from promptdock.dispatch._openai_wire import object_decoder
from promptdock.proxy.errors import ApiError

__all__ = ["CONTROL_FIELDS", "REFUSED_FIELDS", "ChatRequest", "parse_chat_request"]

CONTROL_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "prompt_id",
        "prompt_variables",
        "prompt_version",
        "mock_response",
        "append_messages",
    }
)
"""Body fields the proxy acts on itself; none is sent upstream as a parameter."""

REFUSED_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "organization",
        "extra_headers",
        "timeout",
        "request_timeout",
        "max_retries",
        "bitbucket_config",
        "custom_llm_provider",
    }
)
"""Body fields a client may not set: connection settings belong to the proxy's config."""


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat completion request.

    :ivar model: the ``model_list`` name asked for.
    :ivar messages: the client's messages (replaced by a prompt's, unless ``append_messages``).
    :ivar prompt_id: the prompt to use instead of the deployment's.
    :ivar prompt_variables: the prompt's variables.
    :ivar prompt_version: ``N`` for ``<prompt_id>.vN.prompt``.
    :ivar stream: answer with server-sent events.
    :ivar params: every other field, for the upstream.
    :ivar mock_response: answer with this text and call no model (LiteLLM's testing field).
    :ivar append_messages: send the client's messages after the prompt's.
    """

    model: str
    messages: list[dict[str, Any]] | None
    prompt_id: str | None
    prompt_variables: Mapping[str, Any] | None
    prompt_version: int | None
    stream: bool
    params: dict[str, Any]
    mock_response: str | None = None
    append_messages: bool = False


def _new_chat_request(
    model: str,
    messages: list[dict[str, Any]] | None,
    prompt_id: str | None,
    prompt_variables: Mapping[str, Any] | None,
    prompt_version: int | None,
    stream: bool,
    params: dict[str, Any],
    mock_response: str | None,
    append_messages: bool,
) -> ChatRequest:
    """``ChatRequest(...)`` with every field given by position, built cheaply.

    A frozen dataclass sets each field through ``object.__setattr__``, which costs more than
    the checks of a small request (as for ``models._new_request``, which this follows). A test
    keeps the parameters equal to the class's fields.
    """
    request = object.__new__(ChatRequest)
    fields = request.__dict__
    fields["model"] = model
    fields["messages"] = messages
    fields["prompt_id"] = prompt_id
    fields["prompt_variables"] = prompt_variables
    fields["prompt_version"] = prompt_version
    fields["stream"] = stream
    fields["params"] = params
    fields["mock_response"] = mock_response
    fields["append_messages"] = append_messages
    return request


_decode = object_decoder()


def _load(body: bytes) -> Any:
    """``json.loads(body)``: a body that opens as a JSON object in UTF-8 (what clients send)
    skips its search for the encoding and its Python layers, a third of the cost for a small
    body; others (a BOM, UTF-16 or 32, leading spaces) take the same path as before."""
    if body[:1] == b"{" and body[1:2] != b"\x00":
        return _decode(body.decode("utf-8", "surrogatepass"))
    return json.loads(body)


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def parse_chat_request(body: bytes) -> ChatRequest:
    """Parse and check a request body.

    :raises ApiError: 400 naming the offending field.
    """
    try:
        data = _load(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(
            400,
            f"the request body is not valid JSON ({exc}); send a JSON object such as "
            f'{{"model": "...", "messages": [...]}}',
            code="invalid_json",
        ) from None
    if type(data) is not dict:
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    params: dict[str, Any] = {}
    for name, value in data.items():
        if name in CONTROL_FIELDS:
            continue
        if name in REFUSED_FIELDS:
            raise _bad(
                f"{name!r} may not be set in the request: the proxy's config.yaml decides where "
                f"requests go and with which credentials; remove it",
                name,
                "param_not_allowed",
            )
        params[name] = value
    get = data.get
    model = get("model")
    if type(model) is not str or not model:
        raise _bad(
            "'model' is required: name one of the proxy's models (GET /v1/models lists them)",
            "model",
        )
    return _new_chat_request(
        model,
        _messages(get("messages")),
        _prompt_id(get("prompt_id")),
        _variables(get("prompt_variables")),
        _version(get("prompt_version")),
        _flag(get("stream"), "stream"),
        params,
        _mock(get("mock_response")),
        _flag(get("append_messages"), "append_messages"),
    )


def _messages(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if type(value) is not list:
        raise _bad("'messages' must be a list of {role, content} objects", "messages")
    for index, message in enumerate(value):
        if type(message) is not dict or type(message.get("role")) is not str:
            raise _bad(
                f"messages[{index}] must be an object with a string 'role'", f"messages[{index}]"
            )
    return value


def _prompt_id(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not value:
        raise _bad("'prompt_id' must be a non-empty string such as 'support/triage'", "prompt_id")
    return value


def _variables(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _bad(
            "'prompt_variables' must be a JSON object of variables, such as "
            '{"user_message": "Hi"}',
            "prompt_variables",
        )
    return value


def _version(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is str and value.isdigit():
        return int(value)
    if type(value) is not int or value < 0:
        raise _bad(
            "'prompt_version' must be a version number N (for <prompt_id>.vN.prompt)",
            "prompt_version",
        )
    return value


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if type(value) is not bool:
        raise _bad(f"'{name}' must be true or false", name)
    return value


def _mock(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise _bad("'mock_response' must be a string", "mock_response")
    return value
