"""The async dispatcher (``adispatch``) against a real local OpenAI-compatible server.

It must behave like the sync dispatcher: same request, same retries, same error messages,
the key never shown.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, Protocol, cast

import pytest

from promptdock import (
    CompletionRequest,
    DispatchError,
    ModelResponse,
    PromptDock,
    Provenance,
    UpstreamTimeoutError,
)
from promptdock.dispatch import openai_async
from promptdock.response import AsyncCompletionStream, ObjectDict, StreamChunk
from tests.support.openai_server import OpenAIServer

KEY = "sk-async-test-6b0c2e71"
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def srv() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits, recorded instead of slept."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(openai_async, "_sleep", record)
    return waits


def _request(srv: OpenAIServer | str, **kwargs: Any) -> CompletionRequest:
    base = srv if isinstance(srv, str) else srv.base_url
    options: dict[str, Any] = {"api_base": base, "api_key": KEY, "max_retries": 2, **kwargs}
    return CompletionRequest(model="gpt-4o-mini", messages=MESSAGES, **options)


async def _call(request: CompletionRequest) -> Any:
    """Dispatch inside a loop whose session is closed at the end, as the proxy does."""
    pending = openai_async.adispatch(request)
    assert pending is not None
    try:
        result = await pending
        if isinstance(result, ModelResponse):
            return result
        return [chunk async for chunk in _chunks(result)]
    finally:
        await openai_async.close_session()


class _Chunks(Protocol):
    """What the dispatcher returns for a stream: async iteration, and aclose()."""

    def __aiter__(self) -> AsyncIterator[StreamChunk]: ...

    def __anext__(self) -> Awaitable[StreamChunk]: ...

    async def aclose(self) -> None: ...


def _chunks(result: object) -> _Chunks:
    """A streamed answer, typed."""
    assert hasattr(result, "__anext__")
    assert hasattr(result, "aclose")
    return cast("_Chunks", result)


def _open_connections(pool: Any) -> int:
    """How many connections the pool counts, idle or busy."""
    return sum(host.count for host in pool._hosts.values())


def run(request: CompletionRequest) -> Any:
    """The dispatcher's answer: a ModelResponse, or the list of streamed chunks."""
    return asyncio.run(_call(request))


def _failure(request: CompletionRequest) -> DispatchError:
    with pytest.raises(DispatchError) as caught:
        run(request)
    assert KEY not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    return caught.value


# -- answers -------------------------------------------------------------------------------


def test_hook_adispatch_answers_a_plain_request(srv: OpenAIServer) -> None:
    reply = run(_request(srv, params={"temperature": 0.1}))

    assert isinstance(reply, ModelResponse)
    assert reply.choices[0].message.content == "echo: hello there"
    (sent,) = srv.requests
    assert sent.body == {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.1}
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["user-agent"].startswith("promptdock")


def test_stream_yields_each_chunk(srv: OpenAIServer) -> None:
    chunks = run(_request(srv, stream=True))

    text = "".join(c.choices[0].delta.get("content") or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert srv.requests[0].body["stream"] is True
    assert srv.requests[0].headers["accept"] == "text/event-stream"


def test_connections_are_pooled_across_calls_and_streams(srv: OpenAIServer) -> None:
    async def calls() -> None:
        try:
            for stream in (False, True, False, True):
                result = await openai_async._dispatch(_request(srv, stream=stream))
                if not isinstance(result, ModelResponse):
                    _ = [chunk async for chunk in _chunks(result)]
        finally:
            await openai_async.close_session()

    asyncio.run(calls())

    assert len({r.client_port for r in srv.requests}) == 1


def test_stream_is_incremental(srv: OpenAIServer) -> None:
    gate = threading.Event()
    srv.enqueue(gate=gate)

    async def first_then_rest() -> list[StreamChunk]:
        try:
            result = await openai_async._dispatch(_request(srv, stream=True))
            assert not isinstance(result, ModelResponse)
            seen = []
            async for chunk in _chunks(result):
                seen.append(chunk)
                if chunk.choices and chunk.choices[0].delta.get("content"):
                    gate.set()  # only reachable if the first content arrived before the rest
            return seen
        finally:
            await openai_async.close_session()

    chunks = asyncio.run(first_then_rest())

    assert len(chunks) > 3


def test_through_the_dock_with_provenance(srv: OpenAIServer) -> None:
    dock = PromptDock(load_entrypoints=False)  # the async dispatcher is a built-in plugin
    assert "openai-async" in {record.name for record in dock.plugin_host.plugins()}
    provenance = Provenance(source="s", kind="k", prompt_id="p")

    async def call() -> tuple[Any, Any]:
        try:
            plain = await dock.asend(_request(srv, provenance=provenance))
            stream = await dock.asend(_request(srv, provenance=provenance, stream=True))
            assert isinstance(stream, AsyncCompletionStream)
            return plain, [c async for c in stream]
        finally:
            await openai_async.close_session()

    plain, chunks = asyncio.run(call())

    assert plain.prompt is provenance
    assert chunks


# -- retries -------------------------------------------------------------------------------


def test_retries_honour_retry_after(srv: OpenAIServer, sleeps: list[float]) -> None:
    srv.enqueue(status=429, headers={"Retry-After": "2"})
    srv.enqueue(status=503, headers={"retry-after-ms": "250"})

    reply = run(_request(srv))

    assert reply.choices[0].message.content == "echo: hello there"
    assert sleeps == [2.0, 0.25]
    assert len(srv.requests) == 3


def test_retries_exhausted_report_status_attempts_and_hint(
    srv: OpenAIServer, sleeps: list[float]
) -> None:
    srv.enqueue(status=502, times=3)

    error = _failure(_request(srv))

    assert error.status_code == 502
    assert str(error) == (
        f"the model server at {srv.base_url} answered HTTP 502 for model 'gpt-4o-mini' (after "
        f"3 attempts): scripted error 502. Hint: the model server failed: try again later"
    )
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "check the request's messages and parameters"),
        (401, "check the API key (api_key=... or OPENAI_API_KEY)"),
        (404, "check the model name and that api_base ends in /v1"),
    ],
)
def test_client_errors_are_not_retried(srv: OpenAIServer, status: int, hint: str) -> None:
    srv.enqueue(status=status)

    error = _failure(_request(srv))

    assert error.status_code == status
    assert f"answered HTTP {status} for model 'gpt-4o-mini': scripted error {status}" in str(error)
    assert hint in str(error)
    assert len(srv.requests) == 1


def test_dropped_connection_is_retried(srv: OpenAIServer, sleeps: list[float]) -> None:
    srv.enqueue(drop_connection=True)

    assert run(_request(srv)).choices[0].message.content == "echo: hello there"
    assert len(sleeps) == 1


def test_dropped_connections_exhausted(srv: OpenAIServer, sleeps: list[float]) -> None:
    srv.enqueue(drop_connection=True, times=3)

    error = _failure(_request(srv))

    assert str(error).startswith(
        f"the model server at {srv.base_url} closed the connection without answering model "
        f"'gpt-4o-mini'"
    )
    assert str(error).endswith("(after 3 attempts); check the server's logs")


def test_unreachable_server_names_the_base_url(sleeps: list[float]) -> None:
    with OpenAIServer() as gone:
        closed = gone.base_url

    error = _failure(_request(closed, max_retries=1))

    assert str(error).startswith(f"cannot reach the model server at {closed}: ")
    assert str(error).endswith(
        "(after 2 attempts); check api_base (or OPENAI_BASE_URL) and that the server is running"
    )
    assert len(sleeps) == 1


def test_read_timeout_is_final(srv: OpenAIServer, sleeps: list[float]) -> None:
    srv.enqueue(delay=2)

    with pytest.raises(UpstreamTimeoutError) as caught:
        run(_request(srv, timeout=0.2))

    assert str(caught.value) == (
        f"the model server at {srv.base_url} did not answer model 'gpt-4o-mini' within 0.2 s; "
        f"raise timeout=... or check the server's load"
    )
    assert sleeps == []


def test_no_key_for_openai_itself_fails_before_any_network() -> None:
    request = CompletionRequest(model="gpt-4o", messages=MESSAGES)

    with pytest.raises(DispatchError) as caught:
        run(request)

    assert str(caught.value).startswith(
        "no API key for model 'gpt-4o' at https://api.openai.com/v1: set the OPENAI_API_KEY"
    )


# -- answers that are not chat completions -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "start"),
    [
        ("<html>oops</html>", "answered model 'gpt-4o-mini' with a body that is not JSON"),
        ({"object": "list"}, "answered model 'gpt-4o-mini' with JSON that is not a chat"),
        ({"error": {"message": "model overloaded"}}, "reported an error for model"),
    ],
)
def test_malformed_200_bodies(srv: OpenAIServer, body: Any, start: str) -> None:
    srv.enqueue(status=200, body=body)

    assert start in str(_failure(_request(srv)))


def test_stream_answered_with_json_raises(srv: OpenAIServer) -> None:
    srv.enqueue(status=200, body={"error": {"message": "streaming disabled"}})

    error = _failure(_request(srv, stream=True))

    assert "with JSON instead of server-sent events: streaming disabled" in str(error)


def test_truncated_stream_raises(srv: OpenAIServer) -> None:
    srv.enqueue(truncate=True)

    error = _failure(_request(srv, stream=True))

    assert f"the stream from the model server at {srv.base_url}" in str(error)


def test_stream_error_event_raises(srv: OpenAIServer) -> None:
    events = 'data: {"error": {"message": "boom"}}\n\n'
    srv.enqueue(body=events, headers={"Content-Type": "text/event-stream"})

    error = _failure(_request(srv, stream=True))

    assert str(error).endswith("reported an error while streaming model 'gpt-4o-mini': boom")


def test_a_key_echoed_by_the_server_is_scrubbed(srv: OpenAIServer) -> None:
    srv.enqueue(status=400, body={"error": {"message": f"key {KEY} is not allowed"}})

    assert "key *** is not allowed" in str(_failure(_request(srv)))


def test_closing_a_stream_early_releases_the_response(srv: OpenAIServer) -> None:
    async def first_only() -> StreamChunk:
        try:
            result = await openai_async._dispatch(_request(srv, stream=True))
            assert not isinstance(result, ModelResponse)
            chunks = _chunks(result)
            first = await chunks.__anext__()
            await chunks.aclose()
            return first
        finally:
            await openai_async.close_session()

    assert asyncio.run(first_only()).object == "chat.completion.chunk"


# -- sessions ------------------------------------------------------------------------------


def test_a_lazily_made_session_is_closed_when_asyncio_run_ends(srv: OpenAIServer) -> None:
    sessions: list[Any] = []

    async def call() -> None:
        reply = await openai_async._dispatch(_request(srv))
        assert isinstance(reply, ModelResponse)
        sessions.append(await openai_async.open_session())

    asyncio.run(call())
    gc.collect()  # an unclosed session would warn here, and warnings are errors

    assert sessions[0].closed


def test_open_session_is_one_per_loop() -> None:
    async def twice() -> tuple[Any, Any, bool]:
        first = await openai_async.open_session()
        second = await openai_async.open_session()
        await openai_async.close_session()
        return first, second, first.closed

    first, second, closed = asyncio.run(twice())

    assert first is second
    assert closed


def test_without_httptools_the_hook_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_async, "_available", False)

    answer = openai_async.adispatch(_request("http://127.0.0.1:9/v1"))

    assert answer is None


def test_the_servers_json_is_returned_unchanged_with_attribute_access(srv: OpenAIServer) -> None:
    body = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "extra": [{"nested": [1, {"deep": True}]}],
    }
    srv.enqueue(body=body)

    reply = run(_request(srv))

    assert reply == body
    assert reply.to_dict() == body
    assert type(reply.choices[0]) is ObjectDict
    assert reply.extra[0].nested[1].deep is True
    assert reply.prompt is None


def test_https_to_a_plain_http_server_is_a_tls_failure(srv: OpenAIServer) -> None:
    base = srv.base_url.replace("http://", "https://")

    error = _failure(_request(base, max_retries=0))

    assert str(error).startswith(f"TLS failed with the model server at {base}: wrong version")
    assert str(error).endswith(
        "; check the URL's scheme and the certificate (SSL_CERT_FILE for a private CA)"
    )
    assert srv.requests == []  # the server only saw a TLS handshake it could not read


# -- review findings: each test below failed before its fix ---------------------------------


def test_a_completion_larger_than_a_mebibyte_is_read_whole(srv: OpenAIServer) -> None:
    # The client paused the socket at 1 MiB buffered while read() waited for the end: the
    # call never returned. (Bounded here so the bug fails the test instead of hanging it.)
    content = "x" * (3 << 20)
    srv.enqueue(
        body={
            "id": "chatcmpl-big",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        }
    )

    async def bounded() -> Any:
        async with asyncio.timeout(20):
            return await _call(_request(srv))

    reply = asyncio.run(bounded())

    assert reply.choices[0].message.content == content


def test_a_stream_closed_before_its_first_chunk_frees_its_connection(srv: OpenAIServer) -> None:
    # The proxy closes the stream when its client hangs up, maybe before reading any chunk.
    async def main() -> tuple[int, int]:
        try:
            pool = await openai_async.open_session()
            result = await openai_async._dispatch(_request(srv, stream=True))
            busy = _open_connections(pool)
            await AsyncCompletionStream(_chunks(result), None).aclose()
            return busy, _open_connections(pool)
        finally:
            await openai_async.close_session()

    assert asyncio.run(main()) == (1, 0)


def test_a_stream_dropped_unread_frees_its_connection(srv: OpenAIServer) -> None:
    async def main() -> tuple[int, int]:
        try:
            pool = await openai_async.open_session()
            result = await openai_async._dispatch(_request(srv, stream=True))
            busy = _open_connections(pool)
            del result  # never iterated, never closed
            await asyncio.sleep(0)
            return busy, _open_connections(pool)
        finally:
            await openai_async.close_session()

    assert asyncio.run(main()) == (1, 0)


def test_a_finished_stream_leaves_no_task_behind(srv: OpenAIServer) -> None:
    # An async generator left suspended inside another costs the loop a task (and a wake-up
    # write) to finalize it: about 20 µs per stream.
    async def main() -> set[asyncio.Task[Any]]:
        try:
            result = await openai_async._dispatch(_request(srv, stream=True))
            _ = [chunk async for chunk in _chunks(result)]
            await asyncio.sleep(0)
            return asyncio.all_tasks() - {asyncio.current_task()}
        finally:
            await openai_async.close_session()

    assert asyncio.run(main()) == set()
