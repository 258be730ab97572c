"""ASGI plumbing shared by the proxy's endpoints: types, request bodies, JSON answers.

No framework: an endpoint is a coroutine taking an :class:`Exchange`. Header tuples that never
change are built once at import, so answering costs one ``send`` per message and no parsing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from promptdock.dispatch._openai_wire import compact_json
from promptdock.proxy.errors import ApiError

__all__ = [
    "JSON_HEADER",
    "Exchange",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "dumps",
    "header",
    "read_body",
    "send_json",
]

Scope = MutableMapping[str, Any]
"""The ASGI connection scope (``type``, ``method``, ``path``, ``headers``...)."""

Message = MutableMapping[str, Any]
"""One ASGI event."""

Receive = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""

Send = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""

Headers = Sequence[tuple[bytes, bytes]]
"""Response headers as ASGI wants them: lower-case names, bytes."""

JSON_HEADER = (b"content-type", b"application/json")
"""The ``Content-Type`` of every JSON answer."""

_CLOSE = (b"connection", b"close")


class Exchange:
    """One HTTP request being answered, plus what the access log reports about it.

    Endpoints fill :attr:`model`, :attr:`prompt` and the rest as they learn them; the app
    sets :attr:`status` when the answer starts.
    """

    __slots__ = (
        "model",
        "prompt_id",
        "prompt_version",
        "receive",
        "scope",
        "send",
        "sha",
        "source",
        "started",
        "status",
        "stream",
        "team",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.started = started
        self.status = 0
        self.team: str | None = None
        self.model: str | None = None
        self.prompt_id: str | None = None
        self.prompt_version: int | None = None
        self.source: str | None = None
        self.sha: str | None = None
        self.stream = False

    async def start(self, status: int, headers: Headers) -> None:
        """Send the status line and headers."""
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def respond(self, status: int, body: bytes, headers: Headers = ()) -> None:
        """Send a whole JSON answer: headers, then ``body`` in one message."""
        await self.start(status, [JSON_HEADER, (b"content-length", b"%d" % len(body)), *headers])
        await self.send({"type": "http.response.body", "body": body})

    async def respond_json(self, status: int, value: Any, headers: Headers = ()) -> None:
        """:meth:`respond` with ``value`` serialised as JSON."""
        await self.respond(status, dumps(value), headers)

    async def respond_error(self, error: ApiError) -> None:
        """Answer with ``error`` in the OpenAI shape."""
        headers = list(error.headers)
        if error.close:
            headers.append(_CLOSE)
        await self.respond(error.status, error.body(), headers)


_encode = compact_json(allow_nan=True)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return _encode(value).encode()


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def read_body(exchange: Exchange, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes.

    :raises ApiError: 413 when the body (announced or received) is larger than ``limit``;
        400 when the client went away before sending all of it.
    """
    length = header(exchange.scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    message = await exchange.receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if message["type"] == "http.disconnect":
            raise _gone()
        if len(body) > limit:
            raise _too_large(limit)
        return body
    parts = bytearray(body)
    while message.get("more_body"):
        message = await exchange.receive()
        if message["type"] == "http.disconnect":
            raise _gone()
        parts += message.get("body", b"")
        if len(parts) > limit:
            raise _too_large(limit)
    return bytes(parts)


async def send_json(send: Send, status: int, body: bytes) -> None:
    """Answer ``body`` (JSON bytes) with ``status`` on a bare ASGI ``send``."""
    headers = [JSON_HEADER, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> ApiError:
    # The rest of the body is never read, so the connection cannot be reused.
    return ApiError(
        413,
        f"the request body is larger than the proxy accepts ({limit} bytes); send less, or "
        f"raise general_settings.max_request_size_mb in the proxy's config",
        code="request_too_large",
        close=True,
    )


def _gone() -> ApiError:
    return ApiError(400, "the client closed the connection before sending the whole body")
