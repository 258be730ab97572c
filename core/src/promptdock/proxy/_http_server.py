"""The proxy's HTTP/1.1 server protocol: httptools parsing, ASGI 3 requests, one write per answer.

uvicorn still runs the process: sockets, signals, lifespan, ``--workers`` and graceful
shutdown. It builds this protocol for every connection as it builds its own
(``HttpProtocol(config=..., server_state=..., app_state=..., _loop=...)``, selected with
``uvicorn.run(..., http=HttpProtocol)``) and the protocol keeps uvicorn's bookkeeping in
``server_state``: the open connections, the running request tasks, the request count and the
default headers (``date``).

Why not uvicorn's own httptools protocol: it costs about 100 µs of CPU per request on this
kind of machine against about 25 µs for a bare asyncio protocol, and it writes every answer's
head and body in two socket writes, so a client often wakes up twice per answer. This one
keeps per-request work to parsing, one scope dict, one task, and a single ``write`` for the
head and a whole body (a body sent in one message without ``content-length`` gets one, so it
needs no chunked framing).

What it does: keep-alive (HTTP/1.1 by default, HTTP/1.0 on request) with an idle timeout;
pipelined requests answered in order (reading pauses while one waits); request bodies with
``content-length`` or chunked, delivered to ``receive`` as they arrive with read flow control;
``Expect: 100-continue`` (HTTP/1.1 only); chunked answers when the length is not known,
close-delimited for HTTP/1.0; no body for ``HEAD``, 1xx, 204 and 304; write flow control;
``http.disconnect`` when the client goes or the server closes; 400 for a request it cannot
parse, 431 for a head or trailer section that keeps growing, 501 for a transfer coding other
than chunked (``gzip, chunked`` would reach the app still compressed), 505 for an HTTP
version other than 1.0 and 1.1 (httptools takes 0.9 and 2.0), 500 when the app fails before
a byte of its answer was written (the head waits for the first body message or the next turn
of the loop; the connection closes when it fails after), 503 above uvicorn's
``limit_concurrency`` (open connections or running requests). An answer that starts before
the request body has all arrived says ``connection: close``, and the connection closes after
it. Upgrade requests (WebSocket, h2c) are answered as plain HTTP, and the connection closes
after the answer. Not handled: HTTP/2, TLS ALPN, ``--proxy-headers`` rewriting (applied by
uvicorn's middleware around the app as usual).

Closing after an answer (or a refusal) lingers, as RFC 9112 section 9.6 has it: the sending
side closes once the answer is flushed, then what the client still sends is read and dropped
until it closes too, ``_LINGER_SECONDS`` pass after the answer left, or ``_LINGER_BYTES``
came, whichever is first. A plain close with request bytes unread or still coming makes the
kernel reset the connection, and the reset can destroy the answer before the client reads it
(a 413 to a client still sending its body).

Memory per connection stays bounded whatever the client sends: request bodies wait in at most
about one socket read beyond ``_BODY_HIGH_WATER`` before reading pauses, a head or trailer
section may not outgrow ``_HEAD_LIMIT``, and at most ``_PIPELINE_DEPTH`` pipelined requests
wait (the last one kept is answered with ``connection: close``; the client sends the rest
again on a new connection, as RFC 9112 section 9.3.2 has it).
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = ["HttpProtocol"]

_log = logging.getLogger("promptdock.proxy.http")

_BODY_HIGH_WATER = 64 * 1024
"""Request body bytes buffered for the app before the socket stops being read."""

_HEAD_LIMIT = 64 * 1024
"""Bytes a request head or trailer section may take beyond the socket read it began in.

httptools keeps a header field that is still arriving, however long, so the bound has to be
kept here; it counts the reads that brought nothing but such bytes.
"""

_PIPELINE_DEPTH = 32
"""Pipelined requests kept waiting behind the one being answered."""

_LINGER_SECONDS = 2.0
"""How long a connection closing after an answer keeps reading, once the answer left."""

_LINGER_BYTES = 1024 * 1024
"""How much a connection closing after an answer reads and drops before it closes anyway."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"

_NO_BODY_STATUSES = frozenset({204, 304})
_WHITESPACE = b" \t"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A field name (RFC 9110 section 5.1)."""

_CHECKED_NAMES: set[bytes] = set()
"""Answer field names already found valid: apps use a handful, checked once each."""

_CHECKED_NAMES_MAX = 512


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode("ascii"))


_STATUS_LINES = {status.value: _status_line(status.value) for status in http.HTTPStatus}


class _Refused(Exception):
    """Raised in a parser callback: the request gets ``status`` and ``text`` instead of a 400."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _plain_answer(status: int, text: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete ``text/plain`` answer that closes the connection (for the server's own errors)."""
    body = text.encode()
    head = [_STATUS_LINES.get(status) or _status_line(status)]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head.append(b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n")
    head.append(b"content-length: %d\r\n\r\n" % len(body))
    return b"".join(head) + body


class _Request:
    """One request on a connection: its scope, its body on the way in, its answer on the way out.

    ``receive`` and ``send`` are the ASGI callables the app gets.
    """

    __slots__ = (
        "answered",
        "body",
        "body_complete",
        "body_size",
        "chunked",
        "continued",
        "delivered",
        "expects_continue",
        "head",
        "head_request",
        "keep_alive",
        "length_left",
        "protocol",
        "scope",
        "started",
        "status",
        "waiter",
    )

    def __init__(self, protocol: HttpProtocol, scope: dict[str, Any], keep_alive: bool) -> None:
        self.protocol = protocol
        self.scope = scope
        self.keep_alive = keep_alive
        self.head_request = scope["method"] == "HEAD"
        self.expects_continue = False
        self.continued = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_complete = False
        self.delivered = False  # the last body piece went to the app
        self.waiter: asyncio.Future[None] | None = None
        self.started = False  # http.response.start seen
        self.answered = False  # the last body byte was written
        self.status = 0
        self.head: list[bytes] = []  # the encoded head, until it is written
        self.chunked = False
        self.length_left = -1  # bytes the declared content-length still allows; -1: none declared

    # -- the way in ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.body.append(data)
        self.body_size += len(data)
        self._wake()

    def finish_body(self) -> None:
        self.body_complete = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        """The next body piece; ``http.disconnect`` once the answer is done or the client left."""
        protocol = self.protocol
        while True:
            if protocol.closed or self.answered:
                return {"type": "http.disconnect"}  # a new dict: the app may change it
            if self.body or (self.body_complete and not self.delivered):
                break
            if self.expects_continue and not self.continued and not self.started:
                self.continued = True
                protocol.write(_CONTINUE)
            protocol.resume_reading_for(self)
            waiter = self.waiter
            if waiter is None:
                waiter = self.waiter = protocol.loop.create_future()
            # Shielded: callers may share the waiter, and one caller's cancellation must not
            # cancel the others' wait.
            await asyncio.shield(waiter)
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.body_size = 0
        more = not self.body_complete
        self.delivered = not more  # from now on, receive waits for the disconnect
        protocol.resume_reading_for(self)
        return {"type": "http.request", "body": data, "more_body": more}

    # -- the way out ---------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """Write the answer: the head waits for the first body message, to go out with it."""
        protocol = self.protocol
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.answered:
                raise RuntimeError(
                    "ASGI app sent http.response.body "
                    + (
                        "before http.response.start"
                        if not self.started
                        else "after the answer ended"
                    )
                )
            more = message.get("more_body", False)
            if protocol.closed:
                self.answered = not more  # nobody to tell; the app learns it from receive
                return
            body = message.get("body", b"")
            out = self._frame(body, more)
            if not more:
                self.answered = True
            if out:
                protocol.write(out)
            if not more:
                protocol.answered(self)
            elif protocol.write_paused:
                await protocol.drain()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("ASGI app sent http.response.start twice")
            status = message["status"]
            # Encoded first: a field it refuses leaves the answer unstarted, so the client
            # gets a 500 rather than a dropped connection.
            self.head = self._encode_head(status, message.get("headers", ()))
            self.started = True
            self.status = status
            # Sent with the first body message if it comes in this same turn of the loop
            # (a whole answer: one write); otherwise on its own, so a stream's client gets the
            # status and headers without waiting for the first event.
            protocol.loop.call_soon(self._flush_head)
        else:
            raise RuntimeError(f"ASGI app sent an unexpected message type: {kind!r}")

    def _encode_head(self, status: int, headers: Any) -> list[bytes]:
        head = [_STATUS_LINES.get(status) or _status_line(status)]
        for name, value in self.protocol.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        for name, value in headers:
            if name not in _CHECKED_NAMES:
                _check_name(name)
            # A CR or LF would let a value start a field (or an answer) of its own; clients
            # disagree on where a NUL ends one (RFC 9110 section 5.5).
            if b"\r" in value or b"\n" in value or b"\0" in value:
                raise RuntimeError(
                    f"ASGI app sent the answer field {name!r} with a CR, LF or NUL in its "
                    "value: remove the control characters (or percent-encode the value)"
                )
            lower = name.lower()
            if lower == b"content-length":
                # What the framing below relies on must be what the client reads.
                if not value.isdigit() or self.length_left >= 0:
                    raise RuntimeError(
                        f"ASGI app sent content-length {value!r}"
                        + (" twice" if self.length_left >= 0 else "")
                        + ": send one, as decimal digits only"
                    )
                self.length_left = int(value)
            elif lower == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue  # written below, once, with what the protocol decided
            elif lower == b"transfer-encoding":
                continue  # the protocol decides the framing
            head.append(b"%s: %s\r\n" % (name, value))
        return head

    def _frame(self, body: bytes, more: bool) -> bytes:
        """``body`` as it goes on the wire, after the head if it has not been written yet."""
        head = self.head
        if not head:
            return self._body(body, more)
        framing = b""
        if self._bodiless():
            # HEAD announces the length a GET would get; 1xx, 204 and 304 announce none.
            if self.head_request and self.length_left < 0 and not more:
                framing = b"content-length: %d\r\n" % len(body)
        elif self.length_left < 0:
            if not more:
                framing = b"content-length: %d\r\n" % len(body)
                self.length_left = len(body)
            elif self.scope["http_version"] == "1.1":
                framing = b"transfer-encoding: chunked\r\n"
                self.chunked = True
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the body is the close
        if not self.body_complete:
            # The rest of the body could not be told from a next request: the connection
            # closes after this answer, and the client is told so (RFC 9110 section 10.1.1).
            self.keep_alive = False
        if not self.keep_alive or self.protocol.closing:
            end = b"connection: close\r\n\r\n"
        elif self.scope["http_version"] == "1.0":
            end = b"connection: keep-alive\r\n\r\n"
        else:
            end = b"\r\n"
        # Last, as it may refuse the body: the head then stays unwritten and whole, so a
        # failing app still gets its client a 500.
        data = self._body(body, more)
        self.head = []
        head += (framing, end, data)
        return b"".join(head)

    def _flush_head(self) -> None:
        if self.head and not self.protocol.closed:
            self.protocol.write(self._frame(b"", True))

    def _bodiless(self) -> bool:
        status = self.status
        return self.head_request or status < 200 or status in _NO_BODY_STATUSES

    def _body(self, body: bytes, more: bool) -> bytes:
        if self._bodiless():
            return b""
        if self.chunked:
            if body:
                body = b"%x\r\n%s\r\n" % (len(body), body)
            return body if more else body + _LAST_CHUNK
        left = self.length_left
        if left >= 0:
            # Both checked before anything changes: a refused body leaves no trace.
            if len(body) > left:
                raise RuntimeError("ASGI app sent more body than its content-length header")
            if not more and len(body) < left:
                raise RuntimeError("ASGI app ended its answer short of its content-length header")
            self.length_left = left - len(body)
        return body


class HttpProtocol(asyncio.Protocol):
    """One client connection, served to uvicorn's loaded ASGI app.

    :param config: uvicorn's config (``loaded_app``, ``timeout_keep_alive``, ``root_path``,
        ``limit_concurrency``).
    :param server_state: uvicorn's shared state (connections, tasks, request count, default
        headers).
    :param app_state: the lifespan state, copied into each request's scope as ``state``.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.root_path = config.root_path
        self.keep_alive_timeout = config.timeout_keep_alive
        self.limit = config.limit_concurrency
        self.transport: asyncio.Transport | None = None
        self.parser: Any = None
        self.closed = False  # by the client or by this side: the app's requests have ended
        self.write_paused = False
        self.reading_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.current: _Request | None = None  # the request the app is answering
        self.parsing: _Request | None = None  # the request whose bytes are arriving
        self.waiting: deque[_Request] = deque()  # pipelined, waiting for ``current``
        self.closing = False  # shutting down: close once the current answer is out
        self.lingering = False  # the last answer is written: what comes is dropped
        self.linger_left = 0  # bytes still dropped before the connection closes anyway
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []  # never a scope's list once its head ended
        self.hosts = 0  # Host headers in the request being parsed
        self.marks = 0  # parser events that show progress: a head or body began or ended
        self.stalled = 0  # bytes of the reads since the last such event

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.parser = httptools.HttpRequestParser(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server_state.connections.discard(self)
        self._stop_timer()
        self._wake_all()
        # Requests refer back to this protocol: dropping them here frees the connection by
        # reference counting, without waiting for the cyclic collector.
        self.current = self.parsing = None
        self.waiting.clear()
        self.parser = None  # it refers back to this protocol too

    def eof_received(self) -> None:
        """The client closed its side: taken as a hang-up, as most clients close both at once.

        Returning ``None`` lets the transport close, so a request in progress sees
        ``http.disconnect`` (a half-closing client gets no answer; HTTP/1.1 clients do not),
        and a lingering connection ends.
        """

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._discard(data)
            return
        # No restart of the idle clock here: a head trickling in must still end in time.
        marks = self.marks
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Served as plain HTTP; what follows the upgrade request is another protocol.
            self.closing = True
            self._pause_reading()
            if self.parsing is not None:
                self.parsing.finish_body()
                self.parsing = None
        except httptools.HttpParserError as exc:
            refused = exc.__context__  # httptools keeps a callback's own exception there
            if isinstance(refused, _Refused):
                self._reject(refused.status, refused.text)
            else:
                self._reject(400, f"Invalid HTTP request: {exc}")
        else:
            if self.marks == marks:
                # Only head, trailer or chunk framing bytes came, which httptools keeps.
                self.stalled += len(data)
                if self.stalled > _HEAD_LIMIT:
                    self._reject(
                        431,
                        f"Request head or trailer section over {_HEAD_LIMIT // 1024} KiB:"
                        " send fewer or shorter header fields",
                    )
            elif self.stalled:
                self.stalled = 0

    def _reject(self, status: int, text: str) -> None:
        """The request being parsed cannot be served: answer ``status`` if that is still
        possible, else end the connection after (or instead of) the answer in progress."""
        current = self.current
        if current is None or (self.parsing is current and not current.started):
            # The app (if it runs) was waiting for this body: it sees the disconnect.
            self._refuse(status, text)
        elif self.parsing is current:
            self._abort()  # its body broke mid-answer: nothing sensible can follow
        else:
            # A bad pipelined request: the answer being written ends the connection.
            self.closing = True
            self._pause_reading()
            self.waiting.clear()

    def shutdown(self) -> None:
        """uvicorn is stopping: close now if idle, else once the current answer is out."""
        self.closing = True
        if self.current is None:
            self._close()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.marks += 1
        self.url = b""
        if self.headers:  # trailer fields of the request before
            self.headers = []
        self.hosts = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if value and value[-1] in _WHITESPACE:  # httptools keeps trailing whitespace
            value = value.rstrip(b" \t")
        name = name.lower()
        if name == b"host":
            self.hosts += 1
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.marks += 1
        headers = self.headers
        # Fields parsed from now on are trailers: they go to a list no scope holds.
        self.headers = []
        current = self.current
        if current is not None and len(self.waiting) >= _PIPELINE_DEPTH:
            # Read and dropped; the last request kept says the connection closes after it.
            self.waiting[-1].keep_alive = False
            self.parsing = None
            return
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1":
            if self.hosts != 1:
                raise _Refused(400, "Invalid HTTP request: send exactly one Host header field")
        elif version != "1.0":  # httptools takes 0.9 and 2.0 as well
            raise _Refused(
                505, f"HTTP/{version} is not supported: send the request in HTTP/1.1 (or 1.0)"
            )
        raw = self.url
        query = b""
        if b"?" in raw or b"#" in raw or not raw.startswith(b"/"):
            parsed = httptools.parse_url(raw)
            raw, query = parsed.path, parsed.query or b""
        path = raw.decode("ascii")
        if "%" in path:
            path = unquote(path)
        root = self.root_path
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": parser.get_method().decode("ascii"),
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": root.encode("ascii") + raw if root else raw,
            "query_string": query,
            "headers": headers,
            "state": self.app_state.copy(),
        }
        request = _Request(self, scope, parser.should_keep_alive())
        for name, value in headers:
            if name == b"transfer-encoding":
                if value.lower() != b"chunked":
                    _check_codings(value)
                if version == "1.0":
                    # RFC 9112 section 6.1: HTTP/1.0 framing with Transfer-Encoding is faulty
                    # (an HTTP/1.0 hop before this one may have read it otherwise), so nothing
                    # after this request may be taken from the connection.
                    request.keep_alive = False
            elif name == b"expect" and version == "1.1" and value.lower() == b"100-continue":
                # Not for HTTP/1.0: its client would take the 100 for the answer.
                request.expects_continue = True
        self.parsing = request
        if current is None:
            self._start(request)
        else:
            self.waiting.append(request)
            self._pause_reading()  # one request ahead is enough

    def on_body(self, body: bytes) -> None:
        self.marks += 1
        request = self.parsing
        if request is not None:
            request.feed(body)
            if request.body_size > _BODY_HIGH_WATER:
                self._pause_reading()

    def on_message_complete(self) -> None:
        self.marks += 1
        request = self.parsing
        if request is not None:
            self.parsing = None
            request.finish_body()

    # -- requests ------------------------------------------------------------------------

    def _start(self, request: _Request) -> None:
        self.current = request
        state = self.server_state
        limit = self.limit
        if limit is not None and (len(state.connections) > limit or len(state.tasks) >= limit):
            self._refuse(503, "Service Unavailable")
            return
        task = self.loop.create_task(self._run(request))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    async def _run(self, request: _Request) -> None:
        try:
            await self.app(request.scope, request.receive, request.send)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                _log.error("the proxy app failed on %s", request.scope["path"], exc_info=exc)
            if not request.answered:
                self._fail(request)
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            return
        if not request.answered and not self.closed:
            _log.error(
                "the proxy app ended %s without %s",
                request.scope["path"],
                "finishing its answer" if request.started else "answering",
            )
            self._fail(request)

    def _fail(self, request: _Request) -> None:
        """The app failed ``request``: a 500 if none of its answer was written, else a close."""
        if not request.started or request.head:
            # The head waits for the first body message or the next turn of the loop.
            self._refuse(500, "Internal Server Error")
        else:
            self._abort()  # the head went out: all the client can learn is the close

    def answered(self, request: _Request) -> None:
        """``request``'s answer is out: serve the next one, or idle, or close."""
        self.server_state.total_requests += 1
        self.current = None
        request._wake()  # a receive waiting for the disconnect returns now
        if self.closed:
            return
        if not request.keep_alive or self.closing:
            # keep_alive is off too when the answer began before the body ended (_frame).
            self._close(linger=True)
            return
        waiting = self.waiting
        if waiting:
            self._start(waiting.popleft())
            if waiting or self.closed:
                return
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if self.current is None:
            self._idle()

    def resume_reading_for(self, request: _Request) -> None:
        """Read the socket again once the app took ``request``'s buffered body.

        Shutting down does not stop it: the body of the request being answered still has
        to come in (no request after it can have been read yet).
        """
        if (
            self.reading_paused
            and not request.body_complete
            and request is self.current
            and request.body_size <= _BODY_HIGH_WATER
            and not self.closed
        ):
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    # -- writing -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write ``data`` unless the connection is gone."""
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    async def drain(self) -> None:
        """Wait until the transport's buffer drained (or the connection closed)."""
        if self.write_paused and not self.closed:
            waiter = self.drain_waiter
            if waiter is None or waiter.done():
                waiter = self.drain_waiter = self.loop.create_future()
            await waiter

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- helpers -------------------------------------------------------------------------

    def _refuse(self, status: int, text: str) -> None:
        """Answer ``status`` with ``text`` and close: the server's own errors."""
        if self.closed:
            return
        self.transport.write(  # type: ignore[union-attr]
            _plain_answer(status, text, self.server_state.default_headers)
        )
        self._close(linger=True)

    def _abort(self) -> None:
        """Close without a word: an answer already on its way cannot be ended properly."""
        self._close()

    def _close(self, *, linger: bool = False) -> None:
        """Close from this side; the app's request ends now, whatever it writes goes nowhere.

        The transport may take a while to flush what it holds (a client that reads slowly),
        so ``closed`` is set here rather than left to :meth:`connection_lost`: nothing the
        app sends later may follow the last answer on the wire.

        :param linger: an answer was just written: close only the sending side, and read
            and drop what the client still sends (see :meth:`_linger`).
        """
        if self.closed:
            return
        self.closed = True
        self.waiting.clear()
        self._wake_all()
        if linger:
            self._linger()
        else:
            self.transport.close()  # type: ignore[union-attr]

    def _linger(self) -> None:
        """Half-close after the last answer, and read until the client closes or a bound.

        Closing a socket with request bytes unread, or that are still coming, makes the
        kernel reset the connection, and the reset destroys whatever of the answer the
        client has not read yet (RFC 9112 section 9.6): a client sending a body the server
        answered early would often lose that very answer.
        """
        transport: asyncio.Transport = self.transport  # type: ignore[assignment]
        if transport.is_closing():
            return  # the client hung up first
        if transport.can_write_eof():  # not under TLS: the client then ends on its own
            transport.write_eof()  # sent once the answer has been flushed
        self.lingering = True
        self.linger_left = _LINGER_BYTES
        self._stop_timer()
        self.timer = self.loop.call_later(_LINGER_SECONDS, self._linger_timeout)
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def _discard(self, data: bytes) -> None:
        """Drop what came after the last answer, up to ``_LINGER_BYTES``."""
        self.linger_left -= len(data)
        if self.linger_left < 0:
            self.transport.close()  # type: ignore[union-attr]

    def _linger_timeout(self) -> None:
        transport: asyncio.Transport = self.transport  # type: ignore[assignment]
        if transport.get_write_buffer_size():
            # The answer is still leaving (a slow reader): the client's time starts after.
            self.timer = self.loop.call_later(_LINGER_SECONDS, self._linger_timeout)
        else:
            self.timer = None
            transport.close()

    def _wake_all(self) -> None:
        """Wake every ``receive`` and ``send`` waiting on this connection."""
        if self.current is not None:
            self.current._wake()
        if self.parsing is not None:
            self.parsing._wake()
        self._wake_drain()

    def _pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _idle(self) -> None:
        """Start the idle clock: the connection closes if no request arrives in time.

        One timer per connection, re-armed only when it fires early, rather than one timer
        made and cancelled per request.
        """
        self.idle_since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.keep_alive_timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self.timer = None
        if self.current is not None or self.closed:
            return  # busy: the clock starts again after the answer
        left = self.idle_since + self.keep_alive_timeout - self.loop.time()
        if left > 0.001:
            self.timer = self.loop.call_later(left, self._idle_timeout)
        else:
            self._close()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _check_codings(value: bytes) -> None:
    """Refuse a ``Transfer-Encoding`` value naming a coding besides chunked.

    httptools decodes chunked only, and leaves a body gzip-coded (say) for the app to take as
    plain; it has already refused chunked anywhere but last, or twice.
    """
    for coding in value.split(b","):
        coding = coding.strip(b" \t").lower()
        if coding and coding != b"chunked":
            raise _Refused(
                501,
                f"Transfer-Encoding {value[:100].decode('latin-1')!r} is not supported: send "
                "the body with chunked alone or with a Content-Length (compress it with "
                "Content-Encoding instead)",
            )


def _check_name(name: bytes) -> None:
    """Refuse an answer field name that is not a token; remember the good ones."""
    if not isinstance(name, bytes) or _TOKEN.fullmatch(name) is None:
        raise RuntimeError(
            f"ASGI app sent the answer field name {name!r}: a name is one or more letters, "
            "digits or !#$%&'*+-.^_`|~ (no spaces, colons or control characters)"
        )
    if len(_CHECKED_NAMES) < _CHECKED_NAMES_MAX:
        _CHECKED_NAMES.add(name)


def _address(value: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a socket address, ``None`` for other families (Unix sockets)."""
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
