"""The offline ``mock`` dispatcher: canned answers, echoes, streams, and staying out of the way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pluggy
import pytest

import promptdock.hookspecs
from promptdock.dispatch import mock
from promptdock.models import CompletionRequest
from promptdock.response import ModelResponse, ObjectDict

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hi to Ada"},
]


@pytest.fixture
def pm() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("promptdock")
    manager.add_hookspecs(promptdock.hookspecs)
    manager.register(mock, name="mock")
    return manager


def _request(**overrides: Any) -> CompletionRequest:
    fields: dict[str, Any] = {"model": "gpt-4", "messages": MESSAGES, **overrides}
    return CompletionRequest(**fields)


def _chunks(result: object) -> list[ObjectDict]:
    assert isinstance(result, Iterator)
    return list(result)


# -- non-streaming ----------------------------------------------------------------------


def test_mock_response_is_answered_verbatim_through_the_hook(pm: pluggy.PluginManager) -> None:
    result = pm.hook.dispatch(request=_request(mock_response="Hi, Ada!"))
    assert isinstance(result, ModelResponse)
    assert result.object == "chat.completion"
    assert result.model == "gpt-4"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == "Hi, Ada!"
    assert result["choices"][0]["finish_reason"] == "stop"
    # a token per four characters, rounded up, per message: 14 and 13 characters in, 8 out
    assert result.usage.to_dict() == {
        "prompt_tokens": 8,
        "completion_tokens": 2,
        "total_tokens": 10,
    }


def test_mock_response_wins_over_any_model() -> None:
    result = mock.dispatch(_request(model="mock/echo", mock_response=""))
    assert isinstance(result, ModelResponse)
    assert result.choices[0].message.content == ""
    assert result.usage.completion_tokens == 0


def test_mock_model_echoes_the_rendered_messages() -> None:
    result = mock.dispatch(_request(model="mock/anything"))
    assert isinstance(result, ModelResponse)
    assert result.model == "mock/anything"
    assert result.choices[0].message.content == "system: You are terse.\n\nuser: Say hi to Ada"


def test_echo_of_multiline_and_content_parts() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "line one\n  line two"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None},
    ]
    assert mock.echo_text(messages) == "user: line one\n  line two\n\nuser: look\n\nassistant: "


def test_response_matches_from_text_except_id_and_time() -> None:
    ours = mock.mock_response("a b c", model="m", prompt_tokens=4)
    # five characters: two tokens
    reference = ModelResponse.from_text("a b c", model="m", prompt_tokens=4, completion_tokens=2)
    for key in ("id", "created"):
        del ours[key], reference[key]
    assert ours == reference
    assert type(ours.choices[0].message) is ObjectDict
    assert ours.prompt is None
    # the wire format round-trips
    assert json.loads(json.dumps(ours)) == reference.to_dict()


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], 0),
        ([{"role": "user", "content": ""}], 0),
        ([{"role": "user", "content": "abcd"}], 1),
        ([{"role": "user", "content": "abcde"}, {"role": "user", "content": "a"}], 3),
        ([{"role": "assistant", "content": None}], 0),
        ([{"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, {"x": 1}]}], 2),
    ],
)
def test_prompt_tokens_are_a_token_per_four_characters_per_message(
    messages: list[dict[str, Any]], expected: int
) -> None:
    result = mock.dispatch(_request(messages=messages, mock_response="x"))
    assert isinstance(result, ModelResponse)
    assert result.usage.prompt_tokens == expected
    assert result.usage.total_tokens == expected + 1


def test_ids_are_unique_per_call() -> None:
    ids = {mock.mock_response("x", model="m").id for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("chatcmpl-") for i in ids)


# -- streaming --------------------------------------------------------------------------


def test_stream_chunk_shapes(pm: pluggy.PluginManager) -> None:
    text = "one two three four five six seven"
    chunks = _chunks(pm.hook.dispatch(request=_request(mock_response=text, stream=True)))
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {"gpt-4"}
    assert chunks[0].choices[0].delta == {"role": "assistant"}
    assert chunks[-1].choices[0].delta == {}
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert pieces == ["one two three ", "four five six ", "seven"]
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("text", ["  lead\n\nand  trail \n", "x", "", "   "])
def test_stream_pieces_join_back_to_the_text(text: str) -> None:
    chunks = _chunks(mock.dispatch(_request(mock_response=text, stream=True)))
    assert "".join(c.choices[0].delta.get("content", "") for c in chunks) == text
    assert all(c.choices[0].delta.get("content") != "" for c in chunks)


def test_stream_of_an_echo_with_usage() -> None:
    request = _request(
        model="mock/x", stream=True, params={"stream_options": {"include_usage": True}}
    )
    chunks = _chunks(mock.dispatch(request))
    *answer, last = chunks
    assert all(c.usage is None for c in answer)
    assert last.choices == []
    text = "".join(c.choices[0].delta.get("content", "") for c in answer)
    assert text == "system: You are terse.\n\nuser: Say hi to Ada"
    # the echo is 43 characters: 11 tokens
    assert last.usage.to_dict() == {
        "prompt_tokens": 8,
        "completion_tokens": 11,
        "total_tokens": 19,
    }


# -- declining --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4", "openai/mock/x", "mock", "Mock/x"])
def test_other_models_are_left_to_the_next_dispatcher(pm: pluggy.PluginManager, model: str) -> None:
    assert mock.dispatch(_request(model=model)) is None
    assert mock.dispatch(_request(model=model, stream=True)) is None
    assert pm.hook.dispatch(request=_request(model=model)) is None
