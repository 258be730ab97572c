"""A real OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

``OpenAIServer`` answers ``POST /v1/chat/completions`` (plain JSON or server-sent events, in
the exact shapes OpenAI sends) and ``GET /v1/models``. By default the assistant says
``"echo: <last user message>"``. Every request is recorded, and the next answers can be
scripted to fail in the ways real upstreams fail::

    with OpenAIServer() as srv:
        srv.enqueue(status=429, headers={"Retry-After": "0"})
        ...  # call srv.base_url ("http://127.0.0.1:PORT/v1")
        assert len(srv.requests) == 2

It is bounded so a broken client cannot hang a test run: delays and gates are capped, idle
keep-alive connections time out, and :meth:`OpenAIServer.close` interrupts every wait.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

__all__ = ["GATE_TIMEOUT", "MAX_DELAY", "OpenAIServer", "RecordedRequest", "ScriptedResponse"]

MAX_DELAY = 10.0
"""Seconds: the longest a scripted ``delay`` may hold an answer."""

GATE_TIMEOUT = 5.0
"""Seconds a gated stream waits for its gate before giving up and dropping the connection."""

_IDLE_TIMEOUT = 30.0
_POLL = 0.05


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    :ivar method: ``"POST"``, ``"GET"``...
    :ivar path: the request target, query string included.
    :ivar headers: header names lower-cased (``headers["authorization"]``).
    :ivar body: the JSON body parsed, or ``None`` when empty or not JSON.
    :ivar raw_body: the body's bytes.
    :ivar client_port: the client's source port: equal ports mean a reused connection.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw_body: bytes = field(repr=False)
    client_port: int = 0


@dataclass(frozen=True)
class ScriptedResponse:
    """How to answer one request instead of the default (see :meth:`OpenAIServer.enqueue`)."""

    status: int | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop_connection: bool = False
    truncate: bool = False
    gate: threading.Event | None = None


_DEFAULT = ScriptedResponse()


class OpenAIServer:
    """A threaded OpenAI-compatible server on an ephemeral 127.0.0.1 port.

    :param models: the ids ``GET /v1/models`` lists.
    :param api_key: when set, requests must send ``Authorization: Bearer <api_key>`` or get a
        401 in OpenAI's shape.
    :param sse_chunked: send event streams with ``Transfer-Encoding: chunked`` (keep-alive);
        ``False`` sends them unframed and closes the connection at the end, as some servers do.
    :param words_per_chunk: how many words each streamed content chunk carries.
    """

    def __init__(
        self,
        *,
        models: Sequence[str] = ("gpt-4o-mini", "gpt-4o"),
        api_key: str | None = None,
        sse_chunked: bool = True,
        words_per_chunk: int = 2,
    ) -> None:
        self.models = tuple(models)
        self.api_key = api_key
        self.sse_chunked = sse_chunked
        self.words_per_chunk = max(1, words_per_chunk)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._script: deque[ScriptedResponse] = deque()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._httpd = _Server(self)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without ``/v1``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL clients use, as the openai client expects it (ending in ``/v1``)."""
        return f"{self.url}/v1"

    def start(self) -> OpenAIServer:
        """Serve in a daemon thread (idempotent); returns ``self``."""
        if self._closed:
            raise RuntimeError("this OpenAIServer is closed; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": _POLL},
                name=f"openai-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut open connections and wait for the handler threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):  # the handler may have closed it already
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what tests use ------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> tuple[ScriptedResponse, ...]:
        """The scripted answers not used yet, next first."""
        with self._lock:
            return tuple(self._script)

    def enqueue(
        self,
        *,
        status: int | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop_connection: bool = False,
        truncate: bool = False,
        gate: threading.Event | None = None,
        times: int = 1,
    ) -> None:
        """Script how the next ``times`` requests (of any route) are answered.

        :param status: the HTTP status. With no ``body``, a status of 300 or more sends an
            OpenAI-shaped error JSON; ``None`` or a 2xx sends the normal answer (status 200).
        :param body: send this instead of the normal answer: ``dict``/``list`` as JSON,
            ``str``/``bytes`` as is (``Content-Type: application/json`` unless ``headers`` set
            it, e.g. to ``text/event-stream`` for a hand-written stream).
        :param headers: extra response headers (``{"Retry-After": "0"}``).
        :param delay: seconds to wait before answering (capped at :data:`MAX_DELAY`).
        :param drop_connection: close the connection without answering.
        :param truncate: announce the whole body but send only part of it (a stream stops
            before its end), then close the connection.
        :param gate: for a streamed answer: after the first content chunk, wait for this event
            (at most :data:`GATE_TIMEOUT`; on timeout the connection is dropped) before sending
            the rest. Proves a client yields chunks as they arrive.
        """
        script = ScriptedResponse(
            status=status,
            body=body,
            headers=dict(headers or {}),
            delay=min(max(delay, 0.0), MAX_DELAY),
            drop_connection=drop_connection,
            truncate=truncate,
            gate=gate,
        )
        with self._lock:
            self._script.extend([script] * times)

    # -- internals used by the handler ---------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections[sock] = threading.current_thread()

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.pop(sock, None)

    def _record(self, request: RecordedRequest) -> ScriptedResponse:
        with self._lock:
            self._requests.append(request)
            return self._script.popleft() if self._script else _DEFAULT

    def _wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        """Sleep up to ``seconds`` (or until ``event``); ``False`` if the server is closing."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (event is not None and event.is_set()):
                return True
            (event or self._stop).wait(min(remaining, _POLL))
        return False

    def _next_id(self) -> str:
        return f"chatcmpl-test{next(self._ids)}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app: OpenAIServer) -> None:
        self.app = app
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (a timeout, a closed stream, a dropped pool) is not a server bug.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup, which can stall in a sandbox.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "promptdock-test-openai/1.0"
    timeout = _IDLE_TIMEOUT

    @property
    def app(self) -> OpenAIServer:
        return cast(_Server, self.server).app

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle's algorithm the body would
        # wait for the client's delayed ACK (~40 ms per request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.app._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.app._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read :attr:`OpenAIServer.requests` instead of a log."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    # -- dispatch ------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        raw = self._read_body()
        if raw is None:
            return
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        record = RecordedRequest(
            method, self.path, headers, body, raw, client_port=int(self.client_address[1])
        )
        script = self.app._record(record)
        try:
            self._answer(method, body, raw, script)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its timeout fired during a scripted delay).
            self.close_connection = True

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self._send_error(411, "send the request body with a Content-Length")
                self.close_connection = True
                return None
            return b""
        return self.rfile.read(int(length))

    def _answer(self, method: str, body: Any, raw: bytes, script: ScriptedResponse) -> None:
        if script.delay and not self.app._wait(script.delay):
            self.close_connection = True
            return
        if script.drop_connection:
            self._drop()
            return
        if script.body is not None or (script.status is not None and script.status >= 300):
            self._send_scripted(script)
            return
        route = (method, self.path.split("?", 1)[0].rstrip("/"))
        if self.app.api_key is not None and not self._authorized():
            self._send_error(401, "Incorrect API key provided.", code="invalid_api_key")
        elif route == ("POST", "/v1/chat/completions"):
            self._chat(body, raw, script)
        elif route == ("GET", "/v1/models"):
            self._send_json(200, self._models_list(), script)
        else:
            self._send_error(404, f"no route for {method} {self.path}", kind="not_found_error")

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.app.api_key}"

    def _chat(self, body: Any, raw: bytes, script: ScriptedResponse) -> None:
        if not isinstance(body, dict):
            what = "is not valid JSON" if raw else "is empty"
            self._send_error(400, f"the request body {what}")
            return
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            self._send_error(400, "you must provide a model parameter", param="model")
            return
        if not isinstance(messages, list) or not messages:
            self._send_error(400, "'messages' must be a non-empty array", param="messages")
            return
        text = "echo: " + _last_user_text(messages)
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
        if body.get("stream") is True:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and bool(options.get("include_usage"))
            self._stream(model, text, prompt_tokens, usage, script)
        else:
            self._send_json(200, self._completion(model, text, prompt_tokens), script)

    # -- answers ---------------------------------------------------------------------------

    def _completion(self, model: str, text: str, prompt_tokens: int) -> dict[str, Any]:
        completion_tokens = len(text.split())
        return {
            "id": self.app._next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_promptdock_test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _models_list(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "promptdock-test"}
                for m in self.app.models
            ],
        }

    def _chunks(
        self, model: str, text: str, prompt_tokens: int, usage: bool
    ) -> Iterator[dict[str, Any]]:
        base = {
            "id": self.app._next_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_promptdock_test",
        }
        extra: dict[str, Any] = {"usage": None} if usage else {}
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": "", "refusal": None}, None)
        ]
        deltas += [({"content": piece}, None) for piece in _pieces(text, self.app.words_per_chunk)]
        deltas.append(({}, "stop"))
        for delta, finish in deltas:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            yield {**base, "choices": [choice], **extra}
        if usage:
            completion_tokens = len(text.split())
            counts = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            yield {**base, "choices": [], "usage": counts}

    def _stream(
        self, model: str, text: str, prompt_tokens: int, usage: bool, script: ScriptedResponse
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        chunked = self.app.sse_chunked
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        for name, value in script.headers.items():
            self.send_header(name, value)
        self.end_headers()
        chunks = self._chunks(model, text, prompt_tokens, usage)
        events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
        events.append("data: [DONE]\n\n")
        cut = len(events) // 2 if script.truncate else None
        for index, event in enumerate(events):
            if index == cut:
                self._drop()
                return
            self._write_event(event.encode(), chunked)
            # Index 1 is the first content chunk (index 0 only announces the role).
            if index == 1 and script.gate is not None and not self._gate_opened(script.gate):
                self._drop()
                return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _gate_opened(self, gate: threading.Event) -> bool:
        return self.app._wait(GATE_TIMEOUT, gate) and gate.is_set()

    def _write_event(self, data: bytes, chunked: bool) -> None:
        if chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        # wfile is unbuffered, so each event leaves at once: clients see chunks one by one.
        self.wfile.write(data)

    def _send_scripted(self, script: ScriptedResponse) -> None:
        status = script.status or 200
        body = script.body
        if body is None:
            body = _error_body(status, f"scripted error {status}")
        self._send_bytes(status, _encode(body), script.headers, script.truncate)

    def _send_json(self, status: int, payload: Any, script: ScriptedResponse) -> None:
        self._send_bytes(status, _encode(payload), script.headers, script.truncate)

    def _send_error(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        payload = _error_body(status, message, kind=kind, param=param, code=code)
        self._send_bytes(status, _encode(payload), {}, False)

    def _send_bytes(
        self, status: int, data: bytes, headers: Mapping[str, str], truncate: bool
    ) -> None:
        self.send_response(status)
        if not any(name.lower() == "content-type" for name in headers):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if truncate:
            self.wfile.write(data[: len(data) // 2])
            self._drop()
            return
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may have gone away already
            self.connection.shutdown(socket.SHUT_RDWR)


def _error_body(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    if kind is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _pieces(text: str, words: int) -> list[str]:
    """``text`` in pieces of ``words`` words that join back to exactly ``text``."""
    tokens = text.split(" ")
    return [
        " ".join(tokens[i : i + words]) + (" " if i + words < len(tokens) else "")
        for i in range(0, len(tokens), words)
    ]
