"""Conformance of the proxy's HTTP/1.1 server protocol, black-box over real sockets.

Every test runs once per protocol class uvicorn can be given as ``http=``: ``httptools`` is
uvicorn's own (the reference, which proves each test right) and ``promptdock`` is
:class:`promptdock.proxy._http_server.HttpProtocol`. The tests speak raw bytes to a uvicorn
server on 127.0.0.1 and check what RFC 9112 (HTTP/1.1 messages) and the ASGI HTTP spec
promise, never how a class does it. Where uvicorn's class breaks a rule, the test stays and
that parameter is marked ``xfail(strict=True)`` with the rule it breaks.

Most tests share one server per protocol, module-wide (a server costs ~0.2 s to stop), and
plug their own ASGI app into it; the few that need their own settings (root path, keep-alive
timeout, request limit, shutdown) start a dedicated one.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import gc
import hashlib
import random
import socket
import threading
import time
import tracemalloc
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import pytest
import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

TIMEOUT = 2.0
"""Seconds any single wait may take: a hang fails fast instead of stalling the suite."""

MIB = 1024 * 1024

SERVED_BY = (b"x-served-by", b"conformance")
"""A default header configured on the shared server: every answer must carry it."""

HOST = "Host: conformance.test"

SEND_BUFFER = 256 * 1024
"""The server sockets' kernel send buffer."""


# -- the server side --------------------------------------------------------------------------


class Switchboard:
    """The ASGI app a server runs: forwards each request to whichever app a test plugged in."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the plugged-in app."""
        await self.app(scope, receive, send)


async def unplugged(scope: Scope, receive: Receive, send: Send) -> None:
    """The app between tests: a request reaching it is a leftover from an earlier test."""
    await answer(send, b"no app plugged in", status=404)


class RunningServer:
    """uvicorn serving a :class:`Switchboard` with one protocol class, in a thread."""

    def __init__(self, protocol: type[asyncio.Protocol], app: App, **options: Any) -> None:
        self.board = Switchboard(app)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this: a fixed kernel send buffer (no autotuning up to
        # several MiB) makes a client that stops reading push back on the app promptly.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.board,
            http=protocol,
            lifespan="off",
            log_level="warning",
            log_config=None,
            access_log=False,
            ws="none",
            server_header=False,
            **options,
        )
        self.uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.uvicorn.run,
            kwargs={"sockets": [self._sock]},
            name=f"http-conformance-{self.port}",
            daemon=True,
        )

    def start(self) -> RunningServer:
        """Serve, and wait (bounded) until the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def begin_shutdown(self) -> None:
        """Start uvicorn's graceful shutdown (what SIGTERM does), without waiting."""
        self.uvicorn.should_exit = True

    def stopped(self, timeout: float = 5.0) -> bool:
        """Whether the server thread ends within ``timeout`` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Shut down and wait for the thread (bounded)."""
        self.begin_shutdown()
        stopped = self.stopped()
        self._sock.close()
        state = self.uvicorn.server_state
        assert stopped, (
            f"the server on port {self.port} did not stop: {len(state.connections)} "
            f"connection(s) still open, {len(state.tasks)} request task(s) still running"
        )

    def plug(self, app: App) -> RunningServer:
        """Route the next requests to ``app``."""
        self.board.app = app
        return self

    def connect(self, **options: Any) -> Client:
        """A new client connection (see :class:`Client` for ``options``)."""
        return Client(self.port, **options)


async def wait_for(event: threading.Event, timeout: float = TIMEOUT) -> None:
    """In the server's loop, wait for the test thread to set ``event``.

    Polls, because a blocking ``event.wait`` would stall every connection on the loop.
    """
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released the app")
        await asyncio.sleep(0.002)


async def receive_body(receive: Receive) -> list[Message]:
    """Every ``receive`` event up to the end of the request body (or a disconnect)."""
    messages = [await receive()]
    while messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False):
        messages.append(await receive())
    return messages


def body_of(messages: Sequence[Message]) -> bytes:
    """The request body the ``http.request`` events carried."""
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")


async def start(send: Send, status: int = 200, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send ``http.response.start``."""
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})


async def chunk(send: Send, body: bytes, *, more: bool) -> None:
    """Send one ``http.response.body`` event."""
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def answer(send: Send, body: bytes, *, status: int = 200) -> None:
    """A complete plain-text answer with a ``content-length``."""
    await start(
        send,
        status,
        [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    )
    await chunk(send, body, more=False)


def holding_app() -> tuple[App, threading.Event, threading.Event]:
    """An app answering ``ok``, except that ``/hold`` sets ``entered`` and waits for ``release``."""
    entered = threading.Event()
    release = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        if scope["path"] == "/hold":
            entered.set()
            await wait_for(release)
        await answer(send, b"ok")

    return app, entered, release


def echo(scopes: list[Scope] | None = None, bodies: list[list[Message]] | None = None) -> App:
    """An app answering ``METHOD path body`` and recording each scope and body event list."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages = await receive_body(receive)
        if scopes is not None:
            scopes.append(scope)
        if bodies is not None:
            bodies.append(messages)
        await answer(send, f"{scope['method']} {scope['path']} ".encode() + body_of(messages))

    return app


@functools.cache
def big_payload() -> bytes:
    """8 MiB of reproducible noise: misplaced or repeated pieces show up in its hash."""
    return random.Random(21).randbytes(8 * MIB)


# -- the client side --------------------------------------------------------------------------

Framing = Literal["none", "length", "chunked", "close"]


@dataclass(frozen=True)
class Head:
    """A response's status line and header fields, as received."""

    status_line: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    """``(name, value)`` in arrival order: names as sent, values without surrounding OWS."""

    @property
    def status(self) -> int:
        """The status code."""
        return int(self.status_line.split(b" ")[1])

    def values(self, name: bytes) -> list[bytes]:
        """Every value of the header ``name`` (case-insensitive), in order."""
        return [value for key, value in self.headers if key.lower() == name]

    def value(self, name: bytes) -> bytes | None:
        """The value of the header ``name``, which must appear at most once."""
        values = self.values(name)
        assert len(values) <= 1, f"{name!r} appears {len(values)} times in {self}"
        return values[0] if values else None

    def framing(self, method: str) -> Framing:
        """How the body is delimited (RFC 9112 section 6.3)."""
        if method == "HEAD" or self.status < 200 or self.status in (204, 304):
            return "none"
        codings = self.values(b"transfer-encoding")
        if codings:
            assert self.value(b"content-length") is None, f"both framings in {self}"
            last = codings[-1].split(b",")[-1].strip().lower()
            return "chunked" if last == b"chunked" else "close"
        return "length" if self.value(b"content-length") is not None else "close"


@dataclass(frozen=True)
class Response(Head):
    """A complete response."""

    body: bytes
    framing_used: Framing


def http_request(
    target: str = "/",
    method: str = "GET",
    *,
    headers: Sequence[str] = (),
    body: bytes | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """A request's bytes: a Host header, ``headers``, and a Content-Length if ``body`` is given."""
    lines = [f"{method} {target} {version}", HOST, *headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + (body or b"")


class Client:
    """One raw TCP connection to the server, reading through a buffer with short timeouts.

    ``receive_buffer`` shrinks the kernel's receive buffer (set before connecting), so a
    client that stops reading pushes back on the server quickly.
    """

    def __init__(
        self, port: int, *, timeout: float = TIMEOUT, receive_buffer: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.timeout = timeout
        self._buffer = bytearray()
        self._eof = False

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    @property
    def address(self) -> tuple[str, int]:
        """This end's ``(host, port)``."""
        host, port = self.sock.getsockname()
        return str(host), int(port)

    def send(self, data: bytes) -> bool:
        """Send ``data``; ``False`` if the server has already closed the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def _recv(self) -> bytes:
        if self._eof:
            return b""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise AssertionError(f"the server sent nothing for {self.timeout} s") from None
        self._eof = not data
        return data

    def _fill(self, wanted: str) -> None:
        data = self._recv()
        if not data:
            received = bytes(self._buffer[:300])
            raise AssertionError(f"connection closed before {wanted}; buffered {received!r}")
        self._buffer += data

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_until(self, marker: bytes, wanted: str) -> bytes:
        """Everything up to and including ``marker``."""
        while (end := self._buffer.find(marker)) < 0:
            self._fill(wanted)
        return self._take(end + len(marker))

    def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` bytes."""
        while len(self._buffer) < size:
            self._fill(f"{size} bytes arrived")
        return self._take(size)

    def read_at_most(self, size: int) -> bytes:
        """Up to ``size`` bytes: fewer only if the server closes the connection first."""
        while len(self._buffer) < size and (data := self._recv()):
            self._buffer += data
        return self._take(size)

    def read_to_eof(self) -> bytes:
        """Everything until the server closes the connection."""
        while data := self._recv():
            self._buffer += data
        return self._take(len(self._buffer))

    def assert_closed(self) -> None:
        """The server closes the connection (within the timeout) without sending more."""
        data = bytes(self._buffer) or self._recv()
        assert data == b"", f"expected the server to close the connection, got {data[:300]!r}"

    def read_head(self) -> Head:
        """A response's status line and header fields."""
        raw = self.read_until(b"\r\n\r\n", "a complete response head")
        status_line, *lines = raw[:-4].split(b"\r\n")
        assert status_line.startswith(b"HTTP/1."), f"not a status line: {raw[:300]!r}"
        headers = []
        for line in lines:
            name, colon, value = line.partition(b":")
            assert colon, f"not a header line: {line!r}"
            headers.append((name, value.strip(b" \t")))
        return Head(status_line, tuple(headers))

    def read_chunk(self) -> bytes:
        """The data of the next chunk of a chunked body; ``b""`` at the last chunk (with the
        trailer section consumed)."""
        line = self.read_until(b"\r\n", "a chunk size line")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while self.read_until(b"\r\n", "the end of the trailer section") != b"\r\n":
                pass
            return b""
        data = self.read_exact(size)
        assert self.read_exact(2) == b"\r\n", "a chunk does not end with CRLF"
        return data

    def read_chunked(self) -> bytes:
        """The rest of a chunked body."""
        parts = []
        while part := self.read_chunk():
            parts.append(part)
        return b"".join(parts)

    def read_body(self, head: Head, method: str = "GET") -> Response:
        """The body following ``head``, delimited as RFC 9112 section 6.3 says."""
        framing = head.framing(method)
        if framing == "none":
            body = b""
        elif framing == "chunked":
            body = self.read_chunked()
        elif framing == "length":
            body = self.read_exact(int(head.value(b"content-length") or b""))
        else:
            body = self.read_to_eof()
        return Response(head.status_line, head.headers, body, framing)

    def read_response(self, method: str = "GET") -> Response:
        """The next complete response (a request with ``method`` asked for it)."""
        return self.read_body(self.read_head(), method)

    def closes_before_more(self) -> bool:
        """Whether the server closes the connection before sending anything more."""
        if self._buffer:
            return False
        data = self._recv()
        self._buffer += data
        return not data

    def read_response_or_close(self, method: str = "GET") -> Response | None:
        """The next response, or ``None`` if the server closes the connection instead."""
        return None if self.closes_before_more() else self.read_response(method)

    def exchange(self, request: bytes, method: str = "GET") -> Response:
        """Send ``request`` and read its response."""
        assert self.send(request), "the server closed the connection"
        return self.read_response(method)


# -- fixtures ---------------------------------------------------------------------------------

PROTOCOLS = ("httptools", "promptdock")


def load_protocol(name: str) -> type[asyncio.Protocol]:
    """The protocol class called ``name``; promptdock's is imported only when asked for."""
    if name == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    from promptdock.proxy._http_server import HttpProtocol

    return HttpProtocol


def uvicorn_breaks(rule: str) -> pytest.MarkDecorator:
    """Run a test for both protocols, expecting uvicorn's to fail because it breaks ``rule``."""
    return pytest.mark.parametrize(
        "protocol",
        [
            pytest.param("httptools", marks=pytest.mark.xfail(reason=rule, strict=True)),
            "promptdock",
        ],
        indirect=True,
    )


@pytest.fixture(scope="module", params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> type[asyncio.Protocol]:
    """The protocol class under test."""
    return load_protocol(request.param)


@pytest.fixture(scope="module")
def shared_server(protocol: type[asyncio.Protocol]) -> Iterator[RunningServer]:
    """One server per protocol for the module, with a configured default header."""
    server = RunningServer(protocol, unplugged, headers=[("x-served-by", "conformance")]).start()
    yield server
    server.stop()


@pytest.fixture
def server(shared_server: RunningServer) -> Iterator[RunningServer]:
    """The shared server; the test plugs its app in with :meth:`RunningServer.plug`."""
    yield shared_server
    shared_server.plug(unplugged)


StartServer = Callable[..., RunningServer]


@pytest.fixture
def start_server(protocol: type[asyncio.Protocol]) -> Iterator[StartServer]:
    """``start_server(app, **uvicorn_config)``: a dedicated server, stopped after the test."""
    started: list[RunningServer] = []

    def start_one(app: App, **options: Any) -> RunningServer:
        server = RunningServer(protocol, app, **options).start()
        started.append(server)
        return server

    yield start_one
    for server in started:
        server.stop()


# -- 1. requests and the ASGI scope -----------------------------------------------------------


def test_get_request_scope_has_every_asgi_key(server: RunningServer) -> None:
    scopes: list[Scope] = []
    bodies: list[list[Message]] = []
    server.plug(echo(scopes, bodies))
    with server.connect() as client:
        response = client.exchange(
            b"GET /caf%C3%A9/a%20b%2Fc?x=1&y=%20z&x=2 HTTP/1.1\r\n"
            b"Host: conformance.test\r\n"
            b"X-Dup: one\r\n"
            b"User-Agent: conformance/1\r\n"
            b"x-DUP: two\r\n"
            b"\r\n"
        )
        local = client.address

    assert response.status == 200
    assert response.body == "GET /café/a b/c ".encode()
    [scope] = scopes
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"].get("spec_version", "2.0").startswith("2.")
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a b/c"
    assert scope["raw_path"] == b"/caf%C3%A9/a%20b%2Fc"
    assert scope["query_string"] == b"x=1&y=%20z&x=2"
    assert scope.get("root_path", "") == ""
    assert list(map(tuple, scope["headers"])) == [
        (b"host", b"conformance.test"),
        (b"x-dup", b"one"),
        (b"user-agent", b"conformance/1"),
        (b"x-dup", b"two"),
    ]
    assert tuple(scope["client"]) == local
    assert tuple(scope["server"]) == ("127.0.0.1", server.port)
    [[message]] = bodies
    assert message["type"] == "http.request"
    assert message.get("body", b"") == b""
    assert message.get("more_body", False) is False


def test_post_body_with_content_length_arrives_whole(server: RunningServer) -> None:
    scopes: list[Scope] = []
    bodies: list[list[Message]] = []
    server.plug(echo(scopes, bodies))
    payload = bytes(range(256)) * 40
    with server.connect() as client:
        response = client.exchange(
            http_request("/upload", "POST", headers=["Content-Type: x/y"], body=payload)
        )

    assert response.status == 200
    assert response.body == b"POST /upload " + payload
    [scope] = scopes
    assert scope["method"] == "POST"
    assert (b"content-type", b"x/y") in scope["headers"]
    assert (b"content-length", b"10240") in scope["headers"]
    [messages] = bodies
    assert {m["type"] for m in messages} == {"http.request"}
    assert messages[-1].get("more_body", False) is False
    assert body_of(messages) == payload


def test_request_split_into_tiny_packets(server: RunningServer) -> None:
    bodies: list[list[Message]] = []
    server.plug(echo(None, bodies))
    request = http_request("/split?q=1", "POST", headers=["X-Long: " + "v" * 300], body=b"abcdef")
    with server.connect() as client:
        for offset in range(0, len(request), 7):
            client.send(request[offset : offset + 7])
            time.sleep(0.0005)  # one segment each, so the parser sees every cut
        response = client.read_response()

    assert response.body == b"POST /split abcdef"
    assert body_of(bodies[0]) == b"abcdef"


@uvicorn_breaks("RFC 9112 s5: OWS after a field value is not part of the value (it keeps it)")
def test_field_values_lose_surrounding_whitespace(server: RunningServer) -> None:
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        client.exchange(http_request(headers=["X-Pad: \t spaced  value \t ", "X-Empty:"]))

    headers = [tuple(h) for h in scopes[0]["headers"]]
    assert (b"x-pad", b"spaced  value") in headers
    assert (b"x-empty", b"") in headers


def test_root_path_is_set_and_prefixes_path(start_server: StartServer) -> None:
    scopes: list[Scope] = []
    server = start_server(echo(scopes), root_path="/mount")
    with server.connect() as client:
        response = client.exchange(http_request("/x%20y?q=1"))

    assert response.status == 200
    [scope] = scopes
    assert scope["root_path"] == "/mount"
    # The ASGI spec derives PATH_INFO "by stripping root_path from path", so path holds both.
    assert scope["path"] == "/mount/x y"
    # "Unmodified from the bytes received", but servers that re-add the prefix stripped by a
    # front proxy do so here as well: both readings are accepted.
    assert scope["raw_path"] in (b"/x%20y", b"/mount/x%20y")
    assert scope["query_string"] == b"q=1"


def test_receive_after_the_answer_returns_disconnect(server: RunningServer) -> None:
    after: list[Message] = []
    returned = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await answer(send, scope["path"].encode())
        if scope["path"] == "/first":
            after.append(await asyncio.wait_for(receive(), TIMEOUT))
            returned.set()

    server.plug(app)
    with server.connect() as client:
        first = client.exchange(http_request("/first"))
        # The connection stays open: the answer alone ends the request for the app.
        assert returned.wait(TIMEOUT), "receive() after the answer did not return"
        second = client.exchange(http_request("/second"))

    assert (first.body, second.body) == (b"/first", b"/second")
    assert [m["type"] for m in after] == ["http.disconnect"]


def test_asgi_dicts_handed_to_one_request_are_not_shared_with_the_next(
    server: RunningServer,
) -> None:
    seen: list[tuple[Message, Message]] = []
    both = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        asgi = dict(scope["asgi"])
        await receive_body(receive)
        await answer(send, b"ok")
        disconnect = await asyncio.wait_for(receive(), TIMEOUT)
        seen.append((asgi, dict(disconnect)))
        # The app owns what it was handed, and may change it.
        scope["asgi"]["changed"] = True
        disconnect["changed"] = True
        if len(seen) == 2:
            both.set()

    server.plug(app)
    with server.connect() as client:
        client.exchange(http_request("/first"))
        client.exchange(http_request("/second"))
    assert both.wait(TIMEOUT), "the apps never got their disconnect"

    [(_, first), (asgi, disconnect)] = seen
    assert first == disconnect == {"type": "http.disconnect"}
    assert "changed" not in asgi


@uvicorn_breaks("RFC 9110 s6.5.1: trailer fields are not merged into the header section")
def test_trailer_fields_stay_out_of_the_scope_headers(server: RunningServer) -> None:
    headers: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages = await receive_body(receive)
        # Read after the body: a late header here would pass for one the client sent first.
        headers.append([(bytes(name), bytes(value)) for name, value in scope["headers"]])
        await answer(send, body_of(messages))

    server.plug(app)
    with server.connect() as client:
        client.send(http_request("/t", "POST", headers=["Transfer-Encoding: chunked"]))
        response = client.exchange(b"3\r\nabc\r\n0\r\nAuthorization: Bearer forged\r\n\r\n")

    assert response.body == b"abc"
    [names] = [[name for name, _ in h] for h in headers]
    assert names == [b"host", b"transfer-encoding"]


# -- 2. keep-alive and pipelining -------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(server: RunningServer) -> None:
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        first = client.exchange(http_request("/a"))
        second = client.exchange(http_request("/b", "POST", body=b"payload"))
        third = client.exchange(http_request("/c", "DELETE"))
        local = client.address

    assert [r.body for r in (first, second, third)] == [
        b"GET /a ",
        b"POST /b payload",
        b"DELETE /c ",
    ]
    assert {tuple(s["client"]) for s in scopes} == {local}
    assert all(r.value(b"connection") != b"close" for r in (first, second, third))


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages = await receive_body(receive)
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)  # the later requests are ready first
        await answer(send, scope["path"].encode() + b" " + body_of(messages))

    server.plug(app)
    with server.connect() as client:
        client.send(
            http_request("/slow")
            + http_request("/post", "POST", body=b"in the middle")
            + http_request("/fast")
        )
        bodies = [client.read_response().body for _ in range(3)]

    assert bodies == [b"/slow ", b"/post in the middle", b"/fast "]


def test_connection_close_closes_after_the_answer(server: RunningServer) -> None:
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        # The pipelined second request must not be processed (RFC 9112 s9.6).
        client.send(http_request("/last", headers=["Connection: close"]) + http_request("/never"))
        response = client.read_response()
        client.assert_closed()

    assert response.body == b"GET /last "
    assert response.value(b"connection") == b"close"
    assert [s["path"] for s in scopes] == ["/last"]


def test_http10_without_keep_alive_closes_after_the_answer(server: RunningServer) -> None:
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        response = client.exchange(b"GET /old HTTP/1.0\r\n\r\n")
        client.assert_closed()

    assert response.status_line.startswith(b"HTTP/1.")
    assert response.status == 200
    assert response.body == b"GET /old "
    assert scopes[0]["http_version"] == "1.0"


@uvicorn_breaks(
    "memory: it queues every pipelined request it has read (about 20 bytes held per byte)"
)
def test_pipelined_flood_holds_bounded_memory(start_server: StartServer) -> None:
    app, entered, release = holding_app()

    # Its own server: requests the client gave up on must not reach other tests' apps.
    server = start_server(app)
    flood = http_request("/p") * 6000  # about 250 KiB: what one socket read may bring
    try:
        with server.connect() as client:
            client.send(http_request("/hold"))
            assert entered.wait(TIMEOUT), "the first request never reached the app"
            gc.collect()
            tracemalloc.start()
            try:
                client.send(flood)
                time.sleep(0.15)  # the server reads what it reads; the bound holds regardless
                held = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            release.set()
            first = client.read_response()
            second = client.read_response()
    finally:
        release.set()

    assert (first.body, second.body) == (b"ok", b"ok")
    assert held < 1 * MIB, f"{len(flood)} bytes of pipelined requests held {held} bytes"


# -- 3. request bodies ------------------------------------------------------------------------


def test_chunked_request_body_is_dechunked(server: RunningServer) -> None:
    bodies: list[list[Message]] = []
    scopes: list[Scope] = []
    server.plug(echo(scopes, bodies))
    with server.connect() as client:
        client.send(http_request("/chunked", "POST", headers=["Transfer-Encoding: chunked"]))
        for piece in (b"5\r\nhello\r\n", b"6;ext=1\r\n world\r\n", b"0\r\nX-Trailer: t\r\n\r\n"):
            time.sleep(0.002)
            client.send(piece)
        response = client.read_response()
        after = client.exchange(http_request("/after"))

    assert response.body == b"POST /chunked hello world"
    assert after.body == b"GET /after "
    assert body_of(bodies[0]) == b"hello world"
    assert bodies[0][-1].get("more_body", False) is False
    assert (b"transfer-encoding", b"chunked") in [tuple(h) for h in scopes[0]["headers"]]


def test_one_mib_body_sent_in_pieces_arrives_whole(server: RunningServer) -> None:
    bodies: list[list[Message]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages = await receive_body(receive)
        bodies.append(messages)
        await answer(send, hashlib.sha256(body_of(messages)).hexdigest().encode())

    server.plug(app)
    payload = big_payload()[:MIB]
    with server.connect() as client:
        client.send(http_request("/big", "POST", body=None, headers=[f"Content-Length: {MIB}"]))
        for offset in range(0, MIB, 64 * 1024):
            client.send(payload[offset : offset + 64 * 1024])
        response = client.read_response()

    assert response.body == hashlib.sha256(payload).hexdigest().encode()
    [messages] = bodies
    assert {m["type"] for m in messages} == {"http.request"}
    assert [m.get("more_body", False) for m in messages] == [True] * (len(messages) - 1) + [False]
    assert len(body_of(messages)) == MIB


def test_expect_100_continue_gets_an_interim_answer_before_the_body(
    server: RunningServer,
) -> None:
    bodies: list[list[Message]] = []
    server.plug(echo(None, bodies))
    with server.connect() as client:
        client.send(
            http_request("/ask", "POST", headers=["Expect: 100-continue", "Content-Length: 5"])
        )
        # The client holds the body back until the server asks for it.
        interim = client.read_response()
        client.send(b"hello")
        final = client.read_response()

    assert interim.status_line == b"HTTP/1.1 100 Continue"
    assert final.status == 200
    assert final.body == b"POST /ask hello"
    assert body_of(bodies[0]) == b"hello"


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
def test_answer_before_the_body_ends_says_whether_the_connection_stays(
    server: RunningServer, expect: bool
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/next":
            await answer(send, b"next")
            return
        if not expect:
            await receive()  # the first piece, not the rest
        await answer(send, b"too large", status=413)

    server.plug(app)
    size = 100_000
    head = http_request("/upload", "POST", headers=[f"Content-Length: {size}"])
    with server.connect() as client:
        if expect:
            client.send(head[:-2] + b"Expect: 100-continue\r\n\r\n")
            sent = 0
        else:
            client.send(head + b"x" * 1000)
            sent = 1000
        response = client.read_response()
        # RFC 9110 s10.1.1: an early final answer says whether the server closes, or keeps
        # reading the body; a client that is not told must send the body to reuse the connection.
        client.send(b"x" * (size - sent))
        if response.value(b"connection") == b"close":
            after = client.read_response_or_close()
        else:
            after = client.exchange(http_request("/next"))

    assert response.status == 413
    assert after is None or after.body == b"next"


@uvicorn_breaks("RFC 9110 s10.1.1: a server ignores 100-continue from HTTP/1.0 (it sends 100)")
def test_expect_100_continue_is_ignored_on_http10(server: RunningServer) -> None:
    asked = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pending = asyncio.ensure_future(receive_body(receive))
        await asyncio.sleep(0)  # the first receive() call has run: its 100 would be out
        asked.set()
        await answer(send, body_of(await pending))

    server.plug(app)
    with server.connect() as client:
        client.send(b"POST /old HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert asked.wait(TIMEOUT), "the app never asked for the body"
        client.send(b"hello")
        # An HTTP/1.0 client knows no interim answers: it takes the first it gets as final.
        response = client.read_response()

    assert response.status == 200
    assert response.body == b"hello"


def test_cancelled_receive_leaves_a_concurrent_receive_waiting(server: RunningServer) -> None:
    waiting = threading.Event()
    results: list[Message | BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kept = asyncio.ensure_future(receive())
        dropped = asyncio.ensure_future(receive())
        await asyncio.sleep(0)  # both wait for the body now
        dropped.cancel()
        waiting.set()
        try:
            results.append(await asyncio.wait_for(kept, TIMEOUT))
        except BaseException as error:  # recorded for the assertion below
            results.append(error)
        await answer(send, b"done")

    server.plug(app)
    with server.connect() as client:
        client.send(http_request("/two", "POST", headers=["Content-Length: 5"]))
        assert waiting.wait(TIMEOUT), "the app never started"
        client.send(b"hello")
        response = client.read_response()

    assert response.body == b"done"
    [result] = results
    assert isinstance(result, dict), f"the other receive() failed with {result!r}"
    assert (result["type"], result.get("body")) == ("http.request", b"hello")


@uvicorn_breaks("the app waits for a body it refused until the client has read everything")
def test_refused_body_ends_the_request_at_once_and_nothing_follows_the_400(
    server: RunningServer,
) -> None:
    payload = big_payload()[: 2 * MIB]
    got_first = threading.Event()
    told = threading.Event()
    late: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/big":
            await receive_body(receive)
            await answer(send, payload)  # more than the sockets hold: most of it waits
            return
        late.append(await receive())
        got_first.set()
        late.append(await receive())
        told.set()
        # An app that answers anyway: nothing of it may follow the server's 400.
        await answer(send, b"late")

    server.plug(app)
    with server.connect(receive_buffer=16384) as client:
        client.send(
            http_request("/big")
            + http_request("/bad", "POST", headers=["Transfer-Encoding: chunked"])
            + b"5\r\nhello\r\n"
        )
        assert got_first.wait(TIMEOUT), "the second request never reached the app"
        client.send(b"zz\r\n")  # not a chunk size
        told_at_once = told.wait(0.5)  # it is told at once; this only bounds a failure
        big = client.read_response()
        refused = client.read_response()
        client.assert_closed()

    assert told_at_once, "receive() did not return after the server refused the body"
    assert hashlib.sha256(big.body).digest() == hashlib.sha256(payload).digest()
    assert refused.status == 400
    assert [m["type"] for m in late] == ["http.request", "http.disconnect"]


# -- 4. responses -----------------------------------------------------------------------------


def test_content_length_answer_is_sent_as_is(server: RunningServer) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await start(send, 200, [(b"content-length", b"11")])
        await chunk(send, b"hello ", more=True)
        await chunk(send, b"world", more=False)

    server.plug(app)
    with server.connect() as client:
        response = client.exchange(http_request())
        after = client.exchange(http_request())

    assert response.value(b"content-length") == b"11"
    assert response.framing_used == "length"
    assert response.body == b"hello world"
    assert after.body == b"hello world"


def test_streamed_answer_without_length_is_chunked_on_http11(server: RunningServer) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await start(send, 200, [(b"content-type", b"text/plain")])
        for piece in (b"one ", b"", b"two ", b"three"):
            await chunk(send, piece, more=True)
        await chunk(send, b"", more=False)

    server.plug(app)
    with server.connect() as client:
        response = client.exchange(http_request())
        after = client.exchange(http_request())

    assert response.value(b"transfer-encoding") == b"chunked"
    assert response.body == b"one two three"
    assert after.body == b"one two three"


def test_single_body_without_length_is_framed_on_http11(server: RunningServer) -> None:
    # ASGI lets the server pick: a content-length or chunks, not a close-delimited body.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await start(send, 200, [(b"content-type", b"text/plain")])
        await chunk(send, b"whole", more=False)

    server.plug(app)
    with server.connect() as client:
        response = client.exchange(http_request())
        after = client.exchange(http_request())

    assert response.framing_used in ("length", "chunked")
    assert (response.body, after.body) == (b"whole", b"whole")


@uvicorn_breaks("RFC 9112 s6.1: no Transfer-Encoding to an HTTP/1.0 request (it sends chunks)")
def test_streamed_answer_without_length_is_close_delimited_on_http10(
    server: RunningServer,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await start(send, 200, [(b"content-type", b"text/plain")])
        await chunk(send, b"one ", more=True)
        await chunk(send, b"two", more=False)

    server.plug(app)
    with server.connect() as client:
        response = client.exchange(b"GET /old HTTP/1.0\r\n\r\n")

    assert response.values(b"transfer-encoding") == []
    assert response.framing_used == "close"
    assert response.body == b"one two"


def test_streamed_answer_reaches_the_client_incrementally(server: RunningServer) -> None:
    release = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await start(send, 200, [(b"content-type", b"text/event-stream")])
        await chunk(send, b"data: first\n\n", more=True)
        await wait_for(release)
        await chunk(send, b"data: second\n\n", more=False)

    server.plug(app)
    try:
        with server.connect() as client:
            client.send(http_request("/events"))
            head = client.read_head()
            assert head.framing("GET") == "chunked"
            # The app is held until the client has the first event: no buffering allowed.
            first = b""
            while len(first) < len(b"data: first\n\n"):
                first += client.read_chunk()
            release.set()
            rest = client.read_chunked()
    finally:
        release.set()

    assert first == b"data: first\n\n"
    assert rest == b"data: second\n\n"


@pytest.mark.parametrize("length", [True, False], ids=["with-length", "without-length"])
def test_head_gets_the_head_and_no_body(server: RunningServer, length: bool) -> None:
    methods: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        methods.append(scope["method"])
        await start(send, 200, [(b"content-length", b"11")] if length else [])
        await chunk(send, b"hello ", more=True)
        await chunk(send, b"world", more=False)

    server.plug(app)
    with server.connect() as client:
        head = client.exchange(http_request(method="HEAD"), "HEAD")
        # Any body byte after the HEAD answer would garble this one's status line.
        after = client.exchange(http_request())

    assert methods == ["HEAD", "GET"]
    assert head.status == 200
    assert head.value(b"content-length") == (b"11" if length else None)
    assert after.body == b"hello world"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_answers_carry_no_body_framing(server: RunningServer, status: int) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await start(send, status, [(b"etag", b'"v1"')])
        await chunk(send, b"", more=False)

    server.plug(app)
    with server.connect() as client:
        response = client.exchange(http_request())
        after = client.exchange(http_request())

    assert response.status == after.status == status
    assert response.value(b"etag") == b'"v1"'
    assert response.values(b"transfer-encoding") == []
    if status == 204:  # RFC 9110 s8.6: never a content-length on a 204
        assert response.values(b"content-length") == []


def test_answer_head_is_byte_exact_plus_date(server: RunningServer) -> None:
    sent = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"x-trace", b"a, b"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"2"),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await start(send, 201, sent)
        await chunk(send, b"ok", more=False)

    server.plug(app)
    with server.connect() as client:
        response = client.exchange(http_request())

    assert response.status_line == b"HTTP/1.1 201 Created"
    added = [(n, v) for n, v in response.headers if n in (b"date", SERVED_BY[0])]
    assert [h for h in response.headers if h not in added] == sent
    assert sorted(n for n, _ in added) == [b"date", SERVED_BY[0]]
    assert response.value(SERVED_BY[0]) == SERVED_BY[1]
    date = (response.value(b"date") or b"").decode()
    assert date.endswith(" GMT"), date
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 300
    assert response.body == b"ok"


def test_status_without_a_known_reason_keeps_the_separator(server: RunningServer) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await answer(send, b"odd", status=599)

    server.plug(app)
    with server.connect() as client:
        response = client.exchange(http_request())

    # status-line = HTTP-version SP status-code SP [ reason-phrase ]
    assert response.status_line.startswith(b"HTTP/1.1 599 ")
    assert response.body == b"odd"


# -- 5. errors --------------------------------------------------------------------------------

MALFORMED = {
    "garbage-request-line": b"NOT A REQUEST\r\n\r\n",
    "bad-method-token": b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
    "nul-in-target": b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
    "header-without-colon": b"GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    "control-char-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\n\r\n",
    "invalid-content-length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
    "conflicting-content-lengths": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"
    ),
    "chunked-not-last-coding": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    ),
    # Request smuggling: framing that two parsers could read two ways (RFC 9112 s2.2, s5.2,
    # s6.3). httptools refuses all of these; the tests keep it so.
    "obs-fold": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: t\n\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: t\rX-A: a\r\n\r\n",
    "length-list": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
    "chunked-twice": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked-then-length": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_gets_400_and_the_connection_closes(
    server: RunningServer, request_bytes: bytes
) -> None:
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        response = client.exchange(request_bytes)
        client.assert_closed()

    assert response.status == 400
    assert scopes == []


def test_malformed_request_after_a_good_one_on_the_same_connection(server: RunningServer) -> None:
    server.plug(echo())
    with server.connect() as client:
        good = client.exchange(http_request("/good"))
        bad = client.exchange(b"GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n")
        client.assert_closed()

    assert (good.status, bad.status) == (200, 400)


@uvicorn_breaks("RFC 9112 s3.2: 400 for a request with no Host or several (it answers)")
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    ],
    ids=["no-host", "two-hosts"],
)
def test_http11_request_needs_exactly_one_host(server: RunningServer, request_bytes: bytes) -> None:
    server.plug(echo())
    with server.connect() as client:
        response = client.exchange(request_bytes)

    assert response.status == 400
    assert b"Host" in response.body


UNSUPPORTED_VERSIONS = {
    "http09-bare": (b"GET /\r\n\r\n", b"HTTP/0.9"),
    "http09": (b"GET / HTTP/0.9\r\n\r\n", b"HTTP/0.9"),
    "http20": (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", b"HTTP/2.0"),
}


@uvicorn_breaks("RFC 9110 s15.6.6: 505 for an HTTP major version it does not serve (it answers)")
@pytest.mark.parametrize(
    ("request_bytes", "version"), UNSUPPORTED_VERSIONS.values(), ids=UNSUPPORTED_VERSIONS.keys()
)
def test_request_in_another_http_version_gets_505_and_the_connection_closes(
    server: RunningServer, request_bytes: bytes, version: bytes
) -> None:
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        response = client.exchange(request_bytes)
        client.assert_closed()

    assert response.status == 505
    assert response.value(b"connection") == b"close"
    # RFC 9110 s15.6.6: the answer says why, and what the server does support.
    assert version in response.body
    assert b"HTTP/1.1" in response.body
    assert scopes == []


UNKNOWN_CODINGS = {
    "gzip-then-chunked": (["Transfer-Encoding: gzip, chunked"], b"gzip"),
    "one-field-each": (["Transfer-Encoding: deflate", "Transfer-Encoding: chunked"], b"deflate"),
}


@uvicorn_breaks("RFC 9112 s6.1: 501 for a transfer coding it cannot decode (the app gets it coded)")
@pytest.mark.parametrize(
    ("headers", "coding"), UNKNOWN_CODINGS.values(), ids=UNKNOWN_CODINGS.keys()
)
def test_transfer_coding_other_than_chunked_gets_501_and_the_connection_closes(
    server: RunningServer, headers: list[str], coding: bytes
) -> None:
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        client.send(http_request("/coded", "POST", headers=headers) + b"3\r\nabc\r\n0\r\n\r\n")
        response = client.read_response()
        assert response.status == 501  # before waiting for a close that may never come
        client.assert_closed()

    assert response.value(b"connection") == b"close"
    assert coding in response.body
    assert b"chunked" in response.body  # the one coding the client may use instead
    assert scopes == []


@pytest.mark.parametrize("coding", ["CHUNKED", ", chunked"], ids=["upper-case", "empty-element"])
def test_chunked_coding_is_recognised_however_it_is_spelled(
    server: RunningServer, coding: str
) -> None:
    # Codings are case-insensitive, and a list may hold empty elements (RFC 9110 s5.6.1).
    server.plug(echo())
    with server.connect() as client:
        client.send(http_request("/c", "POST", headers=[f"Transfer-Encoding: {coding}"]))
        response = client.exchange(b"3\r\nabc\r\n0\r\n\r\n")
        after = client.exchange(http_request("/after"))

    assert (response.body, after.body) == (b"POST /c abc", b"GET /after ")


def test_bad_chunk_size_never_completes_the_body(server: RunningServer) -> None:
    bodies: list[list[Message]] = []
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        bodies.append(await receive_body(receive))
        done.set()
        if bodies[-1][-1]["type"] == "http.request":
            await answer(send, b"should not happen")

    server.plug(app)
    with server.connect() as client:
        client.send(http_request("/", "POST", headers=["Transfer-Encoding: chunked"]))
        client.send(b"zz\r\nhello\r\n0\r\n\r\n")
        response = client.read_response()
        client.assert_closed()

    assert response.status == 400
    assert done.wait(TIMEOUT), "receive() never returned"
    # The app must not mistake a broken body for a complete one.
    assert bodies[0][-1]["type"] == "http.disconnect"


def test_content_length_with_chunked_closes_after_the_answer(server: RunningServer) -> None:
    # RFC 9112 s6.1: reject, or obey Transfer-Encoding alone; close the connection either way.
    server.plug(echo())
    with server.connect() as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        response = client.read_response()
        client.assert_closed()

    assert response.status == 400 or response.body == b"POST / abc"


def test_transfer_encoding_on_http10_closes_after_the_answer(server: RunningServer) -> None:
    # RFC 9112 s6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the
    # server closes after it, so nothing pipelined behind it is read as a request.
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        client.send(
            b"POST /old HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n" + http_request("/smuggled")
        )
        response = client.read_response()
        client.assert_closed()

    assert response.status == 400 or response.body == b"POST /old abc"
    assert [s["path"] for s in scopes] in ([], ["/old"])


def app_failing(when: str) -> App:
    """An app that raises before answering, after starting, after answering half, or that
    returns without (finishing) its answer."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        if scope["path"] == "/fine":
            await answer(send, b"fine")
        elif when == "before-start":
            raise RuntimeError("the app failed before answering")
        elif when == "raising-after-start":
            await start(send, 200, [(b"content-type", b"text/plain")])
            raise RuntimeError("the app failed after starting its answer")
        elif when == "silent-after-start":
            await start(send, 200, [(b"content-type", b"text/plain")])
        elif when == "body-past-its-length":
            await start(send, 200, [(b"content-length", b"2")])
            await chunk(send, b"too long", more=False)  # the server refuses it by raising
        elif when == "after-start-length":
            await start(send, 200, [(b"content-length", b"10")])
            await chunk(send, b"part", more=True)
            raise RuntimeError("the app failed half-way")
        elif when == "after-start-chunked":
            await start(send, 200, [])
            await chunk(send, b"part", more=True)
            raise RuntimeError("the app failed half-way")
        # "silent": returns without answering

    return app


@pytest.mark.parametrize("when", ["before-start", "silent"])
def test_app_failing_before_the_answer_gives_500(server: RunningServer, when: str) -> None:
    server.plug(app_failing(when))
    with server.connect() as client:
        response = client.exchange(http_request("/fail"))
    with server.connect() as other:
        fine = other.exchange(http_request("/fine"))

    assert response.status == 500
    assert fine.body == b"fine"


@uvicorn_breaks("ASGI: 500 when the app fails before a byte is written (it writes the head early)")
@pytest.mark.parametrize(
    "when", ["raising-after-start", "silent-after-start", "body-past-its-length"]
)
def test_app_failing_after_the_start_but_before_a_byte_was_written_gives_500(
    server: RunningServer, when: str
) -> None:
    server.plug(app_failing(when))
    with server.connect() as client:
        response = client.exchange(http_request("/fail"))
        client.assert_closed()
    with server.connect() as other:
        fine = other.exchange(http_request("/fine"))

    assert response.status == 500
    assert response.value(b"connection") == b"close"
    assert response.body == b"Internal Server Error"
    assert fine.body == b"fine"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_app_failing_after_the_start_truncates_and_closes(
    server: RunningServer, framing: str
) -> None:
    server.plug(app_failing(f"after-start-{framing}"))
    with server.connect() as client:
        client.send(http_request("/fail"))
        head = client.read_head()
        rest = client.read_to_eof()
    with server.connect() as other:
        fine = other.exchange(http_request("/fine"))

    assert head.status == 200
    assert head.framing("GET") == framing
    # What arrived is a strict prefix of a body, never a complete one.
    assert (b"part" if framing == "length" else b"4\r\npart\r\n").startswith(rest)
    assert fine.body == b"fine"


def app_overrunning(*pieces: bytes) -> App:
    """An app declaring a 5-byte body and sending ``pieces`` (``/next``: a normal answer)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        if scope["path"] == "/next":
            await answer(send, b"next")
            return
        await start(send, 200, [(b"content-length", b"5")])
        # The server may refuse the excess by raising: the app carries on regardless.
        with contextlib.suppress(Exception):
            for index, piece in enumerate(pieces):
                await chunk(send, piece, more=index < len(pieces) - 1)

    return app


def test_body_past_its_content_length_is_not_sent(server: RunningServer) -> None:
    server.plug(app_overrunning(b"hello", b" world"))
    with server.connect() as client:
        client.send(http_request("/long"))
        head = client.read_head()
        # The first event was valid, and send() flushes it.
        body = client.read_exact(5)
        # Whatever follows the declared length is either nothing or the next answer.
        client.send(http_request("/next"))
        after = client.read_response_or_close()

    assert head.value(b"content-length") == b"5"
    assert body == b"hello"
    assert after is None or after.body == b"next"


def test_single_body_event_past_its_content_length_is_not_sent(server: RunningServer) -> None:
    server.plug(app_overrunning(b"hello world"))
    with server.connect() as client:
        client.send(http_request("/long"))
        # Nothing is on the wire yet, so the server may also close, or answer 500 instead.
        answered = not client.closes_before_more()
        head = client.read_head() if answered else None
        body = b""
        if head is not None and head.status == 200:
            body = client.read_at_most(5)
        elif head is not None:
            body = client.read_body(head).body
        client.send(http_request("/next"))
        after = client.read_response_or_close()

    if head is not None and head.status == 200:
        assert head.value(b"content-length") == b"5"
        assert b"hello".startswith(body)
    elif head is not None:
        assert head.status == 500
    assert after is None or after.body == b"next"


OVERSIZED = {
    "head": (http_request("/big", headers=["X-Big: "])[:-4], b"\r\n\r\n"),
    "trailers": (
        http_request("/big", "POST", headers=["Transfer-Encoding: chunked"]) + b"3\r\nabc\r\n0\r\n"
        b"X-Big: ",
        b"\r\n\r\n",
    ),
}


@uvicorn_breaks("memory: it takes a request head or trailer section of any size")
@pytest.mark.parametrize("part", OVERSIZED.keys())
def test_oversized_head_or_trailers_are_refused(server: RunningServer, part: str) -> None:
    bodies: list[list[Message]] = []
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        bodies.append(await receive_body(receive))
        done.set()
        await answer(send, b"accepted")

    server.plug(app)
    start_bytes, end_bytes = OVERSIZED[part]
    with server.connect() as client:
        client.send(start_bytes)
        for _ in range(32):  # 2 MiB of one field value
            if not client.send(b"v" * 65536):
                break
        client.send(end_bytes)
        response = client.read_response_or_close()

    assert response is not None, "the server closed without answering"
    assert response.status == 431
    if part == "trailers":
        assert done.wait(TIMEOUT), "receive() never returned"
        assert bodies[0][-1]["type"] == "http.disconnect"
    else:
        assert bodies == []


def app_sending_headers(headers: Sequence[tuple[bytes, bytes]]) -> App:
    """An app answering with ``headers`` (the server may refuse them by raising)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        if scope["path"] == "/next":
            await answer(send, b"next")
            return
        await start(send, 200, headers)
        await chunk(send, b"ok", more=False)

    return app


UNSAFE_HEADERS = {
    "nul-in-value": [(b"x-note", b"a\x00b")],
    "space-in-name": [(b"content-length ", b"2")],
    "colon-in-name": [(b"x-a:b", b"c")],
    "empty-name": [(b"", b"c")],
    "signed-length": [(b"content-length", b"+2")],
    "two-lengths": [(b"content-length", b"2"), (b"content-length", b"2")],
}


@uvicorn_breaks("ASGI: 500 when the app fails before the answer starts (it closes, or sends)")
@pytest.mark.parametrize("headers", UNSAFE_HEADERS.values(), ids=UNSAFE_HEADERS.keys())
def test_app_header_that_is_not_a_valid_field_gives_500(
    server: RunningServer, headers: list[tuple[bytes, bytes]]
) -> None:
    server.plug(app_sending_headers(headers))
    with server.connect() as client:
        response = client.exchange(http_request("/bad"))
    with server.connect() as other:
        after = other.exchange(http_request("/next"))

    # Nothing of the app's answer went out: the field never reached the wire.
    assert response.status == 500
    assert after.body == b"next"


# -- 6. disconnects ---------------------------------------------------------------------------


def test_client_closing_while_app_awaits_receive_gives_disconnect(server: RunningServer) -> None:
    body_read = threading.Event()
    done = threading.Event()
    later: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        body_read.set()
        later.append(await asyncio.wait_for(receive(), TIMEOUT))
        done.set()

    server.plug(app)
    with server.connect() as client:
        client.send(http_request("/wait", "POST", body=b"payload"))
        assert body_read.wait(TIMEOUT), "the app never got the body"
    assert done.wait(TIMEOUT), "receive() did not return after the client left"
    assert [m["type"] for m in later] == ["http.disconnect"]


def test_client_leaving_mid_upload_gives_disconnect(server: RunningServer) -> None:
    started = threading.Event()
    done = threading.Event()
    bodies: list[list[Message]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        bodies.append(await asyncio.wait_for(receive_body(receive), TIMEOUT))
        done.set()

    server.plug(app)
    with server.connect() as client:
        client.send(http_request("/upload", "POST", headers=["Content-Length: 1000"]) + b"x" * 10)
        assert started.wait(TIMEOUT), "the app never started"
    assert done.wait(TIMEOUT), "receive() did not return after the client left"
    [messages] = bodies
    assert messages[-1]["type"] == "http.disconnect"
    assert all(m.get("more_body", False) for m in messages[:-1])
    with server.plug(echo()).connect() as other:
        assert other.exchange(http_request("/next")).body == b"GET /next "


def test_client_leaving_mid_answer_does_not_break_the_server(server: RunningServer) -> None:
    done = threading.Event()
    after: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        if scope["path"] == "/next":
            await answer(send, b"next")
            return
        await start(send, 200, [(b"content-length", str(16 * MIB).encode())])
        # ASGI 2.4: send() on a closed connection may raise an OSError; it must not hang.
        with contextlib.suppress(OSError):
            for _ in range(256):
                await chunk(send, b"z" * 65536, more=True)
        after.append(await asyncio.wait_for(receive(), TIMEOUT))
        done.set()

    server.plug(app)
    with server.connect(receive_buffer=16384) as client:
        client.send(http_request("/huge"))
        assert client.read_head().status == 200
    assert done.wait(TIMEOUT), "the app's send() hung after the client left"
    assert [m["type"] for m in after] == ["http.disconnect"]
    with server.connect() as other:
        assert other.exchange(http_request("/next")).body == b"next"


def test_client_leaving_mid_request_head_does_not_break_the_server(
    server: RunningServer,
) -> None:
    scopes: list[Scope] = []
    server.plug(echo(scopes))
    with server.connect() as client:
        client.send(b"GET /half HTTP/1.1\r\nHost: conformance.te")
    with server.connect() as other:
        response = other.exchange(http_request("/next"))

    assert response.body == b"GET /next "
    assert [s["path"] for s in scopes] == ["/next"]


def test_closed_connection_leaves_no_reference_cycle(server: RunningServer) -> None:
    # A cycle keeps a connection's buffers until the cyclic collector runs, which may be late.
    started = threading.Event()
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the first piece of a body that never ends
        started.set()
        await receive()  # the disconnect
        done.set()

    server.plug(app)
    gc.collect()
    gc.disable()
    try:
        with server.connect() as client:
            client.send(http_request("/", "POST", headers=["Content-Length: 100000"]) + b"x")
            assert started.wait(TIMEOUT), "the request never reached the app"
            [protocol] = [
                weakref.ref(connection)
                for connection in list(server.uvicorn.server_state.connections)
                if getattr(connection, "client", None) == client.address
            ]
        assert done.wait(TIMEOUT), "the app never saw the disconnect"
        deadline = time.monotonic() + TIMEOUT
        while protocol() is not None and time.monotonic() < deadline:
            time.sleep(0.005)
        alive = protocol() is not None
    finally:
        gc.enable()

    assert not alive, "the connection's protocol outlived it, waiting for the cyclic collector"


# -- 7. flow control --------------------------------------------------------------------------


def test_slow_reader_gets_8_mib_complete_and_intact(server: RunningServer) -> None:
    payload = big_payload()
    handed: list[int] = [0]
    finished = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        await start(send, 200, [(b"content-length", str(len(payload)).encode())])
        for offset in range(0, len(payload), 64 * 1024):
            await chunk(send, payload[offset : offset + 64 * 1024], more=True)
            handed[0] = offset + 64 * 1024
        await chunk(send, b"", more=False)
        finished.set()

    server.plug(app)
    with server.connect(receive_buffer=16384) as client:
        client.send(http_request("/big"))
        head = client.read_head()
        time.sleep(0.3)
        # A client that reads nothing must hold the app back, not fill the server's memory.
        held_back = not finished.is_set()
        progress = handed[0]
        parts = []
        for _ in range(8):
            parts.append(client.read_exact(MIB))
            time.sleep(0.02)
        body = b"".join(parts)
        after = client.exchange(http_request("/big"))

    assert held_back, f"the app sent all 8 MiB to a client that read nothing ({progress} bytes)"
    assert head.value(b"content-length") == str(len(payload)).encode()
    assert len(body) == len(payload)
    assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
    assert hashlib.sha256(after.body).digest() == hashlib.sha256(payload).digest()


# -- 8. keep-alive timeout --------------------------------------------------------------------


def test_idle_connection_closes_after_the_keep_alive_timeout(start_server: StartServer) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        if scope["path"] == "/slow":
            await asyncio.sleep(1.2)  # longer than the timeout: a busy connection is not idle
        await answer(send, scope["path"].encode())

    server = start_server(app, timeout_keep_alive=1)
    with server.connect(timeout=4.0) as busy, server.connect(timeout=4.0) as idle:
        busy.send(http_request("/slow"))
        first = idle.exchange(http_request("/first"))
        time.sleep(0.3)
        again = idle.exchange(http_request("/again"))
        idle.assert_closed()
        slow = busy.read_response()

    assert (first.body, again.body, slow.body) == (b"/first", b"/again", b"/slow")


@uvicorn_breaks("slowloris: the first byte of a request head stops its idle clock for good")
def test_request_head_trickling_in_is_cut_by_the_keep_alive_timeout(
    start_server: StartServer,
) -> None:
    scopes: list[Scope] = []
    server = start_server(echo(scopes), timeout_keep_alive=0.1)
    request = http_request("/slow")
    with server.connect() as client:
        # A byte every 0.05 s: each comes within the timeout, the head never does.
        for index in range(6):
            client.send(request[index : index + 1])
            time.sleep(0.05)
        client.send(request[6:])
        response = client.read_response_or_close()

    assert response is None
    assert scopes == []


# -- 9. uvicorn's bookkeeping: graceful shutdown, request limit --------------------------------


def test_graceful_shutdown_finishes_in_flight_and_closes_idle(start_server: StartServer) -> None:
    entered = threading.Event()
    release = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive_body(receive)
        if scope["path"] == "/slow":
            entered.set()
            await wait_for(release, 5.0)
        await answer(send, scope["path"].encode() + b" done")

    server = start_server(app, timeout_graceful_shutdown=5)
    try:
        with server.connect() as idle, server.connect() as busy:
            assert idle.exchange(http_request("/quick")).body == b"/quick done"
            busy.send(http_request("/slow"))
            assert entered.wait(TIMEOUT), "the slow request never reached the app"
            server.begin_shutdown()
            idle.assert_closed()
            release.set()
            response = busy.read_response()
            busy.assert_closed()
    finally:
        release.set()

    assert response.status == 200
    assert response.body == b"/slow done"
    assert server.stopped(), "the server did not stop"


def test_request_count_drives_uvicorns_request_limit(start_server: StartServer) -> None:
    server = start_server(echo(), limit_max_requests=2)
    with server.connect() as client:
        client.exchange(http_request("/1"))
        client.exchange(http_request("/2"))
        assert server.stopped(), "the server ignored limit_max_requests"
        client.assert_closed()


def test_graceful_shutdown_lets_an_upload_in_progress_finish(start_server: StartServer) -> None:
    payload = big_payload()[:MIB]
    entered = threading.Event()
    release = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages = [await receive()]
        entered.set()
        await wait_for(release, 5.0)  # the server buffers, then stops reading
        messages += await receive_body(receive)
        await answer(send, hashlib.sha256(body_of(messages)).hexdigest().encode())

    server = start_server(app, timeout_graceful_shutdown=3)
    head = http_request("/up", "POST", headers=[f"Content-Length: {len(payload)}"])
    try:
        with server.connect() as idle, server.connect() as busy:
            busy.send(head + payload[: 256 * 1024])
            assert entered.wait(TIMEOUT), "the upload never reached the app"
            server.begin_shutdown()
            idle.assert_closed()  # uvicorn has told every connection
            release.set()
            sender = threading.Thread(target=busy.send, args=(payload[256 * 1024 :],))
            sender.start()
            response = busy.read_response()
            sender.join(TIMEOUT)
            busy.assert_closed()
    finally:
        release.set()

    assert response.body == hashlib.sha256(payload).hexdigest().encode()
    assert response.value(b"connection") == b"close"
    assert server.stopped(), "the server did not stop"


def test_request_limit_refuses_pipelined_requests_with_one_answer(
    start_server: StartServer,
) -> None:
    app, entered, release = holding_app()

    # The limit counts open connections as well as running requests: three are too many.
    server = start_server(app, limit_concurrency=2)
    try:
        with server.connect() as holder, contextlib.ExitStack() as later:
            holder.send(http_request("/hold"))
            assert entered.wait(TIMEOUT), "the first request never reached the app"
            later.enter_context(server.connect())
            client = later.enter_context(server.connect())
            client.send(http_request("/a") + http_request("/b"))
            refused = client.read_response()
            after = client.read_to_eof()
            release.set()
            held = holder.read_response()
    finally:
        release.set()

    assert refused.status == 503
    assert refused.value(b"connection") == b"close"
    assert after == b"", f"more after an answer that closes the connection: {after[:200]!r}"
    assert held.body == b"ok"


# -- 10. closing with request bytes unread ----------------------------------------------------


def test_early_answer_survives_a_client_still_sending_its_body(server: RunningServer) -> None:
    # A server that closes while request bytes keep coming makes its kernel reset the
    # connection, and the reset drops whatever of the answer the client has not read yet.
    refusal = b"".join(b"%06d request body too large\n" % line for line in range(6000))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await answer(send, refusal, status=413)  # without reading the body

    server.plug(app)
    head = http_request("/upload", "POST", headers=[f"Content-Length: {64 * MIB}"])
    with server.connect(receive_buffer=16384) as client:
        client.send(head + b"x" * 65536)
        answer_head = client.read_head()
        # Most of the answer still waits in the server's socket, and the client goes on with
        # its body before it reads further; paced, so that some of it comes after the server
        # is done with the answer (it runs in another thread).
        for _ in range(8):
            time.sleep(0.02)
            if not client.send(b"x" * 32768):
                break
        body = client.read_exact(len(refusal))

    assert answer_head.status == 413
    assert body == refusal


def answer_refused(client: Client) -> Response:
    """Send a malformed request; the 400 that answers it, read to the server's close."""
    response = client.exchange(b"NOT A REQUEST\r\n\r\n")
    client.assert_closed()
    return response


def test_lingering_after_a_refusal_reads_a_bounded_amount(server: RunningServer) -> None:
    with server.connect() as client:
        response = answer_refused(client)
        sent = 0
        while sent < 32 * MIB and client.send(b"x" * 65536):
            sent += 65536

    assert response.status == 400
    assert sent < 32 * MIB, "the server kept reading whatever came after its refusal"


def test_lingering_after_a_refusal_ends_in_bounded_time(server: RunningServer) -> None:
    with server.connect() as client:
        response = answer_refused(client)
        # Each byte is read and dropped while the server lingers; once it has closed, a byte
        # is met with a reset, and the send after it fails.
        deadline = time.monotonic() + 5.0
        while client.send(b"x") and time.monotonic() < deadline:
            time.sleep(0.05)
        gone = not client.send(b"x")

    assert response.status == 400
    assert gone, "the server still held the connection 5 s after its refusal"
