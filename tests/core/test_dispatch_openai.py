"""The OpenAI-compatible HTTP dispatcher, against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pluggy
import pytest
import requests
from pytest_mock import MockerFixture

import promptdock.hookspecs
from promptdock.dispatch import _openai_wire, mock, openai_http
from promptdock.errors import DispatchError, UpstreamTimeoutError
from promptdock.models import CompletionRequest, Provenance
from promptdock.response import ModelResponse, ObjectDict
from tests.support.openai_server import OpenAIServer

SECRET = "sk-test-5ecr3t-Do-Not-Leak"
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    yield
    # Close pooled connections to this test's server before it goes away.
    openai_http.reset_session()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff waits, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(openai_http, "_sleep", waits.append)
    return waits


@pytest.fixture
def srv(openai_server: OpenAIServer, sleeps: list[float]) -> OpenAIServer:
    return openai_server


def _request(srv: OpenAIServer | None = None, **overrides: Any) -> CompletionRequest:
    fields: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "api_base": srv.base_url if srv else None,
        **overrides,
    }
    return CompletionRequest(**fields)


def _answer(request: CompletionRequest) -> ModelResponse:
    result = openai_http.dispatch(request)
    assert isinstance(result, ModelResponse)
    return result


def _stream(request: CompletionRequest) -> Iterator[ObjectDict]:
    result = openai_http.dispatch(request)
    assert not isinstance(result, ModelResponse)
    return result


def _text(chunks: list[ObjectDict]) -> str:
    return "".join(c.choices[0].delta.get("content") or "" for c in chunks if c.choices)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- what goes on the wire ----------------------------------------------------------------


def test_answers_through_the_hook_after_mock_declines(srv: OpenAIServer) -> None:
    pm = pluggy.PluginManager("promptdock")
    pm.add_hookspecs(promptdock.hookspecs)
    pm.register(openai_http, name="openai")
    pm.register(mock, name="mock")
    result = pm.hook.dispatch(request=_request(srv, api_key=SECRET))
    assert isinstance(result, ModelResponse)
    assert result.choices[0].message.content == "echo: hello there"
    assert result.model == "gpt-4o-mini"
    assert result.usage.total_tokens == 5
    # mock still wins for mock requests although openai was registered first: it is trylast
    canned = pm.hook.dispatch(request=_request(srv, mock_response="canned"))
    assert canned.choices[0].message.content == "canned"
    assert len(srv.requests) == 1


def test_request_body_and_headers_as_sent(srv: OpenAIServer) -> None:
    request = _request(
        srv,
        api_key=SECRET,
        params={"temperature": 0.1, "max_tokens": 7, "response_format": {"type": "json_object"}},
        extra_headers={"X-Trace": "t-1"},
    )
    _answer(request)
    [sent] = srv.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.body == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "temperature": 0.1,
        "max_tokens": 7,
        "response_format": {"type": "json_object"},
    }
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-trace"] == "t-1"
    assert sent.headers["user-agent"].startswith("promptdock")


def test_stream_flags_are_dropped_from_a_non_streaming_request(srv: OpenAIServer) -> None:
    _answer(_request(srv, params={"stream": True, "stream_options": {"include_usage": True}}))
    assert srv.requests[0].body == {"model": "gpt-4o-mini", "messages": MESSAGES}


def test_unicode_is_sent_as_utf8(srv: OpenAIServer) -> None:
    reply = _answer(_request(srv, messages=[{"role": "user", "content": "héllo ✓"}]))
    assert reply.choices[0].message.content == "echo: héllo ✓"
    assert "héllo ✓".encode() in srv.requests[0].raw_body


def test_connections_are_reused_within_a_thread(srv: OpenAIServer) -> None:
    _answer(_request(srv))
    _answer(_request(srv))
    other: list[ModelResponse] = []
    worker = threading.Thread(target=lambda: other.append(_answer(_request(srv))))
    worker.start()
    worker.join()
    first, second, third = (r.client_port for r in srv.requests)
    assert first == second
    assert third != first
    assert other[0].choices[0].message.content == "echo: hello there"


def test_finished_streams_give_their_connection_back(srv: OpenAIServer) -> None:
    list(_stream(_request(srv, stream=True)))
    list(_stream(_request(srv, stream=True)))
    _answer(_request(srv))
    assert len({r.client_port for r in srv.requests}) == 1


def test_returns_the_servers_json_unchanged(srv: OpenAIServer) -> None:
    reply = _answer(_request(srv))
    sent = json.loads(json.dumps(reply))
    assert sent["object"] == "chat.completion"
    assert sent["system_fingerprint"] == "fp_promptdock_test"
    assert sent["choices"][0]["message"] == {
        "role": "assistant",
        "content": "echo: hello there",
        "refusal": None,
    }
    assert reply.prompt is None


# -- settings: base URL and key ----------------------------------------------------------


def test_api_base_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert openai_http.resolve_api_base(None) == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_API_BASE", "http://legacy:1/v1/")
    assert openai_http.resolve_api_base(None) == "http://legacy:1/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://modern:2/v1")
    assert openai_http.resolve_api_base(None) == "http://modern:2/v1"
    assert openai_http.resolve_api_base("http://given:3/v1//") == "http://given:3/v1"


def test_base_url_and_key_from_the_environment(
    srv: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url + "/")
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    _answer(_request(None))
    _answer(_request(None, api_key="arg-key"))
    assert [r.headers["authorization"] for r in srv.requests] == [
        "Bearer env-key",
        "Bearer arg-key",
    ]
    assert srv.requests[0].path == "/v1/chat/completions"


def test_no_key_means_no_authorization_header_for_other_servers(srv: OpenAIServer) -> None:
    _answer(_request(srv))
    assert "authorization" not in srv.requests[0].headers


@pytest.mark.parametrize("api_base", [None, "https://api.openai.com/v1/"])
def test_no_key_for_openai_fails_before_any_network(
    mocker: MockerFixture, api_base: str | None
) -> None:
    network = mocker.patch.object(openai_http, "_session")
    with pytest.raises(DispatchError) as info:
        openai_http.dispatch(_request(None, api_base=api_base))
    assert str(info.value) == (
        "no API key for model 'gpt-4o-mini' at https://api.openai.com/v1: set the "
        "OPENAI_API_KEY environment variable or pass api_key=..., or point api_base at "
        "another server"
    )
    assert info.value.status_code is None
    network.assert_not_called()


def test_unserialisable_parameters_fail_before_any_network(mocker: MockerFixture) -> None:
    network = mocker.patch.object(openai_http, "_session")
    bad = _request(None, api_base="http://127.0.0.1:9/v1", params={"temperature": float("nan")})
    with pytest.raises(DispatchError, match=r"cannot send the request for model 'gpt-4o-mini'"):
        openai_http.dispatch(bad)
    network.assert_not_called()


# -- retries -----------------------------------------------------------------------------


def test_retries_429_honouring_retry_after_then_succeeds(
    srv: OpenAIServer, sleeps: list[float]
) -> None:
    srv.enqueue(status=429, headers={"Retry-After": "0"}, times=2)
    reply = _answer(_request(srv))
    assert reply.choices[0].message.content == "echo: hello there"
    assert len(srv.requests) == 3
    assert sleeps == [0.0, 0.0]


def test_retry_after_ms_is_honoured(srv: OpenAIServer, sleeps: list[float]) -> None:
    srv.enqueue(status=503, headers={"retry-after-ms": "1500", "Retry-After": "9"})
    _answer(_request(srv))
    assert sleeps == [1.5]


@pytest.mark.parametrize("status", [408, 409, 500, 502, 504])
def test_other_retryable_statuses(srv: OpenAIServer, status: int) -> None:
    srv.enqueue(status=status, headers={"Retry-After": "0"})
    _answer(_request(srv))
    assert len(srv.requests) == 2


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "check the request's messages and parameters"),
        (401, "check the API key (api_key=... or OPENAI_API_KEY)"),
        (403, "check the API key"),
        (404, "check the model name and that api_base ends in /v1"),
        (422, "check the request's messages and parameters"),
    ],
)
def test_other_4xx_are_not_retried(srv: OpenAIServer, status: int, hint: str) -> None:
    srv.enqueue(status=status, body={"error": {"message": f"upstream says {status}"}})
    with pytest.raises(DispatchError) as info:
        _answer(_request(srv, max_retries=5))
    assert len(srv.requests) == 1
    assert info.value.status_code == status
    assert str(info.value).startswith(
        f"the model server at {srv.base_url} answered HTTP {status} for model 'gpt-4o-mini': "
        f"upstream says {status}. Hint: "
    )
    assert hint in str(info.value)


def test_5xx_exhausted_reports_status_message_and_attempts(
    srv: OpenAIServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_openai_wire, "jitter", lambda: 1.0)
    srv.enqueue(status=502, body={"error": {"message": "bad gateway upstream"}}, times=3)
    prov = Provenance(source="dotprompt", kind="filesystem", prompt_id="hi", path="hi.prompt")
    with pytest.raises(DispatchError) as info:
        _answer(_request(srv, max_retries=2, provenance=prov))
    assert len(srv.requests) == 3
    assert sleeps == [0.5, 1.0]  # full-jitter backoff at its upper bound
    assert info.value.status_code == 502
    assert str(info.value) == (
        f"the model server at {srv.base_url} answered HTTP 502 for model 'gpt-4o-mini' "
        f"(prompt 'hi' from hi.prompt) (after 3 attempts): bad gateway upstream. "
        f"Hint: the model server failed: try again later"
    )


def test_max_retries_zero_sends_once(srv: OpenAIServer) -> None:
    srv.enqueue(status=429, headers={"Retry-After": "0"})
    with pytest.raises(DispatchError, match="HTTP 429") as info:
        _answer(_request(srv, max_retries=0))
    assert "allow more retries with max_retries" in str(info.value)
    assert len(srv.requests) == 1


def test_text_error_body_is_cut_to_300_chars(srv: OpenAIServer) -> None:
    srv.enqueue(status=500, body="<html>" + "x" * 1000, times=3)
    with pytest.raises(DispatchError) as info:
        _answer(_request(srv))
    message = str(info.value)
    assert ": <html>" + "x" * 294 + ". Hint:" in message
    assert "x" * 295 not in message


def test_redirects_are_not_followed(srv: OpenAIServer) -> None:
    srv.enqueue(status=307, body="", headers={"Location": "http://elsewhere/v1/chat/completions"})
    with pytest.raises(DispatchError) as info:
        _answer(_request(srv))
    assert info.value.status_code == 307
    assert "set api_base to the final URL (Location: http://elsewhere/v1/chat" in str(info.value)
    assert len(srv.requests) == 1


def test_dropped_connection_is_retried(srv: OpenAIServer, sleeps: list[float]) -> None:
    srv.enqueue(drop_connection=True)
    assert _answer(_request(srv)).choices[0].message.content == "echo: hello there"
    assert len(srv.requests) == 2
    assert len(sleeps) == 1


def test_dropped_connections_exhausted(srv: OpenAIServer) -> None:
    srv.enqueue(drop_connection=True, times=2)
    with pytest.raises(DispatchError) as info:
        _answer(_request(srv, max_retries=1))
    assert str(info.value).startswith(
        f"the model server at {srv.base_url} closed the connection without answering "
        f"model 'gpt-4o-mini': "
    )
    assert "(after 2 attempts)" in str(info.value)


def test_truncated_body_exhausted(srv: OpenAIServer) -> None:
    srv.enqueue(truncate=True, times=3)
    with pytest.raises(DispatchError, match="broke while reading the answer for model"):
        _answer(_request(srv))
    assert len(srv.requests) == 3


def test_retries_are_logged_without_the_key(
    srv: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    srv.enqueue(status=429, headers={"Retry-After": "0"})
    with caplog.at_level(logging.INFO, logger="promptdock.dispatch.openai_http"):
        _answer(_request(srv, api_key=SECRET))
    assert "retrying model 'gpt-4o-mini' in 0.00 s after HTTP 429" in caplog.text
    assert SECRET not in caplog.text


# -- failures that are not HTTP statuses -------------------------------------------------


def test_timeout_raises_upstream_timeout_without_retrying(srv: OpenAIServer) -> None:
    srv.enqueue(delay=1.0)
    with pytest.raises(UpstreamTimeoutError) as info:
        _answer(_request(srv, timeout=0.3))
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, DispatchError)
    assert str(info.value) == (
        f"the model server at {srv.base_url} did not answer model 'gpt-4o-mini' within 0.3 s; "
        f"raise timeout=... or check the server's load"
    )
    assert len(srv.requests) == 1


def test_connection_refused_names_the_base_url(sleeps: list[float]) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(DispatchError) as info:
        openai_http.dispatch(_request(None, api_base=base, max_retries=2))
    message = str(info.value)
    assert message.startswith(f"cannot reach the model server at {base}: ")
    assert "Connection refused" in message
    assert message.endswith(
        "(after 3 attempts); check api_base (or OPENAI_BASE_URL) and that the server is running"
    )
    assert info.value.status_code is None
    assert len(sleeps) == 2


@pytest.mark.parametrize("api_base", ["ftp://127.0.0.1/v1", "127.0.0.1:8000/v1"])
def test_unusable_base_url(api_base: str) -> None:
    with pytest.raises(DispatchError, match=r"is not a usable URL .*it should look like"):
        openai_http.dispatch(_request(None, api_base=api_base))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("<html>not json</html>", "with a body that is not JSON: '<html>not json</html>'"),
        ("", "with a body that is not JSON: (empty body)"),
        ({"object": "list"}, "with JSON that is not a chat completion (no 'choices' list)"),
        ([1, 2], "with JSON that is not a chat completion"),
    ],
)
def test_malformed_200_bodies(srv: OpenAIServer, body: Any, problem: str) -> None:
    srv.enqueue(status=200, body=body)
    with pytest.raises(DispatchError) as info:
        _answer(_request(srv))
    assert f"answered model 'gpt-4o-mini' {problem}" in str(info.value)
    assert info.value.status_code == 200


def test_error_object_in_a_200_body(srv: OpenAIServer) -> None:
    srv.enqueue(status=200, body={"error": {"message": "model overloaded"}})
    with pytest.raises(DispatchError, match="reported an error for model 'gpt-4o-mini': model"):
        _answer(_request(srv))


# -- streaming ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [True, False])
def test_stream_yields_chunks_until_done(sleeps: list[float], chunked: bool) -> None:
    with OpenAIServer(sse_chunked=chunked) as server:
        chunks = list(_stream(_request(server, stream=True)))
        [sent] = server.requests
    assert sent.body["stream"] is True
    assert sent.headers["accept"] == "text/event-stream"
    assert _text(chunks) == "echo: hello there"
    assert all(isinstance(c, ObjectDict) for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_is_incremental(srv: OpenAIServer) -> None:
    gate = threading.Event()
    srv.enqueue(gate=gate)
    chunks = _stream(_request(srv, stream=True))
    # The server holds everything after the first content chunk until the gate opens (and
    # drops the connection if it never does), so these only return if nothing is buffered.
    first, second = next(chunks), next(chunks)
    assert first.choices[0].delta.role == "assistant"
    assert second.choices[0].delta.content == "echo: hello "
    gate.set()
    rest = list(chunks)
    assert _text([first, second, *rest]) == "echo: hello there"


def test_stream_stops_at_done_and_skips_non_data_lines(srv: OpenAIServer) -> None:
    def chunk(content: str) -> str:
        return json.dumps(
            {"object": "chat.completion.chunk", "choices": [{"delta": {"content": content}}]}
        )

    events = (
        ": keep-alive comment\r\n\r\n"
        "event: message\r\n"
        f"data: {chunk('a')}\r\n\r\n"
        "id: 7\nretry: 100\n\n"
        f"data:{chunk('b')}\n\n"
        "data: [DONE]\n\n"
        f"data: {chunk('after done')}\n\n"
    )
    srv.enqueue(body=events, headers={"Content-Type": "text/event-stream"})
    chunks = list(_stream(_request(srv, stream=True)))
    assert [c.choices[0].delta.content for c in chunks] == ["a", "b"]


def test_stream_error_event_raises(srv: OpenAIServer) -> None:
    events = (
        'data: {"choices": [{"delta": {"content": "par"}}]}\n\n'
        'event: error\ndata: {"error": {"message": "context length exceeded"}}\n\n'
    )
    srv.enqueue(body=events, headers={"Content-Type": "text/event-stream"})
    chunks = _stream(_request(srv, stream=True))
    assert next(chunks).choices[0].delta.content == "par"
    with pytest.raises(DispatchError) as info:
        next(chunks)
    assert str(info.value) == (
        f"the model server at {srv.base_url} reported an error while streaming model "
        f"'gpt-4o-mini': context length exceeded"
    )


def test_stream_event_that_is_not_json(srv: OpenAIServer) -> None:
    srv.enqueue(body="data: {broken\n\n", headers={"Content-Type": "text/event-stream"})
    with pytest.raises(DispatchError, match=r"sent a stream event .* that is not JSON: '\{broken'"):
        list(_stream(_request(srv, stream=True)))


@pytest.mark.parametrize("chunked", [True, False])
def test_truncated_stream_raises(sleeps: list[float], chunked: bool) -> None:
    with OpenAIServer(sse_chunked=chunked) as server:
        server.enqueue(truncate=True)
        chunks = _stream(_request(server, stream=True))
        with pytest.raises(DispatchError, match=r"for model 'gpt-4o-mini' (broke|ended before)"):
            list(chunks)


def test_stream_timeout_mid_stream(srv: OpenAIServer) -> None:
    srv.enqueue(gate=threading.Event())  # never opened
    chunks = _stream(_request(srv, stream=True, timeout=0.3))
    next(chunks), next(chunks)
    with pytest.raises(UpstreamTimeoutError, match=r"went silent for more than 0\.3 s"):
        next(chunks)


def test_stream_error_status_raises_at_call_time(srv: OpenAIServer) -> None:
    srv.enqueue(status=400, body={"error": {"message": "bad stream request"}})
    with pytest.raises(DispatchError, match=r"HTTP 400 .*bad stream request"):
        openai_http.dispatch(_request(srv, stream=True))


def test_stream_answered_with_json_raises(srv: OpenAIServer) -> None:
    srv.enqueue(status=200, body={"error": {"message": "streaming unsupported"}})
    with pytest.raises(DispatchError, match="with JSON instead of server-sent events: streaming"):
        list(_stream(_request(srv, stream=True)))


def test_closing_the_stream_early_closes_the_response(
    srv: OpenAIServer, mocker: MockerFixture
) -> None:
    close = mocker.spy(requests.Response, "close")
    chunks = _stream(_request(srv, stream=True))
    next(chunks)
    close.assert_not_called()
    chunks.close()  # type: ignore[attr-defined]
    close.assert_called_once()


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 401, "body": {"error": {"message": f"Incorrect API key provided: {SECRET}"}}},
        {"status": 500, "body": f"internal error for key {SECRET}", "times": 3},
        {"status": 200, "body": f"not json {SECRET}"},
        {"delay": 1.0},
        {"drop_connection": True, "times": 3},
    ],
)
def test_the_key_never_appears_in_errors(srv: OpenAIServer, fault: dict[str, Any]) -> None:
    srv.enqueue(**fault)
    with pytest.raises(DispatchError) as info:
        _answer(_request(srv, api_key=SECRET, timeout=0.3))
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.args)
    assert SECRET not in repr(info.value)
    # the requests exception (whose request holds the Authorization header) is not attached
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert srv.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_the_key_never_appears_for_an_unreachable_server() -> None:
    base = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(DispatchError) as info:
        openai_http.dispatch(_request(None, api_base=base, api_key=SECRET, max_retries=0))
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.args)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_credentials_in_the_base_url_are_hidden() -> None:
    base = f"http://user:{SECRET}@127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(DispatchError) as info:
        openai_http.dispatch(_request(None, api_base=base, max_retries=0))
    assert SECRET not in str(info.value)
    assert "cannot reach the model server at http://***@127.0.0.1:" in str(info.value)


def test_short_placeholder_keys_are_not_scrubbed(srv: OpenAIServer) -> None:
    srv.enqueue(status=400, body={"error": {"message": "x is an unexpected parameter"}})
    with pytest.raises(DispatchError, match=r": x is an unexpected parameter\. Hint"):
        _answer(_request(srv, api_key="x"))


# -- backoff arithmetic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "3600"}, 60.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After-Ms": "999999", "Retry-After": "1"}, 60.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ],
)
def test_retry_delay_honours_the_server(headers: dict[str, str], expected: float) -> None:
    assert openai_http.retry_delay(0, headers) == expected


def test_retry_delay_with_a_future_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    delay = openai_http.retry_delay(0, {"Retry-After": format_datetime(when, usegmt=True)})
    assert 25.0 < delay <= 30.0


@pytest.mark.parametrize("junk", ["soon", "nan", ""])
def test_retry_delay_falls_back_to_backoff_on_junk(
    monkeypatch: pytest.MonkeyPatch, junk: str
) -> None:
    monkeypatch.setattr(_openai_wire, "jitter", lambda: 1.0)
    assert openai_http.retry_delay(2, {"Retry-After": junk, "retry-after-ms": junk}) == 2.0


def test_backoff_doubles_up_to_the_cap_with_full_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_openai_wire, "jitter", lambda: 1.0)
    assert [openai_http.retry_delay(n, {}) for n in range(6)] == [0.5, 1, 2, 4, 8, 8]
    assert openai_http.retry_delay(10_000, {}) == 8.0
    monkeypatch.setattr(_openai_wire, "jitter", lambda: 0.25)
    assert openai_http.retry_delay(3, {}) == 1.0
    monkeypatch.setattr(_openai_wire, "jitter", lambda: 0.0)
    assert openai_http.retry_delay(3, {}) == 0.0


def test_proxies_come_from_the_environment_and_follow_its_changes(
    srv: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in openai_http._ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert _answer(_request(srv, max_retries=0)).choices[0].message.content

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DispatchError) as caught:
        _answer(_request(srv, max_retries=0))
    assert f"{srv.base_url}: through the proxy set in HTTP(S)_PROXY: " in str(caught.value)

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert _answer(_request(srv, max_retries=0)).choices[0].message.content
    assert len(srv.requests) == 2  # the proxied attempt never reached the server
