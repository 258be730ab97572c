"""``/v1/chat/completions`` over real sockets: prompts, pass-through, streaming, provenance."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Generator
from typing import Any

import openai
import pytest

from promptdock import hookimpl
from promptdock.models import CompletionRequest
from tests.proxy.conftest import (
    MASTER_KEY,
    UPSTREAM_KEY,
    RunningProxy,
    ServeConfig,
    config_text,
)
from tests.support.openai_server import OpenAIServer

SEED_BODY = (
    b'{"model": "my-dotprompt-model", "messages": [{"role": "user", "content": "IGNORED"}],\n'
    b'       "prompt_variables": {"user_message": "What is the capital of France?"}}'
)
"""The body of the seed's curl command, byte for byte."""

SEED_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def _client(proxy: RunningProxy, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=20)


def test_seed_curl_body_renders_the_prompt_and_calls_the_upstream(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    response = proxy.request(
        "POST",
        "/v1/chat/completions",
        data=SEED_BODY,
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "echo: What is the capital of France?"
    (sent,) = upstream.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    # The prompt's messages replace the client's; its frontmatter model and parameters apply.
    assert sent.body == {
        "model": "gpt-4",
        "messages": SEED_MESSAGES,
        "temperature": 0.7,
        "max_tokens": 150,
    }


def test_provenance_headers_name_the_prompt(proxy: RunningProxy) -> None:
    response = proxy.request("POST", "/chat/completions", data=SEED_BODY)

    assert response.status_code == 200
    assert response.headers["x-promptdock-prompt-id"] == "hello"
    assert response.headers["x-promptdock-source"] == "dotprompt"
    assert response.headers["x-promptdock-stale"] == "false"
    # A local folder has no version file, ref or commit: those headers are left out.
    assert "x-promptdock-prompt-version" not in response.headers
    assert "x-promptdock-sha" not in response.headers


def test_openai_client_plain(proxy: RunningProxy, upstream: OpenAIServer) -> None:
    raw = _client(proxy).chat.completions.with_raw_response.create(
        model="support-bot",
        messages=[{"role": "user", "content": "ignored"}],
        extra_body={"prompt_variables": {"ticket": "My order is late"}},
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "echo: My order is late"
    assert raw.headers["x-promptdock-prompt-id"] == "support/triage"
    (sent,) = upstream.requests
    # frontmatter model 'openai/gpt-4o-mini' wins over the deployment's, prefix dropped
    assert sent.body["model"] == "gpt-4o-mini"


def test_parameter_precedence_body_over_deployment_over_frontmatter(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    variables = {"ticket": "t"}
    first = proxy.chat({"model": "support-bot", "prompt_variables": variables})
    second = proxy.chat(
        {"model": "support-bot", "prompt_variables": variables, "temperature": 0.5, "seed": 7}
    )

    assert (first.status_code, second.status_code) == (200, 200)
    deployment_wins, body_wins = (r.body for r in upstream.requests)
    # frontmatter 0.9 < deployment 0.2 < request 0.5
    assert deployment_wins["temperature"] == 0.2
    assert deployment_wins["max_tokens"] == 64
    assert body_wins["temperature"] == 0.5
    assert body_wins["max_tokens"] == 64
    assert body_wins["seed"] == 7


def test_request_prompt_id_and_version_override_the_deployment(
    proxy: RunningProxy, upstream: OpenAIServer, prompts_folder: object
) -> None:
    from pathlib import Path

    assert isinstance(prompts_folder, Path)
    (prompts_folder / "support" / "triage.v2.prompt").write_text("User: v2 {{ ticket }}\n")

    response = proxy.chat(
        {
            "model": "any-prompt",
            "prompt_id": "support/triage",
            "prompt_version": 2,
            "prompt_variables": {"ticket": "hi"},
        }
    )

    assert response.status_code == 200, response.text
    assert response.headers["x-promptdock-prompt-id"] == "support/triage"
    assert response.headers["x-promptdock-prompt-version"] == "2"
    (sent,) = upstream.requests
    assert sent.body["messages"] == [{"role": "user", "content": "v2 hi"}]
    assert sent.body["model"] == "gpt-4o-mini"  # the deployment's, as the file names none


def test_pass_through_model_sends_the_clients_messages(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    raw = _client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o-plain",
        messages=[{"role": "user", "content": "straight through"}],
        temperature=0.1,
    )

    assert raw.parse().choices[0].message.content == "echo: straight through"
    assert "x-promptdock-prompt-id" not in raw.headers
    (sent,) = upstream.requests
    assert sent.body == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "straight through"}],
        "temperature": 0.1,
    }


def test_append_messages_adds_the_clients_turns_after_the_prompt(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    turns = [{"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Sure?"}]

    response = proxy.chat(
        {
            "model": "my-dotprompt-model",
            "messages": turns,
            "append_messages": True,
            "prompt_variables": {"user_message": "Capital of France?"},
        }
    )

    assert response.status_code == 200
    assert upstream.requests[0].body["messages"][-2:] == turns


def test_mock_response_calls_no_upstream(proxy: RunningProxy, upstream: OpenAIServer) -> None:
    response = proxy.chat(
        {
            "model": "my-dotprompt-model",
            "mock_response": "canned",
            "prompt_variables": {"user_message": "x"},
        }
    )

    assert response.json()["choices"][0]["message"]["content"] == "canned"
    assert response.headers["x-promptdock-prompt-id"] == "hello"
    assert upstream.requests == []


UPSTREAM_ANSWER = (
    b'{"id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-4",\n'
    b' "choices": [{"index": 0, "finish_reason": "stop",\n'
    b'   "message": {"role": "assistant", "content": "caf\\u00e9 \xc3\xa9"}}]}\n'
)
"""An answer whose spacing and escapes the proxy's own encoding would not reproduce."""


def test_the_upstreams_answer_is_sent_as_it_came(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    upstream.enqueue(body=UPSTREAM_ANSWER)

    response = proxy.request("POST", "/v1/chat/completions", data=SEED_BODY)

    assert response.status_code == 200
    assert response.content == UPSTREAM_ANSWER
    assert response.headers["content-length"] == str(len(UPSTREAM_ANSWER))
    assert response.headers["x-promptdock-prompt-id"] == "hello"


class Shout:
    """Wraps ``adispatch`` and changes the answer: what a plugin's wrapper may do."""

    @hookimpl(wrapper=True)
    def adispatch(self, request: CompletionRequest) -> Generator[None, Any, Any]:
        pending = yield
        if pending is None:
            return None

        async def louder() -> Any:
            response = await pending
            message = response.choices[0].message
            message.content = message.content.upper()
            return response

        return louder()


def test_an_answer_a_dispatch_wrapper_changed_is_sent_as_changed(
    serve_config: ServeConfig, upstream: OpenAIServer
) -> None:
    proxy = serve_config(config_text(upstream), plugins=[("shout", Shout())])
    upstream.enqueue(body=UPSTREAM_ANSWER)

    response = proxy.request("POST", "/v1/chat/completions", data=SEED_BODY)

    assert response.status_code == 200
    assert response.content == (
        b'{"id":"chatcmpl-9","object":"chat.completion","model":"gpt-4","choices":[{"index":0,'
        b'"finish_reason":"stop","message":{"role":"assistant","content":"CAF\xc3\x89 \xc3\x89"}}]}'
    )
    assert response.headers["x-promptdock-prompt-id"] == "hello"


def test_openai_client_streaming(proxy: RunningProxy, upstream: OpenAIServer) -> None:
    stream = _client(proxy).chat.completions.create(
        model="my-dotprompt-model",
        messages=[{"role": "user", "content": "IGNORED"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"prompt_variables": {"user_message": "one two three four five"}},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three four five"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert upstream.requests[0].body["stream"] is True


def test_stream_is_raw_server_sent_events_with_provenance(proxy: RunningProxy) -> None:
    response = proxy.chat(
        {"model": "my-dotprompt-model", "stream": True, "prompt_variables": {"user_message": "hi"}}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["x-promptdock-prompt-id"] == "hello"
    events = response.content.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    first = json.loads(events[0].removeprefix(b"data: "))
    assert first["object"] == "chat.completion.chunk"


def test_stream_chunks_are_relayed_as_they_arrive(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    gate = threading.Event()
    # The upstream sends its first content chunk, then waits for the gate: the client can
    # only see that chunk before the gate opens if the proxy does not buffer.
    upstream.enqueue(gate=gate)
    stream = _client(proxy).chat.completions.create(
        model="gpt-4o-plain",
        messages=[{"role": "user", "content": "alpha beta gamma delta"}],
        stream=True,
    )
    pieces: list[str] = []
    for chunk in stream:
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content:
            pieces.append(content)
            gate.set()

    assert "".join(pieces) == "echo: alpha beta gamma delta"
    assert len(pieces) > 1


def access_records(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    """The access log records, once there are ``count`` of them.

    A line is written after its answer is sent, so the client may see the answer first: wait
    for it (bounded).
    """
    deadline = time.monotonic() + 5
    while True:
        records = [r for r in caplog.records if r.name == "promptdock.proxy.access"]
        if len(records) >= count or time.monotonic() > deadline:
            assert len(records) == count
            return records
        time.sleep(0.01)


def test_access_log_has_one_line_per_request(
    proxy: RunningProxy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="promptdock.proxy.access"):
        ok = proxy.request("POST", "/v1/chat/completions", data=SEED_BODY)
        missing = proxy.chat({"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        records = access_records(caplog, 2)

    assert (ok.status_code, missing.status_code) == (200, 404)
    fields = records[0].access  # type: ignore[attr-defined]
    assert fields["status"] == 200
    assert fields["model"] == "my-dotprompt-model"
    assert fields["prompt_id"] == "hello"
    assert fields["source"] == "dotprompt"
    assert fields["stream"] is False
    assert fields["latency_ms"] > 0
    message = records[0].getMessage()
    assert message.startswith("method=POST path=/v1/chat/completions status=200 ")
    assert "prompt_id=hello" in message
    assert records[1].access["status"] == 404  # type: ignore[attr-defined]


def test_a_client_hanging_up_stops_the_stream(
    proxy: RunningProxy, upstream: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()
    upstream.enqueue(gate=gate)  # the upstream holds the rest of its answer until the gate
    with caplog.at_level(logging.INFO, logger="promptdock.proxy.access"):
        response = proxy.chat(
            {
                "model": "gpt-4o-plain",
                "stream": True,
                "messages": [{"role": "user", "content": "alpha beta gamma delta"}],
            },
            stream=True,
        )
        lines = response.iter_lines()
        while b'"content":"echo: ' not in next(lines):
            pass
        response.close()  # hang up mid-stream
        (record,) = access_records(caplog, 1)
        gate.set()

    assert record.access["status"] == 499  # type: ignore[attr-defined]
    assert record.access["stream"] is True  # type: ignore[attr-defined]
