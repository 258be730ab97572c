"""The object API: source resolution, model prefixes, precedence, errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import tests.support.memory_source as memory_source
from promptdock import (
    CompletionRequest,
    CompletionStream,
    ConfigError,
    DispatchError,
    InputValidationError,
    ModelResponse,
    PromptDock,
    PromptNotFoundError,
    hookimpl,
)

HELLO = """---
model: gpt-4
temperature: 0.7
max_tokens: 150
input:
  schema:
    user_message: string
---
System: You are a helpful assistant.

User: {{user_message}}
"""

TEMPLATED_MODEL = """---
model: "{{preferred_model}}"
---
User: {{user_message}}
"""

NO_MODEL = "User: {{user_message}}\n"


class Recorder:
    """A dispatch plugin that records requests and answers before the built-ins."""

    def __init__(self) -> None:
        self.requests: list[CompletionRequest] = []

    @hookimpl(tryfirst=True)
    def dispatch(self, request: CompletionRequest) -> ModelResponse:
        self.requests.append(request)
        return ModelResponse.from_text("recorded", model=request.model)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def dock(recorder: Recorder) -> PromptDock:
    files = {"hello.prompt": HELLO, "templated.prompt": TEMPLATED_MODEL, "plain.prompt": NO_MODEL}
    return PromptDock(
        sources={"mem": {"kind": "memory", "files": files}},
        load_entrypoints=False,
        plugins=[("memory", memory_source), ("recorder", recorder)],
    )


def _request(recorder: Recorder) -> CompletionRequest:
    assert len(recorder.requests) == 1
    return recorder.requests[0]


def test_prompt_messages_model_and_params_reach_the_dispatcher(
    dock: PromptDock, recorder: Recorder
) -> None:
    reply = dock.completion(
        model="mem/gpt-3.5-turbo", prompt_id="hello", prompt_variables={"user_message": "Hi"}
    )
    assert isinstance(reply, ModelResponse)
    request = _request(recorder)
    assert request.model == "gpt-4"  # the prompt's model beats the one after the prefix
    assert request.messages == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi"},
    ]
    assert dict(request.params) == {"temperature": 0.7, "max_tokens": 150}
    assert reply.prompt is not None
    assert reply.prompt.prompt_id == "hello"
    assert request.provenance == reply.prompt


def test_caller_parameters_beat_frontmatter(dock: PromptDock, recorder: Recorder) -> None:
    dock.completion(
        model="mem/gpt-4",
        prompt_id="hello",
        prompt_variables={"user_message": "Hi"},
        temperature=0.1,
        top_p=0.5,
    )
    assert dict(_request(recorder).params) == {"temperature": 0.1, "max_tokens": 150, "top_p": 0.5}


def test_model_after_prefix_is_used_when_prompt_names_none(
    dock: PromptDock, recorder: Recorder
) -> None:
    dock.completion(
        model="mem/gpt-4o-mini", prompt_id="plain", prompt_variables={"user_message": "x"}
    )
    assert _request(recorder).model == "gpt-4o-mini"


def test_model_may_be_a_template(dock: PromptDock, recorder: Recorder) -> None:
    variables = {"user_message": "x", "preferred_model": "claude-3"}
    dock.completion(model="mem/gpt-4", prompt_id="templated", prompt_variables=variables)
    assert _request(recorder).model == "claude-3"


def test_empty_templated_model_falls_back_to_prefix_model(
    dock: PromptDock, recorder: Recorder
) -> None:
    dock.completion(
        model="mem/gpt-4", prompt_id="templated", prompt_variables={"user_message": "x"}
    )
    assert _request(recorder).model == "gpt-4"


def test_mock_model_after_prefix_always_wins(dock: PromptDock, recorder: Recorder) -> None:
    dock.completion(
        model="mem/mock/echo", prompt_id="hello", prompt_variables={"user_message": "x"}
    )
    assert _request(recorder).model == "mock/echo"


def test_the_result_type_follows_stream() -> None:
    # The suite is type-checked: these annotations hold only through completion()'s
    # overloads, which tell a type checker what each value of ``stream`` returns.
    dock = PromptDock(
        sources={"mem": {"kind": "memory", "files": {"hello.prompt": HELLO}}},
        load_entrypoints=False,
        plugins=[("memory", memory_source)],  # the built-in mock model answers
    )
    variables = {"user_message": "x"}
    reply: ModelResponse = dock.completion(
        "mem/mock/echo", prompt_id="hello", prompt_variables=variables
    )
    stream: CompletionStream = dock.completion(
        "mem/mock/echo", prompt_id="hello", prompt_variables=variables, stream=True
    )
    decided_later = bool(variables)
    either: ModelResponse | CompletionStream = dock.completion(
        "mem/mock/echo", prompt_id="hello", prompt_variables=variables, stream=decided_later
    )

    assert isinstance(reply, ModelResponse)
    assert reply.choices[0].message.content == "system: You are a helpful assistant.\n\nuser: x"
    assert "".join(chunk.choices[0].delta.get("content") or "" for chunk in stream) == (
        reply.choices[0].message.content
    )
    assert isinstance(either, CompletionStream)


def test_caller_messages_replaced_unless_appended(dock: PromptDock, recorder: Recorder) -> None:
    extra = [{"role": "user", "content": "and more"}]
    dock.completion(
        model="mem/gpt-4", messages=extra, prompt_id="plain", prompt_variables={"user_message": "a"}
    )
    dock.completion(
        model="mem/gpt-4",
        messages=extra,
        prompt_id="plain",
        prompt_variables={"user_message": "a"},
        append_messages=True,
    )
    first, second = recorder.requests
    assert first.messages == [{"role": "user", "content": "a"}]
    assert second.messages == [{"role": "user", "content": "a"}, *extra]


def test_without_prompt_messages_pass_straight_through(
    dock: PromptDock, recorder: Recorder
) -> None:
    messages = [{"role": "user", "content": "direct"}]
    dock.completion(model="openai/gpt-4", messages=messages, temperature=0)
    request = _request(recorder)
    assert request.model == "openai/gpt-4"
    assert request.messages == messages
    assert request.provenance is None


def test_connection_settings_are_passed(dock: PromptDock, recorder: Recorder) -> None:
    dock.completion(
        model="mem/gpt-4",
        prompt_id="plain",
        prompt_variables={"user_message": "a"},
        api_base="http://127.0.0.1:9/v1",
        api_key="sk-test",
        timeout=3,
        max_retries=0,
        extra_headers={"X-Team": "a"},
    )
    request = _request(recorder)
    assert (request.api_base, request.api_key, request.timeout) == (
        "http://127.0.0.1:9/v1",
        "sk-test",
        3,
    )
    assert request.max_retries == 0
    assert dict(request.extra_headers) == {"X-Team": "a"}
    assert "sk-test" not in repr(request)


def test_requests_and_renders_are_whole_dataclasses(dock: PromptDock) -> None:
    # The per-call path builds both without their generated __init__: every field must be
    # there, equal to what the constructor would have made, and still frozen.
    request = dock.prepare_request(
        "mem/gpt-4", prompt_id="hello", prompt_variables={"user_message": "a"}, stream=True
    )
    rendered = dock.render("hello", {"user_message": "a"}, source="mem")
    for made in (request, rendered):
        names = [field.name for field in dataclasses.fields(made)]
        assert list(vars(made)) == names
        assert made == type(made)(**{name: getattr(made, name) for name in names})
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.model = "x"  # type: ignore[misc]
    assert dataclasses.replace(request, model="x").model == "x"
    assert (request.stream, request.max_retries, request.extra_headers) == (True, 2, {})


def test_unknown_source_prefix(dock: PromptDock) -> None:
    with pytest.raises(ConfigError, match="unknown prompt source 'nope'") as info:
        dock.completion(model="nope/gpt-4", prompt_id="hello")
    assert "mem" in str(info.value)


def test_source_prefix_without_prompt_id(dock: PromptDock) -> None:
    with pytest.raises(ConfigError, match="no prompt_id was given"):
        dock.completion(model="mem/gpt-4", messages=[{"role": "user", "content": "x"}])


def test_prompt_id_without_prefix(dock: PromptDock) -> None:
    with pytest.raises(ConfigError, match="has no source prefix"):
        dock.completion(model="gpt-4", prompt_id="hello")


def test_missing_prompt_and_variable_errors(dock: PromptDock) -> None:
    with pytest.raises(PromptNotFoundError, match="'nope'"):
        dock.completion(model="mem/gpt-4", prompt_id="nope")
    with pytest.raises(InputValidationError, match="user_message") as info:
        dock.completion(model="mem/gpt-4", prompt_id="hello", prompt_variables={})
    assert info.value.field == "user_message"
    assert info.value.prompt_id == "hello"


def test_mock_response_is_answered_by_the_builtin_mock() -> None:
    dock = PromptDock(
        sources={"mem": {"kind": "memory", "files": {"hello.prompt": HELLO}}},
        load_entrypoints=False,
        plugins=[("memory", memory_source)],
    )
    reply = dock.completion(
        model="mem/gpt-4",
        prompt_id="hello",
        prompt_variables={"user_message": "Hi"},
        mock_response="ok",
    )
    assert isinstance(reply, ModelResponse)
    assert reply.choices[0].message.content == "ok"
    assert reply.prompt is not None
    assert reply.prompt.source == "mem"


def test_streaming_returns_a_stream_with_provenance() -> None:
    dock = PromptDock(
        sources={"mem": {"kind": "memory", "files": {"hello.prompt": HELLO}}},
        load_entrypoints=False,
        plugins=[("memory", memory_source)],
    )
    stream = dock.completion(
        model="mem/mock/echo",
        prompt_id="hello",
        prompt_variables={"user_message": "Hi"},
        stream=True,
    )
    assert isinstance(stream, CompletionStream)
    assert stream.prompt is not None
    assert stream.prompt.prompt_id == "hello"
    text = "".join(chunk.choices[0].delta.get("content") or "" for chunk in stream)
    assert "Hi" in text


def test_no_dispatcher_when_builtins_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTDOCK_BLOCK_PLUGINS", "mock,openai")
    dock = PromptDock(load_entrypoints=False)
    with pytest.raises(DispatchError, match="no dispatcher accepted model 'gpt-4'"):
        dock.completion(model="gpt-4", messages=[{"role": "user", "content": "x"}])


def test_render_and_list_without_a_model(dock: PromptDock) -> None:
    rendered = dock.render("hello", {"user_message": "Hi"})
    assert rendered.model == "gpt-4"
    assert [i.id for i in dock.list_prompts()] == ["hello", "plain", "templated"]


def test_source_name_required_when_ambiguous(recorder: Recorder) -> None:
    files: dict[str, Any] = {"files": {"hello.prompt": HELLO}}
    dock = PromptDock(
        sources={"a": {"kind": "memory", **files}, "b": {"kind": "mem", **files}},
        load_entrypoints=False,
        plugins=[("memory", memory_source)],
    )
    with pytest.raises(ConfigError, match="pass source=<name>"):
        dock.get_prompt("hello")
    assert dock.get_prompt("hello", source="b").id == "hello"
    assert dock.get_source("b").kind == "memory"  # alias resolved


def test_source_without_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="has no 'kind'") as info:
        PromptDock(sources={"x": {"path": "p"}}, load_entrypoints=False)
    assert info.value.key == "sources.x.kind"
