"""The async HTTP/1.1 client under the async dispatcher, against scripted servers on 127.0.0.1.

A scripted server answers each request on a connection with the next of its canned byte
strings, so the tests can send what real servers send rarely: chunked and close-delimited
bodies, interim 1xx answers, gzip, a connection closed at the worst moment, garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import re
import shutil
import socket
import ssl
import subprocess
import threading
import weakref
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from promptdock.dispatch import _async_http
from promptdock.dispatch._async_http import (
    PAUSE_BYTES,
    CannotConnect,
    ConnectionPool,
    ConnectTimeout,
    InvalidURL,
    ProtocolError,
    ReadTimeout,
    Response,
    ServerHungUp,
)
from tests.support.openai_server import OpenAIServer

T = TypeVar("T")

BODY = b'{"ok": true}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
CLOSE = b""  # in a script: close the connection instead of answering


class LoopbackServer:
    """A listening socket on 127.0.0.1 whose connections a thread accepts and hands to
    :meth:`_handle`; :attr:`connections` counts them."""

    def __init__(self, sock: socket.socket) -> None:
        self.connections = 0
        self._sock = sock
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)


class ScriptedServer(LoopbackServer):
    """Answers the n-th request of each connection with ``script[n]`` (bytes), or closes the
    connection at a ``CLOSE`` entry; requests are recorded.

    :param script: the answers, per request on one connection.
    :param close_after: close each connection after this many answers.
    :param delay: seconds to wait before each answer.
    """

    def __init__(
        self, script: Sequence[bytes], close_after: int | None = None, delay: float = 0.0
    ) -> None:
        self.script = list(script)
        self.close_after = close_after
        self.delay = delay
        self.requests: list[bytes] = []
        super().__init__(socket.create_server(("127.0.0.1", 0)))

    def _handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        # A client that drops a connection part way may reset it: that ends this one only.
        with conn, contextlib.suppress(ConnectionError):
            buffer = b""
            for index in range(len(self.script)):
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                if self.delay:
                    self._stop.wait(self.delay)
                answer = self.script[index]
                if answer == CLOSE:
                    return
                conn.sendall(answer)
                if self.close_after is not None and index + 1 >= self.close_after:
                    return


@pytest.fixture
def serve() -> Iterator[list[ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.close()


def _server(servers: list[ScriptedServer], *script: bytes, **options: Any) -> ScriptedServer:
    server = ScriptedServer(script, **options)
    servers.append(server)
    return server


async def _post(
    pool: ConnectionPool, url: str, body: bytes = b"{}", read_timeout: float = 5.0
) -> Response:
    return await pool.post(
        url,
        body,
        {"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
        connect_timeout=5.0,
        read_timeout=read_timeout,
    )


async def _fetch(pool: ConnectionPool, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await _post(pool, url, body)
    try:
        data = await response.read()
    except BaseException:
        response.close()
        raise
    response.release()
    return response.status, data


def _run_pool(use: Callable[[ConnectionPool], Awaitable[T]], **options: Any) -> T:
    """``use(pool)`` on a new pool, in a new event loop; the pool is closed after."""

    async def main() -> T:
        pool = ConnectionPool(user_agent="promptdock-test", **options)
        try:
            return await use(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


# -- requests ----------------------------------------------------------------------------------


def test_a_post_is_sent_with_its_headers_and_body(serve: list[ScriptedServer]) -> None:
    server = _server(serve, OK)

    status, body = _run_pool(lambda pool: _fetch(pool, server.url + "?x=1", b'{"a": 1}'))

    assert (status, body) == (200, BODY)
    (request,) = server.requests
    head, _, sent = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Authorization: Bearer sk-test" in lines
    assert b"User-Agent: promptdock-test" in lines
    assert b"Content-Length: 8" in lines
    assert sent == b'{"a": 1}'


def test_a_large_body_is_sent_whole(serve: list[ScriptedServer]) -> None:
    server = _server(serve, OK)
    body = b"x" * (3 << 20)

    status, _ = _run_pool(lambda pool: _fetch(pool, server.url, body))

    assert status == 200
    assert server.requests[0].endswith(body)


def test_userinfo_in_the_url_becomes_basic_auth_unless_a_key_is_sent(
    serve: list[ScriptedServer],
) -> None:
    server = _server(serve, OK, OK)
    url = server.url.replace("http://", "http://user:p%40ss@")

    async def both(pool: ConnectionPool) -> None:
        response = await pool.post(url, b"{}", {}, connect_timeout=5, read_timeout=5)
        await response.read()
        response.release()
        await _fetch(pool, url)

    _run_pool(both)

    assert b"Authorization: Basic dXNlcjpwQHNz" in server.requests[0]  # user:p@ss
    assert b"Authorization: Bearer sk-test" in server.requests[1]
    assert b"Basic" not in server.requests[1]


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"X-Evil": "a\r\nInjected: yes"}, "holds a line break"),
        ({"Bad Name": "v"}, "invalid header name"),
    ],
)
def test_headers_that_would_break_the_request_are_refused(
    serve: list[ScriptedServer], headers: dict[str, str], problem: str
) -> None:
    server = _server(serve, OK)

    async def call(pool: ConnectionPool) -> None:
        await pool.post(server.url, b"{}", headers, connect_timeout=5, read_timeout=5)

    with pytest.raises(ValueError, match=problem):
        _run_pool(call)
    assert server.requests == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://127.0.0.1/v1", "scheme must be http or https"),
        ("http:///v1", "no host name"),
        ("http://127.0.0.1:99999/v1", "out of range"),
    ],
)
def test_unusable_urls(url: str, problem: str) -> None:
    with pytest.raises(InvalidURL, match=problem):
        _run_pool(lambda pool: _fetch(pool, url))


# -- answers -----------------------------------------------------------------------------------


def test_a_chunked_answer_is_reassembled(serve: list[ScriptedServer]) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    server = _server(serve, answer, OK)

    async def twice(pool: ConnectionPool) -> list[tuple[int, bytes]]:
        return [await _fetch(pool, server.url), await _fetch(pool, server.url)]

    assert _run_pool(twice) == [(200, b"hello world"), (200, BODY)]
    assert server.connections == 1  # the chunked answer left the connection reusable


def test_an_answer_ended_by_closing_the_connection(serve: list[ScriptedServer]) -> None:
    server = _server(serve, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY)
    server.close_after = 1

    assert _run_pool(lambda pool: _fetch(pool, server.url)) == (200, BODY)


def test_interim_answers_are_skipped(serve: list[ScriptedServer]) -> None:
    server = _server(serve, b"HTTP/1.1 100 Continue\r\n\r\n" + OK)

    assert _run_pool(lambda pool: _fetch(pool, server.url)) == (200, BODY)


def test_gzip_answers_are_decoded(serve: list[ScriptedServer]) -> None:
    packed = gzip.compress(BODY * 100)
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
        len(packed),
        packed,
    )
    server = _server(serve, answer)

    assert _run_pool(lambda pool: _fetch(pool, server.url)) == (200, BODY * 100)
    assert b"Accept-Encoding: gzip, deflate" in server.requests[0]


def test_headers_are_case_insensitive_and_repeats_joined(serve: list[ScriptedServer]) -> None:
    answer = (
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 2\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n"
    )
    server = _server(serve, answer)

    async def call(pool: ConnectionPool) -> Response:
        response = await _post(pool, server.url)
        response.release()
        return response

    response = _run_pool(call)

    assert isinstance(response, Response)
    assert response.status == 429
    assert response.headers.get("retry-after") == response.headers["Retry-After"] == "2"
    assert response.headers.get("X-A") == "1, 2"
    assert "RETRY-AFTER" in response.headers


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", ProtocolError, "not valid HTTP/1.1"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nxx",
            ProtocolError,
            "content-encoding 'br'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
            ProtocolError,
            "compressed body is corrupt",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            ProtocolError,
            "headers exceed",
        ),
    ],
)
def test_broken_answers_raise(
    serve: list[ScriptedServer], answer: bytes, error: type[Exception], text: str
) -> None:
    server = _server(serve, answer)
    server.close_after = 1

    with pytest.raises(error, match=text):
        _run_pool(lambda pool: _fetch(pool, server.url))


def test_a_body_cut_short_raises(serve: list[ScriptedServer]) -> None:
    server = _server(serve, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    server.close_after = 1

    with pytest.raises(ServerHungUp, match="mid-answer"):
        _run_pool(lambda pool: _fetch(pool, server.url))


def test_a_server_that_hangs_up_without_answering(serve: list[ScriptedServer]) -> None:
    server = _server(serve, CLOSE)

    with pytest.raises(ServerHungUp, match="before answering"):
        _run_pool(lambda pool: _fetch(pool, server.url))


def test_silence_longer_than_the_read_timeout(serve: list[ScriptedServer]) -> None:
    server = _server(serve, OK, delay=1.0)

    async def call(pool: ConnectionPool) -> None:
        await _post(pool, server.url, read_timeout=0.2)

    with pytest.raises(ReadTimeout, match=r"no data for 0\.2 s"):
        _run_pool(call)


def test_unreachable_and_unconnectable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed

    with pytest.raises(CannotConnect) as caught:
        _run_pool(lambda pool: _fetch(pool, f"http://127.0.0.1:{port}/v1"))
    assert isinstance(caught.value.os_error, ConnectionRefusedError)


def test_connect_timeout() -> None:
    # A listening socket whose backlog is full: the next connection waits for an accept
    # that never comes, on every platform's loopback.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)

        async def call(pool: ConnectionPool) -> None:
            await pool.post(
                f"http://127.0.0.1:{port}/v1", b"{}", {}, connect_timeout=0.2, read_timeout=1
            )

        try:
            with pytest.raises((ConnectTimeout, ReadTimeout)):
                _run_pool(call)
        finally:
            for filler in fillers:
                filler.close()


# -- the pool ----------------------------------------------------------------------------------


def test_a_connection_closed_while_idle_is_replaced_without_an_error(
    serve: list[ScriptedServer],
) -> None:
    server = _server(serve, OK, CLOSE)  # answers once, then hangs up on the next request

    async def twice(pool: ConnectionPool) -> list[tuple[int, bytes]]:
        return [await _fetch(pool, server.url), await _fetch(pool, server.url)]

    # The second request found its reused connection dropped before any answer: it was
    # sent again on a new connection (whose first answer is OK).
    assert _run_pool(twice) == [(200, BODY), (200, BODY)]
    assert server.connections == 2


def test_a_fresh_connection_that_hangs_up_is_not_retried(serve: list[ScriptedServer]) -> None:
    server = _server(serve, CLOSE)

    with pytest.raises(ServerHungUp):
        _run_pool(lambda pool: _fetch(pool, server.url))
    assert server.connections == 1


def test_connections_per_host_are_limited_and_shared(serve: list[ScriptedServer]) -> None:
    server = _server(serve, *[OK] * 20, delay=0.02)

    async def many(pool: ConnectionPool) -> list[tuple[int, bytes]]:
        return await asyncio.gather(*[_fetch(pool, server.url) for _ in range(10)])

    results = _run_pool(many, limit_per_host=2)

    assert results == [(200, BODY)] * 10
    assert server.connections == 2


def test_idle_connections_expire(serve: list[ScriptedServer]) -> None:
    server = _server(serve, OK, OK)

    async def apart(pool: ConnectionPool) -> None:
        await _fetch(pool, server.url)
        await asyncio.sleep(0.15)
        await _fetch(pool, server.url)

    _run_pool(apart, idle_seconds=0.1)

    assert server.connections == 2


def test_an_abandoned_answer_closes_its_connection(serve: list[ScriptedServer]) -> None:
    big = b"x" * 100_000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    server = _server(serve, answer, OK)

    async def abandon_then_call(pool: ConnectionPool) -> tuple[int, bytes]:
        response = await _post(pool, server.url)
        assert await response.read_some()
        response.close()  # the rest of the body is never read
        return await _fetch(pool, server.url)

    # Not the OK the abandoned connection would give next: a new connection's first answer.
    assert _run_pool(abandon_then_call) == (200, big)
    assert server.connections == 2


def test_a_slow_reader_pauses_the_socket_without_timing_out(serve: list[ScriptedServer]) -> None:
    size = 3 << 20
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size
    server = _server(serve, answer)

    async def slowly(pool: ConnectionPool) -> int:
        response = await _post(pool, server.url, read_timeout=0.3)
        await asyncio.sleep(0.6)  # longer than the read timeout, with the buffer full
        total = 0
        while chunk := await response.read_some():
            total += len(chunk)
        response.release()
        return total

    assert _run_pool(slowly) == size


def test_a_closed_pool_refuses_requests() -> None:
    async def closed() -> None:
        pool = ConnectionPool(user_agent="t")
        await pool.close()
        await pool.post("http://127.0.0.1:9/", b"", {}, connect_timeout=1, read_timeout=1)

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(closed())


# -- TLS ---------------------------------------------------------------------------------------


def test_https_against_a_plain_http_server_fails_the_handshake() -> None:
    with OpenAIServer() as server:
        url = server.base_url.replace("http://", "https://")

        with pytest.raises(ssl.SSLError):
            _run_pool(lambda pool: _fetch(pool, url))


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_with_a_private_ca_from_ssl_cert_file(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def main() -> tuple[tuple[int, bytes], type[BaseException]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(OK)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        untrusted = ConnectionPool(user_agent="t")
        try:
            await _fetch(untrusted, url)
        except ssl.SSLError as exc:
            refused: type[BaseException] = type(exc)
        finally:
            await untrusted.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusted = ConnectionPool(user_agent="t")
        try:
            return await _fetch(trusted, url), refused
        finally:
            await trusted.close()
            server.close()

    result, refused = asyncio.run(main())

    assert issubclass(refused, ssl.SSLCertVerificationError)
    assert result == (200, BODY)


# -- review findings: each test below failed before its fix ------------------------------------


class HeadOnlyServer(LoopbackServer):
    """Reads each request's head, then sends ``answer`` (if any) and reads nothing more.

    Its sockets have a small receive buffer, so a large request body fills the client's
    socket buffer and the client waits to write, as with a server that stopped reading.
    """

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self._held: list[socket.socket] = []
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        super().__init__(sock)

    def _handle(self, conn: socket.socket) -> None:
        self._held.append(conn)
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(1)
            if not data:
                break
            head += data
        if self.answer:
            conn.sendall(self.answer)

    def close(self) -> None:
        super().close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def head_only() -> Iterator[list[HeadOnlyServer]]:
    servers: list[HeadOnlyServer] = []
    yield servers
    for server in servers:
        server.close()


async def _bounded(awaitable: Awaitable[T], seconds: float = 10.0) -> T:
    """``awaitable``, failing the test instead of hanging it when a bug makes it wait forever."""
    async with asyncio.timeout(seconds):
        return await awaitable


def _open_connections(pool: ConnectionPool) -> int:
    """How many connections the pool counts, idle or busy, over all hosts."""
    return sum(host.count for host in pool._hosts.values())


def test_a_body_larger_than_the_pause_threshold_is_read_whole(
    serve: list[ScriptedServer],
) -> None:
    # read() used to wait for the end of the answer while the socket was paused at 1 MiB
    # buffered: it waited forever (and the read timer, seeing a paused socket, never fired).
    size = 3 << 20
    server = _server(serve, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"z" * size)

    status, body = _run_pool(lambda pool: _bounded(_fetch(pool, server.url)))

    assert status == 200
    assert body == b"z" * size


def test_a_second_answer_to_one_request_is_not_read_into_the_first(
    serve: list[ScriptedServer],
) -> None:
    other = b"HTTP/1.1 201 Created\r\nX-Other: yes\r\nContent-Length: 5\r\n\r\nextra"
    server = _server(serve, OK + other, OK)

    async def twice(pool: ConnectionPool) -> tuple[Response, bytes, tuple[int, bytes]]:
        response = await _post(pool, server.url)
        body = await response.read()
        response.release()
        return response, body, await _fetch(pool, server.url)

    response, body, second = _run_pool(twice)

    assert (response.status, body) == (200, BODY)
    assert "x-other" not in response.headers
    assert second == (200, BODY)
    assert server.connections == 2  # the connection that spoke out of turn was not reused


def test_gzip_with_several_members_is_decoded_whole(serve: list[ScriptedServer]) -> None:
    packed = gzip.compress(b"first member, ") + gzip.compress(b"second member")
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
        len(packed),
        packed,
    )
    server = _server(serve, answer)

    assert _run_pool(lambda pool: _fetch(pool, server.url)) == (200, b"first member, second member")


def test_raw_deflate_bodies_are_decoded(serve: list[ScriptedServer]) -> None:
    # Some servers send "Content-Encoding: deflate" without the zlib wrapper.
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    packed = packer.compress(BODY * 10) + packer.flush()
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s" % (
        len(packed),
        packed,
    )
    server = _server(serve, answer)

    assert _run_pool(lambda pool: _fetch(pool, server.url)) == (200, BODY * 10)


def test_a_header_line_that_never_ends_is_refused(serve: list[ScriptedServer]) -> None:
    # httptools hands a header over only once its line ends: the limit must count raw bytes.
    # (The second entry keeps the connection open: the server waits for another request.)
    server = _server(serve, b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * 300_000, OK)

    async def call(pool: ConnectionPool) -> None:
        await _post(pool, server.url, read_timeout=3)

    with pytest.raises(ProtocolError, match=r"the answer's headers exceed 65536 bytes"):
        _run_pool(call)


def test_a_server_that_neither_reads_the_body_nor_answers_times_out(
    head_only: list[HeadOnlyServer],
) -> None:
    server = HeadOnlyServer()
    head_only.append(server)

    async def call(pool: ConnectionPool) -> None:
        await _bounded(_post(pool, server.url, b"x" * (16 << 20), read_timeout=0.5))

    with pytest.raises(ReadTimeout, match=r"no data for 0\.5 s"):
        _run_pool(call)


def test_an_answer_that_comes_before_the_body_is_sent_is_returned(
    head_only: list[HeadOnlyServer],
) -> None:
    server = HeadOnlyServer(b"HTTP/1.1 413 Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
    head_only.append(server)

    async def call(pool: ConnectionPool) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        first = await _bounded(_fetch(pool, server.url, b"x" * (16 << 20)))
        return first, await _bounded(_fetch(pool, server.url))

    first, second = _run_pool(call)

    assert first == second == (413, b"too big!")
    # The rest of the first body was never sent: that connection cannot carry a request.
    assert server.connections == 2


def test_a_body_the_server_reads_slowly_is_not_a_read_timeout() -> None:
    # The server takes the request for longer than the read timeout (64 KiB per 5 ms at
    # most), but never stops taking it: it is not silent.
    size = 16 << 20
    done = threading.Event()

    def serve(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            received = len(data.partition(b"\r\n\r\n")[2])
            while received < size and not done.is_set():
                received += len(conn.recv(65536))
                done.wait(0.005)
            conn.sendall(OK)
            done.wait(5)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    thread = threading.Thread(target=serve, args=(listener,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"

    async def call(pool: ConnectionPool) -> tuple[int, bytes]:
        response = await _bounded(_post(pool, url, b"s" * size, read_timeout=0.5), 60)
        body = await response.read()
        response.release()
        return response.status, body

    try:
        assert _run_pool(call) == (200, BODY)
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()


def test_a_request_cancelled_while_its_body_is_written_frees_its_place_and_socket(
    head_only: list[HeadOnlyServer],
) -> None:
    # As when the proxy's client hangs up during a large upload to a server that stopped
    # reading: a graceful close would wait forever to flush the rest of the body.
    server = HeadOnlyServer()
    head_only.append(server)

    async def main() -> int:
        pool = ConnectionPool(user_agent="t")
        try:
            sending = asyncio.ensure_future(_post(pool, server.url, b"x" * (16 << 20)))
            await asyncio.sleep(0.2)  # connected, the socket's buffer full
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            return _open_connections(pool)
        finally:
            await pool.close()

    assert asyncio.run(main()) == 0
    gc.collect()  # a socket left open would warn here, and warnings are errors


def test_closing_the_pool_fails_answers_being_read_and_closes_their_sockets(
    serve: list[ScriptedServer],
) -> None:
    server = _server(serve, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nthe start", OK)

    async def main() -> None:
        pool = ConnectionPool(user_agent="t")
        response = await _post(pool, server.url, read_timeout=3)
        await pool.close()
        await response.read()

    with pytest.raises(ServerHungUp, match="the connection pool was closed"):
        asyncio.run(main())
    gc.collect()  # a socket left open would warn here, and warnings are errors


def test_a_waiter_cancelled_as_it_is_given_a_place_passes_the_place_on(
    serve: list[ScriptedServer],
) -> None:
    server = _server(serve, OK)

    async def main(pool: ConnectionPool) -> tuple[int, bytes]:
        holder = await _post(pool, server.url)
        first = asyncio.ensure_future(_fetch(pool, server.url))
        second = asyncio.ensure_future(_fetch(pool, server.url))
        await asyncio.sleep(0.05)  # both wait for the one place
        holder.close()  # the place goes to `first`...
        first.cancel()  # ...which is cancelled before it could use it
        with contextlib.suppress(asyncio.CancelledError):
            await first
        return await _bounded(second)

    assert _run_pool(main, limit_per_host=1) == (200, BODY)


def test_a_freed_place_goes_to_the_waiter_not_to_a_newcomer(serve: list[ScriptedServer]) -> None:
    server = _server(serve, OK, OK)

    async def main(pool: ConnectionPool) -> list[tuple[int, bytes]]:
        holder = await _post(pool, server.url)
        waiter = asyncio.ensure_future(_fetch(pool, server.url))
        await asyncio.sleep(0.05)
        holder.close()  # its place is the waiter's...
        mine = await _fetch(pool, server.url)  # ...so this must wait, not open a second one
        return [mine, await waiter]

    assert _run_pool(main, limit_per_host=1) == [(200, BODY), (200, BODY)]
    assert server.connections == 2  # the holder's, then one shared: never two at once


def test_waiting_for_a_place_counts_toward_the_connect_timeout(
    serve: list[ScriptedServer],
) -> None:
    server = _server(serve, OK, OK)

    async def main(pool: ConnectionPool) -> tuple[str, tuple[int, bytes]]:
        holder = await _post(pool, server.url)  # the only place, held
        with pytest.raises(ConnectTimeout) as caught:
            await pool.post(server.url, b"{}", {}, connect_timeout=0.1, read_timeout=5.0)
        holder.close()
        # The timed-out waiter left nothing behind: the freed place serves the next caller.
        return str(caught.value), await _fetch(pool, server.url)

    message, after = _run_pool(main, limit_per_host=1)

    assert message == (
        "no connection within 0.1 s: all 1 connections to 127.0.0.1 are in use; "
        "raise the timeout or lower the load"
    )
    assert after == (200, BODY)


def test_the_keep_alive_retry_happens_once_and_on_a_new_connection(
    serve: list[ScriptedServer],
) -> None:
    server = _server(serve, OK, CLOSE)  # each connection answers once, then hangs up

    async def main(pool: ConnectionPool) -> tuple[int, bytes]:
        # Two idle connections, both about to be closed by the server.
        await asyncio.gather(_fetch(pool, server.url), _fetch(pool, server.url))
        return await _fetch(pool, server.url)

    assert _run_pool(main) == (200, BODY)
    # 2 first requests, then the third: on a stale connection, then once more on a new one
    # (not on the other stale connection).
    assert len(server.requests) == 4
    assert server.connections == 3


def test_a_pooled_connection_that_closed_before_use_is_retried_at_once(
    serve: list[ScriptedServer],
) -> None:
    server = _server(serve, OK, OK)

    async def main(pool: ConnectionPool) -> tuple[int, bytes]:
        holder = await _post(pool, server.url)
        await holder.read()
        waiter = asyncio.ensure_future(_fetch(pool, server.url))
        await asyncio.sleep(0.05)
        transport = holder._connection.transport
        assert transport is not None
        # The connection is lost (the event is queued) just as the answer is released: the
        # waiter it is handed to runs only after the loop has reported the loss.
        transport.abort()
        holder.release()
        return await _bounded(waiter, 3)  # not the read timeout (5 s) of a silent socket

    assert _run_pool(main, limit_per_host=1) == (200, BODY)
    assert server.connections == 2


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"Content-Length": "5"}, "'Content-Length' is set from the body"),
        ({"transfer-encoding": "chunked"}, "'transfer-encoding' is set from the body"),
        ({"X-Bad(": "v"}, "invalid header name"),
        ({"X-Non-Latin": "\u20ac"}, "the value of header 'X-Non-Latin' is not Latin-1"),
    ],
)
def test_headers_that_would_change_the_framing_are_refused(
    serve: list[ScriptedServer], headers: dict[str, str], problem: str
) -> None:
    server = _server(serve, OK)

    async def call(pool: ConnectionPool) -> None:
        await pool.post(server.url, b"{}", headers, connect_timeout=5, read_timeout=5)

    with pytest.raises(ValueError, match=re.escape(problem)):
        _run_pool(call)
    assert server.requests == []


def test_a_host_header_given_by_the_caller_replaces_ours(serve: list[ScriptedServer]) -> None:
    server = _server(serve, OK)

    async def call(pool: ConnectionPool) -> None:
        response = await pool.post(
            server.url, b"{}", {"host": "api.example"}, connect_timeout=5, read_timeout=5
        )
        response.release()

    _run_pool(call)

    head = server.requests[0].split(b"\r\n\r\n")[0].lower()
    assert head.count(b"\r\nhost:") == 1
    assert b"\r\nhost: api.example" in head


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/v1 HTTP/1.0", "http://127.0.0.1/v1\x00x", "http://127.0.0.1/v\u00e9"],
)
def test_a_url_whose_path_would_break_the_request_line_is_refused(url: str) -> None:
    with pytest.raises(InvalidURL, match="percent-encode"):
        _run_pool(lambda pool: _fetch(pool, url))


def test_an_international_host_name_is_connected_to_and_sent_as_idna() -> None:
    # Parsed only: resolving the name would leave 127.0.0.1.
    target = _async_http._target("https://b\u00fccher.example:8443/v1")

    assert (target.host, target.port) == ("xn--bcher-kva.example", 8443)
    assert target.host_header == "xn--bcher-kva.example:8443"


def test_a_host_name_that_is_not_idna_is_an_invalid_url() -> None:
    with pytest.raises(InvalidURL, match=r"the host name '.*' is not a valid domain name"):
        _async_http._target("http://" + "\u00fc" * 64 + ".example/v1")


# -- the read timer, on a clock the test moves -------------------------------------------------


class _Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Clock:
    """The parts of an event loop a Response uses, with a time the test sets."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = 0.0
        self.timers: list[_Timer] = []
        self._loop = loop

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        self.timers.append(timer)
        return timer

    def create_future(self) -> asyncio.Future[None]:
        return self._loop.create_future()

    def advance_to(self, now: float) -> None:
        """Set the time, running the timers due by then."""
        self.now = now
        for timer in list(self.timers):
            if not timer.cancelled and timer.when <= now:
                self.timers.remove(timer)
                timer.callback()

    def pending(self) -> list[_Timer]:
        return [timer for timer in self.timers if not timer.cancelled]


class _Socket:
    """A connection's side of a Response: records pauses and how the exchange ended."""

    def __init__(self) -> None:
        self.paused = False
        self.ended: str | None = None

    def pause_reading(self) -> bool:
        self.paused = True
        return True

    def resume_reading(self) -> None:
        self.paused = False

    def reading_paused(self) -> bool:
        return self.paused

    def unsent(self) -> int:
        return 0

    def close(self) -> None:
        self.ended = "closed"

    def wake_sender(self) -> None:
        pass

    def done(self, *, reusable: bool, abort: bool = False) -> None:
        self.ended = "reused" if reusable else "closed"


def _clocked(read_timeout: float) -> tuple[Response, _Clock, _Socket]:
    clock = _Clock(asyncio.get_running_loop())
    sock = _Socket()
    response = Response(cast(Any, sock), cast(Any, clock), read_timeout)
    return response, clock, sock


def test_a_reader_that_resumes_gets_a_whole_read_timeout_of_server_silence() -> None:
    part = 1 << 20

    async def main() -> int:
        response, clock, sock = _clocked(read_timeout=10)
        response._received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (part + 10))
        response._received(b"p" * part)
        response._received(b"p")  # over the pause threshold: the socket is paused
        assert sock.reading_paused()
        clock.advance_to(10)  # a slow reader, not a silent server: no timeout
        clock.advance_to(19)
        total = 0
        while sock.reading_paused():  # the reader catches up; reading resumes at t=19
            total += len(await response.read_some())
        clock.advance_to(20)  # the server has been silent 1 s since: no timeout either
        response._received(b"q" * 9)
        total += len(await response.read())
        response.release()
        assert sock.ended == "reused"
        assert clock.pending() == []
        return total

    assert asyncio.run(main()) == part + 10


def test_the_server_silent_while_nothing_is_paused_times_out() -> None:
    async def main() -> None:
        response, clock, _ = _clocked(read_timeout=10)
        response._received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        clock.advance_to(9)
        response._received(b"def")
        clock.advance_to(18.5)  # 9.5 s since the last byte
        assert clock.pending() != []
        clock.advance_to(19)
        with pytest.raises(ReadTimeout, match=r"no data for 10 s"):
            await response.read()
        response.close()
        assert clock.pending() == []

    asyncio.run(main())


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_answers_that_have_no_body_end_with_their_headers(
    serve: list[ScriptedServer], status: bytes
) -> None:
    # A Content-Length on them describes what the body would have been, not bytes to come.
    server = _server(serve, b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\n", OK)

    async def twice(pool: ConnectionPool) -> list[tuple[int, bytes]]:
        return [await _fetch(pool, server.url), await _fetch(pool, server.url)]

    assert _run_pool(twice) == [(int(status[:3]), b""), (200, BODY)]
    assert server.connections == 1


@pytest.mark.parametrize(
    ("url", "host", "port", "header"),
    [
        ("http://[::1]:8080/v1", "::1", 8080, "[::1]:8080"),
        ("https://[2001:db8::1]/v1", "2001:db8::1", 443, "[2001:db8::1]"),
        ("http://Example.COM:80/v1", "example.com", 80, "example.com"),
    ],
)
def test_ip_v6_literals_and_default_ports_in_the_host_header(
    url: str, host: str, port: int, header: str
) -> None:
    target = _async_http._target(url)

    assert (target.host, target.port, target.host_header) == (host, port, header)


def test_an_answer_released_while_reading_is_paused_leaves_the_socket_reading() -> None:
    # The answer was complete in the data that crossed the pause threshold, and is released
    # unread: a connection pooled with reading paused would never hear its next answer.
    async def main() -> _Socket:
        response, _, sock = _clocked(read_timeout=10)
        size = PAUSE_BYTES + 10
        response._received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"r" * size)
        assert sock.reading_paused()
        response.release()
        return sock

    sock = asyncio.run(main())

    assert sock.ended == "reused"
    assert not sock.reading_paused()


def test_a_released_answer_is_freed_without_the_garbage_collector(
    serve: list[ScriptedServer],
) -> None:
    server = _server(serve, OK)

    async def fetch_and_watch(pool: ConnectionPool) -> weakref.ref[Response]:
        response = await _post(pool, server.url)
        await response.read()
        response.release()
        return weakref.ref(response)

    gc.disable()  # only reference counting may free it: no cycle through the parser
    try:
        watched = _run_pool(fetch_and_watch)
        assert watched() is None
    finally:
        gc.enable()
