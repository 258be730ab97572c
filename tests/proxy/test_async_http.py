"""The async HTTP/1.1 client under the async dispatcher, against scripted servers on 127.0.0.1.

A scripted server answers each request on a connection with the next of its canned byte
strings, so the tests can send what real servers send rarely: chunked and close-delimited
bodies, interim 1xx answers, gzip, a connection closed at the worst moment, garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from promptdock.dispatch._async_http import (
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


class ScriptedServer:
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
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
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
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
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

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)


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
    data = await response.read()
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
