"""The local test server speaks OpenAI's protocol, as the official openai client sees it."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import openai
import pytest
import requests

from tests.support.openai_server import MAX_DELAY, OpenAIServer


@pytest.fixture
def client(openai_server: OpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=openai_server.base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def _chat(**extra: object) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}], **extra}


# -- the protocol, as the official client sees it ------------------------------------------


def test_openai_client_plain_completion(openai_server: OpenAIServer, client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="my-model",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello world"},
        ],
        temperature=0.2,
    )
    assert reply.object == "chat.completion"
    assert reply.model == "my-model"
    assert reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "echo: hello world"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 3)
    assert reply.usage.total_tokens == 7

    [request] = openai_server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer x"
    assert request.body["model"] == "my-model"
    assert request.body["temperature"] == 0.2
    assert request.body["messages"][1] == {"role": "user", "content": "hello world"}


def test_openai_client_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "one two three four five"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three four five"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


def test_openai_client_lists_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]


def test_openai_client_sees_scripted_error(
    openai_server: OpenAIServer, client: openai.OpenAI
) -> None:
    openai_server.enqueue(status=429, headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError, match="scripted error 429") as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "7"


def test_required_api_key_is_checked() -> None:
    with (
        OpenAIServer(api_key="right") as srv,
        openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0) as c,
    ):
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        c2 = c.with_options(api_key="right")
        reply = c2.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "echo: x"


# -- the wire format ---------------------------------------------------------------------


def test_json_answers_have_content_length_and_keep_alive(
    openai_server: OpenAIServer, session: requests.Session
) -> None:
    first = session.post(f"{openai_server.base_url}/chat/completions", json=_chat())
    second = session.post(f"{openai_server.base_url}/chat/completions", json=_chat())
    assert first.headers["Content-Length"] == str(len(first.content))
    assert first.headers["Content-Type"] == "application/json"
    assert second.json()["choices"][0]["message"] == {
        "role": "assistant",
        "content": "echo: hi there",
        "refusal": None,
    }
    ports = {r.client_port for r in openai_server.requests}
    assert len(ports) == 1, "the second request should reuse the first connection"


@pytest.mark.parametrize("chunked", [True, False])
def test_sse_wire_format(chunked: bool) -> None:
    with OpenAIServer(sse_chunked=chunked, words_per_chunk=1) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=json.dumps(_chat(stream=True)),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Type", "").startswith("text/event-stream")
            assert (response.getheader("Transfer-Encoding") == "chunked") is chunked
            assert (response.getheader("Connection") == "close") is not chunked
            raw = response.read().decode()
        finally:
            conn.close()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert [p["choices"][0]["delta"].get("content") for p in payloads] == [
        "",
        "echo: ",
        "hi ",
        "there",
        None,
    ]
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_gated_stream_sends_the_rest_only_after_the_gate_opens(
    openai_server: OpenAIServer, session: requests.Session
) -> None:
    gate = threading.Event()
    openai_server.enqueue(gate=gate)
    response = session.post(
        f"{openai_server.base_url}/chat/completions", json=_chat(stream=True), stream=True
    )
    lines = response.iter_lines(chunk_size=None)
    received = [line for line in (next(lines), next(lines), next(lines)) if line]
    assert len(received) == 2  # role chunk and first content chunk, nothing more yet
    gate.set()
    rest = [line for line in lines if line]
    assert rest[-1] == b"data: [DONE]"
    response.close()


# -- scripted faults ---------------------------------------------------------------------


def test_enqueue_applies_to_the_next_requests_only(
    openai_server: OpenAIServer, session: requests.Session
) -> None:
    openai_server.enqueue(status=503, times=2)
    openai_server.enqueue(body="not json", headers={"X-Test": "1"})
    url = f"{openai_server.base_url}/chat/completions"
    statuses = [session.post(url, json=_chat()) for _ in range(4)]
    assert [r.status_code for r in statuses] == [503, 503, 200, 200]
    assert statuses[0].json()["error"] == {
        "message": "scripted error 503",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert statuses[2].text == "not json"
    assert statuses[2].headers["X-Test"] == "1"
    assert statuses[3].json()["object"] == "chat.completion"
    assert openai_server.pending == ()


def test_delay_is_capped(openai_server: OpenAIServer) -> None:
    openai_server.enqueue(delay=10_000)
    assert openai_server.pending[0].delay == MAX_DELAY


def test_delay_outlasting_the_client_timeout(
    openai_server: OpenAIServer, session: requests.Session
) -> None:
    openai_server.enqueue(delay=2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(f"{openai_server.base_url}/chat/completions", json=_chat(), timeout=0.2)


def test_dropped_connection(openai_server: OpenAIServer, session: requests.Session) -> None:
    openai_server.enqueue(drop_connection=True)
    with pytest.raises(requests.exceptions.ConnectionError, match="Connection aborted"):
        session.post(f"{openai_server.base_url}/chat/completions", json=_chat())
    assert len(openai_server.requests) == 1


def test_truncated_json_body(openai_server: OpenAIServer, session: requests.Session) -> None:
    openai_server.enqueue(truncate=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        session.post(f"{openai_server.base_url}/chat/completions", json=_chat())


def test_truncated_stream_has_no_done(
    openai_server: OpenAIServer, session: requests.Session
) -> None:
    openai_server.enqueue(truncate=True)
    response = session.post(
        f"{openai_server.base_url}/chat/completions", json=_chat(stream=True), stream=True
    )
    lines: list[bytes] = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        lines.extend(line for line in response.iter_lines() if line)
    assert b"data: [DONE]" not in lines
    response.close()


# -- request validation and routes -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{oops", "the request body is not valid JSON"),
        (b"", "the request body is empty"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"model": "m", "messages": []}).encode(), "'messages' must be"),
    ],
)
def test_bad_requests_get_openai_errors(
    openai_server: OpenAIServer, session: requests.Session, body: bytes, message: str
) -> None:
    response = session.post(f"{openai_server.base_url}/chat/completions", data=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"


def test_unknown_route(openai_server: OpenAIServer, session: requests.Session) -> None:
    response = session.get(f"{openai_server.base_url}/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "no route for GET /v1/nothing"


def test_close_is_idempotent_and_final() -> None:
    srv = OpenAIServer().start()
    requests.get(f"{srv.base_url}/models", timeout=5).raise_for_status()
    srv.close()
    srv.close()
    with pytest.raises(RuntimeError, match="closed"):
        srv.start()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{srv.base_url}/models", timeout=5)
