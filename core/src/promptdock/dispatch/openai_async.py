"""The async OpenAI-compatible dispatcher: ``POST {api_base}/chat/completions`` from asyncio.

It implements the ``adispatch`` hook, so ``PromptDock.acompletion()`` and the proxy call
upstreams without a worker thread per request. It behaves like the sync dispatcher
(:mod:`promptdock.dispatch.openai_http`): both build requests, retry and word their errors
with :mod:`promptdock.dispatch._openai_wire`, so they send the same URL, headers and body,
retry connection failures and 408, 409, 429 and 5xx the same way (honouring
``Retry-After``), and raise the same messages, never holding the API key.

Bytes move through :mod:`promptdock.dispatch._async_http`, a small pooled HTTP/1.1 client
parsing with httptools (measured at a fifth of aiohttp's CPU per call). Connections are
pooled in one :class:`~promptdock.dispatch._async_http.ConnectionPool` per event loop. The
proxy opens it at start-up with :func:`open_session` and closes it at shutdown with
:func:`close_session`. Other async programs need do nothing: the pool is made on first use
and closed when ``asyncio.run()`` finishes (it is tied to the loop's async-generator
shutdown).

httptools comes with the ``[proxy]`` extra. It is imported on the first call, not with this
module, and when it is missing the hook answers ``None``, so promptdock falls back to the
sync dispatcher in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

import pluggy

from promptdock.dispatch._openai_wire import (
    DONE,
    DRAIN_TIMEOUT,
    ERROR_BODY_LIMIT,
    RETRY_STATUSES,
    Call,
    EventLines,
    Failure,
    is_final,
    retry_delay,
    user_agent,
)
from promptdock.errors import DispatchError
from promptdock.models import CompletionRequest
from promptdock.response import ModelResponse, StreamChunk

if TYPE_CHECKING:
    from promptdock.dispatch._async_http import ConnectionPool, Response

__all__ = [
    "adispatch",
    "close_session",
    "open_session",
]

# Imported from pluggy rather than ``promptdock`` so that importing this module never triggers
# the package ``__init__`` while the plugin manager is being built.
hookimpl = pluggy.HookimplMarker("promptdock")
"""Marks this module's hook implementations (same marker as ``promptdock.hookimpl``)."""

# Indirection that tests replace to skip real waits.
_sleep = asyncio.sleep

_available: bool | None = None


def _client_installed() -> bool:
    global _available
    if _available is None:
        try:
            import httptools  # noqa: F401 - only whether it imports matters here
        except ImportError:
            _available = False
        else:
            _available = True
    return _available


# -- the hook ----------------------------------------------------------------------------


@hookimpl(trylast=True)
def adispatch(
    request: CompletionRequest,
) -> Coroutine[Any, Any, ModelResponse | AsyncIterator[StreamChunk]] | None:
    """Send ``request`` to an OpenAI-compatible server from async code.

    Registered ``trylast``, like the sync dispatcher: the mock and any third-party async
    dispatcher answer first.

    :returns: a coroutine resolving to the :class:`~promptdock.ModelResponse`, or, when
        ``request.stream`` is true, to an async iterator of ``chat.completion.chunk`` dicts
        that yields each chunk as it arrives; ``None`` when httptools (the ``[proxy]``
        extra) is not installed.
    :raises DispatchError: when awaited, as the sync dispatcher raises it.
    :raises UpstreamTimeoutError: the server did not answer within the timeout.
    """
    if not _client_installed():
        return None
    return _dispatch(request)


async def _dispatch(request: CompletionRequest) -> ModelResponse | AsyncIterator[StreamChunk]:
    call = Call.build(request)
    response = await _send(call)
    if call.stream:
        return _Stream(response, call)
    return await _completion(response, call)


# -- sessions ----------------------------------------------------------------------------


class _Session:
    """A connection pool and the async generator whose shutdown closes it with its loop."""

    __slots__ = ("keeper", "pool")

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.keeper = _keep(pool)


async def _keep(pool: ConnectionPool) -> AsyncGenerator[None, None]:
    # An async generator started on a loop is closed by that loop's shutdown_asyncgens(),
    # which asyncio.run() calls: the pool is then closed on the loop it belongs to.
    try:
        yield
    finally:
        await pool.close()


_sessions: dict[asyncio.AbstractEventLoop, _Session] = {}


async def open_session() -> ConnectionPool:
    """The connection pool of the running event loop, made now if there is none.

    The proxy calls it at start-up so the first request does not pay for it.
    """
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.pool.closed:
        session = await _new_session(loop)
    return session.pool


async def _new_session(loop: asyncio.AbstractEventLoop) -> _Session:
    from promptdock.dispatch._async_http import ConnectionPool

    for other in [other for other in _sessions if other.is_closed()]:
        # Its loop ended without shutting its async generators down; nothing can be awaited
        # on it any more, so only the reference is dropped.
        del _sessions[other]
    session = _sessions[loop] = _Session(ConnectionPool(user_agent=user_agent()))
    await session.keeper.__anext__()
    return session


async def close_session() -> None:
    """Close the running loop's pool and its connections (the proxy calls it at shutdown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None:
        await session.keeper.aclose()


def _forget_sessions() -> None:
    # A forked child must not share its parent's sockets: start from no pools at all.
    _sessions.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sessions)


# -- sending, with retries ---------------------------------------------------------------


async def _send(call: Call) -> Response:
    from promptdock.dispatch import _async_http as http

    pool = await open_session()
    connect_timeout, read_timeout = call.timeout
    attempt = 0
    while True:
        failure: Failure | None = None
        reason = ""
        try:
            # Redirects are not followed: a redirected POST may turn into a GET; the error
            # names the Location so the user fixes api_base instead.
            response = await pool.post(
                call.url,
                call.data,
                call.headers,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            )
        except (OSError, TimeoutError, ValueError, http.ProtocolError) as exc:
            failure, reason = _classify(exc)
        # Raised outside the ``except`` so the transport's exception is not chained to ours.
        if failure is not None:
            if failure.retryable and attempt < call.max_retries:
                await _sleep(retry_delay(attempt, {}))
                attempt += 1
                continue
            raise call.failure(failure, reason, attempt, ca_variable="SSL_CERT_FILE")
        status = response.status
        if status < 300:
            return response
        if status in RETRY_STATUSES and attempt < call.max_retries:
            wait = retry_delay(attempt, response.headers)
            response.close()  # the error body is not worth reading to keep the connection
            await _sleep(wait)
            attempt += 1
            continue
        body = await _error_body(response)
        raise call.status_failure(status, body, response.headers.get("Location"), attempt)


def _classify(exc: BaseException) -> tuple[Failure, str]:
    """What kind of failure a client (or socket) exception is, and its cause."""
    from promptdock.dispatch import _async_http as http

    if isinstance(exc, http.ConnectTimeout):
        return Failure.CONNECT_TIMEOUT, ""
    if isinstance(exc, TimeoutError):
        return Failure.READ_TIMEOUT, ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure.TLS, f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        # OpenSSL's reason code (WRONG_VERSION_NUMBER), as words.
        return Failure.TLS, (exc.reason or str(exc)).lower().replace("_", " ")
    if isinstance(exc, http.CannotConnect):
        return Failure.UNREACHABLE, _reason(exc)
    if isinstance(exc, http.ServerHungUp | ConnectionResetError):
        return Failure.HUNG_UP, _reason(exc)
    if isinstance(exc, http.InvalidURL):
        return Failure.BAD_URL, _reason(exc)
    if isinstance(exc, http.ProtocolError | OSError):
        return Failure.BROKEN, _reason(exc)
    return Failure.OTHER, _reason(exc)


def _reason(exc: BaseException) -> str:
    """A short cause: the OS error of a failed connection, else the exception's own text."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    if isinstance(os_error, OSError):
        return str(os_error) or type(os_error).__name__
    return str(exc) or type(exc).__name__


async def _error_body(response: Response) -> bytes:
    try:
        return await response.read(ERROR_BODY_LIMIT)
    except Exception:  # the body is only decoration for the error we are about to raise
        return b""
    finally:
        response.close()


# -- reading answers ---------------------------------------------------------------------


async def _completion(response: Response, call: Call) -> ModelResponse:
    from promptdock.dispatch._async_http import ProtocolError

    failure: DispatchError | None = None
    try:
        raw = await response.read()
    except TimeoutError:
        failure = call.unfinished_answer()
    except (OSError, ProtocolError) as exc:
        failure = call.failure(Failure.BROKEN, _reason(exc))
    except BaseException:
        response.close()
        raise
    if failure is not None:
        response.close()
        raise failure
    response.release()
    return call.completion(raw, response.status)


class _Stream:
    """The chunks of a streamed answer, as they arrive (``async for``); :meth:`aclose` or
    the end of the stream frees its connection.

    Not a bare async generator: closing one that was never started runs none of its code,
    and a caller that gives up before the first chunk (the proxy, when its client hangs up)
    must still free the connection.
    """

    __slots__ = ("_chunks", "_loop", "_response")

    def __init__(self, response: Response, call: Call) -> None:
        self._loop = asyncio.get_running_loop()
        self._response = response
        self._chunks = _stream_chunks(response, call)

    def __aiter__(self) -> _Stream:
        return self

    def __anext__(self) -> Awaitable[StreamChunk]:
        return self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop reading; the connection is closed unless the answer was read to its end."""
        try:
            await self._chunks.aclose()
        finally:
            self._response.close()

    def __del__(self) -> None:
        # Dropped without aclose(): free the connection (from the loop's own thread, as the
        # last reference may go in any thread).
        if not self._response.finished and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._response.close)


async def _stream_chunks(response: Response, call: Call) -> AsyncGenerator[StreamChunk, None]:
    """Yield each ``data:`` event as a chunk, as soon as it arrives, until ``[DONE]``."""
    from promptdock.dispatch._async_http import ProtocolError

    finished = False
    try:
        if response.content_type == "application/json":
            # The server ignored ``stream`` or reported an error as a plain JSON answer.
            raise call.json_instead_of_events(await _error_body(response), response.status)
        # The event lines are split here, not in a nested async generator: one left
        # suspended at [DONE] would cost the loop a task to finalize it, per stream.
        lines = EventLines()
        while True:
            block = await response.read_some()
            for data in lines.feed(block) if block else lines.end():
                if data == DONE:
                    await _drain(response)
                    return
                chunk = call.chunk(data)
                finished = finished or is_final(chunk)
                yield chunk
            if not block:
                break
    except DispatchError:
        raise  # already ours; an UpstreamTimeoutError must not be caught as a TimeoutError
    except TimeoutError:
        failure = call.stream_silent()
    except (OSError, ProtocolError) as exc:
        failure = call.stream_broken(_reason(exc))
    else:
        if finished:
            return
        failure = call.stream_unfinished()
    finally:
        # A no-op after _drain released the connection to the pool.
        response.close()
    raise failure


async def _drain(response: Response) -> None:
    """Read the little that follows ``[DONE]`` so the connection can return to the pool.

    A server normally ends the body right after ``[DONE]``; this is bounded in time and size
    because a server may also keep it open, and then the connection is closed instead.
    """
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            for _ in range(4):
                if not await response.read_some():
                    response.release()
                    return
    except Exception:  # noqa: S110 - the stream is complete; closing cleans up whatever failed
        pass
