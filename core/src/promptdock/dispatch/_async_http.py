"""A small HTTP/1.1 client for asyncio: pooled keep-alive connections, answers parsed by httptools.

The async dispatcher (:mod:`promptdock.dispatch.openai_async`) makes one ``POST`` per proxied
request and reads a JSON answer or a stream of server-sent events; nothing else. Measured on
the development machine, one such call through an ``aiohttp`` session cost about 300 µs of
CPU, against about 60 µs for the same bytes on a bare asyncio protocol: more than everything
else the proxy does per request. This module is that bare protocol plus what a client must
get right, and no more:

- keep-alive connections, pooled per scheme, host and port, at most :data:`POOL_LIMIT` per
  host (callers past the limit wait for a connection); idle ones are dropped after
  :data:`IDLE_SECONDS`, or as soon as the server closes them;
- a request that finds its reused connection closed by the server before any byte of the
  answer (a keep-alive race every client meets) is sent again, once, on a new connection;
- a connection goes back to the pool only in a known state: its answer read to the end, its
  request written whole, nothing received out of turn;
- ``https`` with the default certificate checks (``SSL_CERT_FILE`` names a private CA);
- answers delimited by ``Content-Length``, chunked, or by the end of the connection; 1xx
  interim answers skipped; ``gzip`` (several members too) and ``deflate`` (zlib or raw)
  bodies decoded; at most 64 KiB of headers;
- a connect timeout, and a read timeout that bounds each silence of the server rather than
  the whole answer, so a long stream that keeps sending is never cut off;
- flow control: a stream whose reader is slow stops reading the socket at
  :data:`PAUSE_BYTES` buffered (:meth:`Response.read`, which takes the whole body, never
  pauses); a large request body is written as the server reads it, and an answer that comes
  before the body is all written is read all the same.

The parser is httptools (llhttp, the parser of Node.js), installed with the ``[proxy]`` extra.
Redirects are not followed (the dispatcher reports them), proxies from the environment are
not used (as with the aiohttp session it replaces).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import re
import ssl
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple, NoReturn
from urllib.parse import unquote, urlsplit

import httptools

__all__ = [
    "IDLE_SECONDS",
    "PAUSE_BYTES",
    "POOL_LIMIT",
    "CannotConnect",
    "ConnectTimeout",
    "ConnectionPool",
    "Headers",
    "InvalidURL",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "ServerHungUp",
]

POOL_LIMIT = 256
"""Most connections open at once to one scheme, host and port."""

IDLE_SECONDS = 30.0
"""An idle connection older than this is closed instead of reused."""

PAUSE_BYTES = 1 << 20
"""Bytes of an answer buffered, unread, before the socket stops being read."""

_RESUME_BYTES = PAUSE_BYTES // 4
_MAX_HEAD_BYTES = 64 * 1024
_MAX_CACHED = 256


# -- errors ----------------------------------------------------------------------------------


class ConnectTimeout(TimeoutError):
    """No connection (TCP and TLS) within the connect timeout."""


class ReadTimeout(TimeoutError):
    """The server sent nothing for longer than the read timeout."""


class CannotConnect(ConnectionError):
    """The connection could not be made; :attr:`os_error` says why (refused, unknown host...).

    :ivar os_error: the error the connection attempt raised.
    """

    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class ServerHungUp(ConnectionError):
    """The server closed the connection before its answer was complete."""


class ProtocolError(Exception):
    """The server's answer is not valid HTTP/1.1 (or uses an encoding we cannot decode)."""


class InvalidURL(ValueError):
    """The URL is not ``http(s)://host[:port]/path``."""


class _StopParsing(Exception):
    """Raised in a parser callback after the answer failed: the rest is not parsed."""


# -- requests --------------------------------------------------------------------------------


class _Target(NamedTuple):
    """Where a URL points, parsed once."""

    secure: bool
    host: str
    port: int
    path: str
    host_header: str
    basic_auth: str | None

    @property
    def key(self) -> tuple[bool, str, int]:
        return (self.secure, self.host, self.port)


_targets: dict[str, _Target] = {}


def _target(url: str) -> _Target:
    target = _targets.get(url)
    if target is None:
        target = _parse_url(url)
        if len(_targets) >= _MAX_CACHED:
            _targets.clear()
        _targets[url] = target
    return target


# A space would end the request target, a line break the request line; non-ASCII has no
# single byte form.
_UNSAFE_IN_PATH = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")


def _parse_url(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(str(exc)) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidURL(f"the scheme must be http or https, not {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise InvalidURL("no host name")
    if not host.isascii():
        # What resolvers, certificates and Host headers know is the IDNA form.
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURL(f"the host name {host!r} is not a valid domain name") from None
    secure = parts.scheme == "https"
    default = 443 if secure else 80
    shown = f"[{host}]" if ":" in host else host
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _UNSAFE_IN_PATH.search(path):
        raise InvalidURL(
            f"the path {path!r} holds a space, a control or a non-ASCII character, which "
            f"would break the request line: percent-encode it"
        )
    auth = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return _Target(
        secure=secure,
        host=host,
        port=port or default,
        path=path,
        host_header=shown if port in (None, default) else f"{shown}:{port}",
        basic_auth=auth,
    )


_BAD_VALUE = frozenset("\r\n\0")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The body's framing is the client's to say: a second length, or chunked next to a length,
# would let the server and anything in between read different requests.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


def _head_prefix(target: _Target, headers: Mapping[str, str], defaults: Mapping[str, str]) -> bytes:
    """The request line and headers of a ``POST``, all but ``Content-Length``."""
    lowered = {name.lower() for name in headers}
    fields = {} if "host" in lowered else {"Host": target.host_header}
    for name, value in defaults.items():
        if name.lower() not in lowered:
            fields[name] = value
    if target.basic_auth is not None and "authorization" not in lowered:
        fields["Authorization"] = target.basic_auth
    fields.update(headers)
    lines = [f"POST {target.path} HTTP/1.1".encode("ascii")]
    for name, value in fields.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if name.lower() in _FRAMING:
            raise ValueError(f"header {name!r} is set from the body by the client; remove it")
        if _BAD_VALUE.intersection(value):
            raise ValueError(f"the value of header {name!r} holds a line break or NUL")
        try:
            lines.append(f"{name}: {value}".encode("latin-1"))
        except UnicodeEncodeError:
            raise ValueError(
                f"the value of header {name!r} is not Latin-1 text; encode it (percent- or "
                f"RFC 2047-encoding) before sending"
            ) from None
    lines.append(b"")
    return b"\r\n".join(lines)


# -- answers ---------------------------------------------------------------------------------


class Headers(dict[str, str]):
    """Response headers: names lower-case, looked up case-insensitively; repeated fields
    joined with ``", "``."""

    def get(self, name: str, default: Any = None) -> Any:
        """The value of header ``name`` (any case), else ``default``."""
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class Response:
    """One answer being received on a pooled connection.

    Read it with :meth:`read` (the whole body) or :meth:`read_some` (what has arrived), then
    :meth:`release` it so the connection can serve another request, or :meth:`close` it to
    drop the connection. Both are idempotent, and :meth:`release` closes a connection that
    cannot be reused (answer unfinished, ``Connection: close``).

    :ivar status: the HTTP status, once the headers are in.
    :ivar headers: the response headers, once in.
    """

    def __init__(
        self, connection: _Connection, loop: asyncio.AbstractEventLoop, read_timeout: float
    ) -> None:
        self.status = 0
        self.headers = Headers()
        self._connection = connection
        self._loop = loop
        self._read_timeout = read_timeout
        # The parser holds this object's callbacks: a reference cycle, broken when the answer
        # is released or closed so the pair is freed at once rather than by the collector.
        self._parser: Any = httptools.HttpResponseParser(self)
        self._header_items: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._head_seen = 0  # bytes received before the final headers were complete
        self._head_done = False
        self._interim = False
        self._length_known = False
        self._complete = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._whole = False  # read() takes the whole body: never pause reading for it
        self._unsent = 0  # bytes of the request still to write, when last looked at
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: Any = None
        self._raw_deflate_possible = False
        self._finished = False
        self.received_any = False
        self._last_data = loop.time()
        self._timer: asyncio.TimerHandle | None = loop.call_at(
            self._last_data + read_timeout, self._check_silence
        )

    @property
    def finished(self) -> bool:
        """Whether :meth:`release` or :meth:`close` was called."""
        return self._finished

    @property
    def content_type(self) -> str:
        """The media type of the body (``Content-Type`` without parameters), lower-case."""
        value: str = self.headers.get("content-type", "")
        return value.partition(";")[0].strip().lower()

    # -- fed by the connection -----------------------------------------------------------

    def _received(self, data: bytes) -> None:
        self.received_any = True
        self._last_data = self._loop.time()
        if self._complete or self._error is not None:
            self._out_of_turn()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols, which is not HTTP/1.1"))
        except httptools.HttpParserError as exc:
            if self._error is None and not self._complete:
                self._fail(ProtocolError(f"the answer is not valid HTTP/1.1 ({exc})"))
        if not self._head_done:
            # httptools hands a header over only when its line ends: a line that never ends
            # is bounded here, by the bytes seen.
            self._head_seen += len(data)
            if self._head_seen > _MAX_HEAD_BYTES:
                self._fail(ProtocolError(f"the answer's headers exceed {_MAX_HEAD_BYTES} bytes"))

    def _out_of_turn(self) -> None:
        """Bytes after the answer (or after it failed): the connection cannot be trusted."""
        self._keep_alive = False
        self._connection.close()

    def _lost(self, exc: Exception | None) -> None:
        if self._complete:
            return
        if not self._head_done:
            reason = f" ({exc})" if exc is not None else ""
            self._fail(ServerHungUp(f"the server closed the connection before answering{reason}"))
        elif exc is None and not self._length_known:
            # No Content-Length and not chunked: the body ends with the connection.
            self._keep_alive = False
            self._finish_body()
        elif exc is not None:
            self._fail(exc)
        else:
            self._fail(ServerHungUp("the server closed the connection mid-answer"))

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request: none of it is ours
            self._out_of_turn()
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD_BYTES:
            self._stop(f"the answer's headers exceed {_MAX_HEAD_BYTES} bytes")
        self._header_items.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        items, self._header_items = self._header_items, []
        if 100 <= status < 200:
            self._interim = True  # "100 Continue" and friends: the real answer follows
            return
        headers = self.headers
        for raw_name, raw_value in items:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.status = status
        self._keep_alive = self._parser.should_keep_alive()
        encoding = headers.get("transfer-encoding", "").lower()
        self._length_known = "content-length" in headers or "chunked" in encoding
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            # wbits 47: a zlib or gzip header, detected from the data.
            self._decoder = zlib.decompressobj(47)
            self._raw_deflate_possible = coding == "deflate"
        elif coding != "identity":
            self._stop(f"the answer uses content-encoding {coding!r}, which is unsupported")
        self._head_done = True
        self._wake()
        self._connection.wake_sender()  # the answer is here: writing the body can stop waiting

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            body = self._decode(body)
        if body:
            self._chunks.append(body)
            self._buffered += len(body)
            if self._buffered > PAUSE_BYTES and not self._paused and not self._whole:
                self._paused = self._connection.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._head_bytes = 0
            return
        self._finish_body()

    def _decode(self, data: bytes) -> bytes:
        decoder = self._decoder
        if self._raw_deflate_possible:
            self._raw_deflate_possible = False
            # "deflate" should be zlib-wrapped (first byte 0x?8) but some servers send it
            # raw; gzip (0x1f) is accepted too, as for "gzip".
            if data[0] & 0x0F != 8 and data[0] != 0x1F:
                decoder = self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body: bytes = decoder.decompress(data)
            while decoder.eof and decoder.unused_data:
                # Another gzip member: concatenated members make one body.
                rest = decoder.unused_data
                decoder = self._decoder = zlib.decompressobj(47)
                body += decoder.decompress(rest)
        except zlib.error as exc:
            self._stop(f"the answer's compressed body is corrupt ({exc})")
        return body

    # -- state ---------------------------------------------------------------------------

    def _stop(self, problem: str) -> NoReturn:
        """Fail with ``problem`` and make the parser stop (it reports the raise)."""
        self._fail(ProtocolError(problem))
        raise _StopParsing

    def _finish_body(self) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
                self._buffered += len(rest)
        self._complete = True
        self._stop_timer()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._complete:
            self._error = error
            self._keep_alive = False
            self._stop_timer()
            self._wake()
            self._connection.wake_sender()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_silence(self) -> None:
        self._timer = None
        if self._complete or self._error is not None:
            return
        now = self._loop.time()
        if self._paused:  # our reader is slow, not the server: wait on
            self._last_data = now
        elif self._unsent:
            unsent = self._connection.unsent()
            if unsent < self._unsent:  # the server is taking the request: not silent
                self._last_data = now
            self._unsent = unsent
        deadline = self._last_data + self._read_timeout
        if now >= deadline:
            self._fail(ReadTimeout(f"no data for {self._read_timeout:g} s"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_silence)

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def _headers(self) -> None:
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    # -- reading -------------------------------------------------------------------------

    async def read_some(self) -> bytes:
        """The body bytes that have arrived (waiting for some), or ``b""`` at its end.

        :raises ReadTimeout: the server went silent for longer than the read timeout.
        :raises ServerHungUp: the connection closed before the body was complete.
        :raises ProtocolError: the body is not valid HTTP/1.1 framing or encoding.
        """
        chunks = self._chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            await self._wait()
        chunk = chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < _RESUME_BYTES:
            self._resume()
        return chunk

    def _resume(self) -> None:
        self._paused = False
        # The server's silence is timed from now: while paused, it could not be heard.
        self._last_data = self._loop.time()
        self._connection.resume_reading()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (at most ``limit`` bytes of it); raises as :meth:`read_some`."""
        self._whole = True
        if self._paused:
            self._resume()
        while not self._complete and self._error is None:
            if limit is not None and self._buffered >= limit:
                break
            await self._wait()
        if self._error is not None and (limit is None or self._buffered < limit):
            raise self._error
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body if limit is None else body[:limit]

    def release(self) -> None:
        """Give the connection back to the pool if the answer is complete and it may be
        reused; close it otherwise."""
        if self._finished:
            return
        self._finished = True
        self._stop_timer()
        whole = self._complete and self._error is None
        if self._paused and whole:
            # Complete in the data that paused it, released unread: pooled paused, the
            # connection would never hear its next answer (nor the server closing it).
            self._paused = False
            self._connection.resume_reading()
        self._connection.done(reusable=whole and self._keep_alive, abort=not whole)
        self._parser = None

    def close(self) -> None:
        """Drop the connection (an answer abandoned part way)."""
        if self._finished:
            return
        self._finished = True
        self._stop_timer()
        self._connection.done(reusable=False, abort=True)
        self._parser = None


# -- connections -----------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection of the pool, carrying one exchange at a time."""

    def __init__(self, pool: ConnectionPool, key: tuple[bool, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False
        self.counted = False  # whether the pool counts it among the host's connections
        self.idle_since = 0.0
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # The server spoke out of turn on an idle connection: it cannot be trusted on.
            self.close()
            return
        response._received(data)

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._open.discard(self)
        self.wake_sender()
        response = self.response
        if response is not None:
            response._lost(exc)
        else:
            self.pool._forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        response = self.response
        if response is not None:
            # The server took bytes of the request: it is not silent.
            response._last_data = response._loop.time()
        self.wake_sender()

    # -- used by the pool and the response -----------------------------------------------

    async def send(self, head: bytes, body: bytes, response: Response) -> None:
        """Write a request; while the socket's buffer is full (a large body), wait for it to
        drain, for the answer's headers, or for the answer to fail (a read timeout)."""
        transport = self.transport
        assert transport is not None
        transport.write(head)
        if body:
            transport.write(body)
        if self._write_paused:
            response._unsent = transport.get_write_buffer_size()
        while (
            self._write_paused
            and not self.closed
            and not response._head_done
            and response._error is None
        ):
            self._drained = response._loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    def unsent(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def wake_sender(self) -> None:
        """Let :meth:`send` check again whether to wait."""
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_reading(self) -> bool:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            return True
        return False

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self, *, abort: bool = False) -> None:
        """Close the connection; ``abort``: at once, without flushing or a TLS goodbye (an
        exchange abandoned part way; a graceful close would wait on a server that may
        neither read nor answer)."""
        if not self.closed:
            self.closed = True
            transport = self.transport
            if transport is not None:
                if abort or transport.get_write_buffer_size():
                    transport.abort()
                else:
                    transport.close()

    def abort(self) -> None:
        """Close the connection at once, even if a graceful close is under way."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def done(self, *, reusable: bool, abort: bool = False) -> None:
        """The exchange is over: back to the pool, or closed."""
        self.response = None
        transport = self.transport
        if (
            reusable
            and not self.closed
            and transport is not None
            # The request was written whole (an answer can come before it is).
            and not transport.get_write_buffer_size()
        ):
            self.pool._put_back(self)
        else:
            self.close(abort=abort)
            self.pool._forget(self)


class _Host:
    """The connections to one scheme, host and port."""

    __slots__ = ("count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[_Connection] = []
        # Places taken: open connections (idle or busy), connections being made, and
        # places handed to waiters that have not run yet.
        self.count = 0
        # Each waiter is handed a connection, or ``None``: a place, already counted for it.
        self.waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()


class ConnectionPool:
    """Keep-alive connections to any number of servers, for one event loop.

    :param user_agent: the ``User-Agent`` sent unless a request sets its own.
    :param limit_per_host: most connections open at once to one scheme, host and port.
    :param idle_seconds: idle connections older than this are not reused.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        limit_per_host: int = POOL_LIMIT,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.closed = False
        self._defaults = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"}
        self._limit = limit_per_host
        self._idle_seconds = idle_seconds
        self._hosts: dict[tuple[bool, str, int], _Host] = {}
        self._open: set[_Connection] = set()  # every connection whose socket is not closed yet
        self._heads: dict[tuple[int, str], tuple[Mapping[str, str], bytes]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> Response:
        """Send ``POST url`` and wait for the answer's status and headers.

        The caller must :meth:`~Response.release` or :meth:`~Response.close` the answer.

        :raises InvalidURL: ``url`` is not an ``http(s)`` URL.
        :raises ValueError: a header cannot be sent (a line break in it, not Latin-1, or
            ``Content-Length``/``Transfer-Encoding``, which the client sets).
        :raises ConnectTimeout: no connection within ``connect_timeout`` seconds.
        :raises CannotConnect: the connection was refused, the host is unknown...
        :raises ssl.SSLError: the TLS handshake failed.
        :raises ReadTimeout: the server sent nothing (nor took any of the request) for
            ``read_timeout`` seconds.
        :raises ServerHungUp: the server closed the connection before answering (or the pool
            was closed meanwhile).
        :raises ProtocolError: the answer is not HTTP/1.1.
        :raises RuntimeError: the pool is closed (or was, while the request waited for a
            connection).
        """
        if self.closed:
            raise RuntimeError("the connection pool is closed")
        target = _target(url)
        request = self._head(url, target, headers) + b"Content-Length: %d\r\n\r\n" % len(body)
        if len(body) < 65536:
            request += body
            body = b""
        loop = asyncio.get_running_loop()
        retried = False
        while True:
            connection, reused = await self._connection(target, connect_timeout, retried)
            response = Response(connection, loop, read_timeout)
            connection.response = response
            try:
                if connection.closed:
                    # Lost between leaving the pool and now: no event will report it again.
                    response._lost(None)
                else:
                    await connection.send(request, body, response)
                await response._headers()
            except ServerHungUp:
                response.close()
                if reused and not retried and not response.received_any and not self.closed:
                    # The server closed this idle connection as we reused it: the request
                    # never reached it. Once more, on a new connection.
                    retried = True
                    continue
                raise
            except BaseException:
                response.close()
                raise
            return response

    async def close(self) -> None:
        """Close every connection; answers being read fail with :class:`ServerHungUp`, and
        requests waiting for a connection with :class:`RuntimeError`."""
        self.closed = True
        hosts, self._hosts = self._hosts, {}
        for host in hosts.values():
            for waiter in host.waiters:
                if not waiter.done():
                    waiter.set_exception(RuntimeError("the connection pool was closed"))
            host.idle.clear()
        connections, self._open = self._open, set()
        for connection in connections:
            response = connection.response
            if response is not None:
                response._fail(
                    ServerHungUp("the connection pool was closed before the answer was complete")
                )
            connection.abort()
        await asyncio.sleep(0)  # let the transports close their sockets

    # -- internals -----------------------------------------------------------------------

    def _head(self, url: str, target: _Target, headers: Mapping[str, str]) -> bytes:
        # Keyed by the identity of the headers mapping (the dispatcher shares one per
        # endpoint), which the entry keeps alive so the id cannot be reused.
        key = (id(headers), url)
        entry = self._heads.get(key)
        if entry is None or entry[0] is not headers:
            prefix = _head_prefix(target, headers, self._defaults)
            if len(self._heads) >= _MAX_CACHED:
                self._heads.clear()
            entry = self._heads[key] = (headers, prefix)
        return entry[1]

    async def _connection(
        self, target: _Target, connect_timeout: float, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        """An idle connection to ``target`` (``True``), else a new one (``False``).

        ``fresh``: not an idle one (a retry after one was found closed), unless a waiter's.
        """
        key = target.key
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host()
        idle = host.idle
        if not fresh:
            now = asyncio.get_running_loop().time()
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < self._idle_seconds:
                    return connection, True
                connection.close()
                self._forget(connection)
        elif idle and host.count >= self._limit:
            oldest = idle.pop(0)  # its place is needed for the new connection
            oldest.close()
            self._forget(oldest)
        if host.count < self._limit:
            host.count += 1
        else:
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            host.waiters.append(waiter)
            try:
                # Waiting for a place is part of getting a connection: it counts toward the
                # connect timeout, so a saturated pool fails the call instead of queueing it
                # for ever.
                async with asyncio.timeout(connect_timeout):
                    handed = await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection or a place as this task was cancelled (or timed
                    # out): pass it on.
                    given = waiter.result()
                    if given is None:
                        self._free_place(host)
                    else:
                        self._put_back(given)
                if isinstance(exc, TimeoutError):
                    raise ConnectTimeout(
                        f"no connection within {connect_timeout:g} s: all {self._limit} "
                        f"connections to {target.host} are in use; raise the timeout or lower "
                        "the load"
                    ) from None
                raise
            if handed is not None:
                return handed, True
            # A connection closed and its place, still counted, was handed to us.
        try:
            connection = await self._connect(target, key, connect_timeout)
        except BaseException:
            self._free_place(host)
            raise
        connection.counted = True
        return connection, False

    async def _connect(
        self, target: _Target, key: tuple[bool, str, int], connect_timeout: float
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(self, key)
        context = self._ssl_context() if target.secure else None
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(
                    lambda: connection,
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                )
        except TimeoutError:
            connection.close()
            raise ConnectTimeout(f"no connection within {connect_timeout:g} s") from None
        except ssl.SSLError:
            connection.close()
            raise
        except OSError as exc:
            connection.close()
            raise CannotConnect(exc) from None
        if self.closed:
            connection.abort()
            raise RuntimeError("the connection pool was closed")
        if not connection.closed:
            self._open.add(connection)
        return connection

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # Made on the first https call: loading the CA bundle takes milliseconds.
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _put_back(self, connection: _Connection) -> None:
        if connection.closed:
            self._forget(connection)
            return
        host = self._hosts.get(connection.key)
        if host is None or self.closed:  # the pool was closed meanwhile
            connection.close()
            return
        while host.waiters:
            waiter = host.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = asyncio.get_running_loop().time()
        host.idle.append(connection)

    def _forget(self, connection: _Connection) -> None:
        """A connection closed: it no longer counts, and its place may be taken."""
        if not connection.counted or connection.response is not None:
            return  # never counted, already forgotten, or its exchange will call done()
        connection.counted = False
        host = self._hosts.get(connection.key)
        if host is None:
            return
        if connection in host.idle:
            host.idle.remove(connection)
        self._free_place(host)

    @staticmethod
    def _free_place(host: _Host) -> None:
        """A place is free: handed to the first waiter (still counted), else given up."""
        while host.waiters:
            waiter = host.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        host.count -= 1
