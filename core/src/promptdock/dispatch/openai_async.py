"""The async OpenAI-compatible dispatcher: ``POST {api_base}/chat/completions`` over aiohttp.

It implements the ``adispatch`` hook, so ``PromptDock.acompletion()`` and the proxy call
upstreams without a worker thread per request. It behaves like the sync dispatcher
(:mod:`promptdock.dispatch.openai_http`): both build requests, retry and word their errors
with :mod:`promptdock.dispatch._openai_wire`, so they send the same URL, headers and body,
retry connection failures and 408, 409, 429 and 5xx the same way (honouring
``Retry-After``), and raise the same messages, never holding the API key.

Connections are pooled in one ``aiohttp.ClientSession`` per event loop. The proxy opens it at
start-up with :func:`open_session` and closes it at shutdown with :func:`close_session`. Other
async programs need do nothing: the session is made on first use and closed when
``asyncio.run()`` finishes (it is tied to the loop's async-generator shutdown).

aiohttp is the ``[proxy]`` extra. It is imported on the first call, not with this module, and
when it is missing the hook answers ``None``, so promptdock falls back to the sync dispatcher
in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
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
    import aiohttp

__all__ = [
    "POOL_LIMIT",
    "adispatch",
    "close_session",
    "open_session",
]

# Imported from pluggy rather than ``promptdock`` so that importing this module never triggers
# the package ``__init__`` while the plugin manager is being built.
hookimpl = pluggy.HookimplMarker("promptdock")
"""Marks this module's hook implementations (same marker as ``promptdock.hookimpl``)."""

POOL_LIMIT = 256
"""Most connections one session keeps open at once, over all upstream hosts."""

# Indirection that tests replace to skip real waits.
_sleep = asyncio.sleep

_available: bool | None = None


def _aiohttp_installed() -> bool:
    global _available
    if _available is None:
        try:
            import aiohttp  # noqa: F401 - only whether it imports matters here
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
        that yields each chunk as it arrives; ``None`` when aiohttp is not installed.
    :raises DispatchError: when awaited, as the sync dispatcher raises it.
    :raises UpstreamTimeoutError: the server did not answer within the timeout.
    """
    if not _aiohttp_installed():
        return None
    return _dispatch(request)


async def _dispatch(request: CompletionRequest) -> ModelResponse | AsyncIterator[StreamChunk]:
    call = Call.build(request)
    response = await _send(call)
    if call.stream:
        return _stream_chunks(response, call)
    return await _completion(response, call)


# -- sessions ----------------------------------------------------------------------------


class _Pool:
    """A session and the async generator whose shutdown closes it with its loop."""

    __slots__ = ("keeper", "session")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.keeper = _keep(session)


async def _keep(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    # An async generator started on a loop is closed by that loop's shutdown_asyncgens(),
    # which asyncio.run() calls: the session is then closed on the loop it belongs to.
    try:
        yield
    finally:
        await session.close()


_pools: dict[asyncio.AbstractEventLoop, _Pool] = {}


async def open_session() -> aiohttp.ClientSession:
    """The pooled session of the running event loop, made now if there is none.

    The proxy calls it at start-up so the first request does not pay for it.
    """
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None or pool.session.closed:
        pool = await _new_pool(loop)
    return pool.session


async def _new_pool(loop: asyncio.AbstractEventLoop) -> _Pool:
    import aiohttp

    for other in [other for other in _pools if other.is_closed()]:
        # Its loop ended without shutting its async generators down; nothing can be awaited
        # on it any more, so only the reference is dropped.
        del _pools[other]
    connector = aiohttp.TCPConnector(limit=POOL_LIMIT, ttl_dns_cache=300)
    session = aiohttp.ClientSession(
        connector=connector, headers={"User-Agent": user_agent()}, auto_decompress=True
    )
    pool = _pools[loop] = _Pool(session)
    await pool.keeper.__anext__()
    return pool


async def close_session() -> None:
    """Close the running loop's session and its connections (the proxy calls it at shutdown)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.keeper.aclose()


def _forget_sessions() -> None:
    # A forked child must not share its parent's sockets: start from no sessions at all.
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sessions)


_timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}


def _timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    """The timeout object for ``(connect, read)`` seconds, made once per distinct pair."""
    timeout = _timeouts.get((connect, read))
    if timeout is None:
        import aiohttp

        if len(_timeouts) > 64:  # per-request timeouts could otherwise grow this forever
            _timeouts.clear()
        # Like the sync dispatcher: the timeout bounds each wait for data, not the whole
        # answer, so a long stream that keeps sending is never cut off.
        timeout = _timeouts[(connect, read)] = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, sock_read=read
        )
    return timeout


# -- sending, with retries ---------------------------------------------------------------


async def _send(call: Call) -> aiohttp.ClientResponse:
    import aiohttp

    session = await open_session()
    timeout = _timeout(*call.timeout)
    attempt = 0
    while True:
        failure: Failure | None = None
        reason = ""
        try:
            response = await session.post(
                call.url,
                data=call.data,
                headers=call.headers,
                timeout=timeout,
                # A redirected POST may turn into a GET; make the user fix api_base instead.
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            failure, reason = _classify(exc)
        # Raised outside the ``except`` so aiohttp's exception (whose request info holds the
        # Authorization header) is not chained to our error.
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
            response.release()
            await _sleep(wait)
            attempt += 1
            continue
        body = await _error_body(response)
        raise call.status_failure(status, body, response.headers.get("Location"), attempt)


def _classify(exc: BaseException) -> tuple[Failure, str]:
    """What kind of failure an aiohttp (or socket) exception is, and its cause."""
    import aiohttp

    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Failure.CONNECT_TIMEOUT, ""
    if isinstance(exc, TimeoutError):
        return Failure.READ_TIMEOUT, ""
    if isinstance(exc, aiohttp.ClientSSLError):
        return Failure.TLS, _reason(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure.UNREACHABLE, _reason(exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return Failure.HUNG_UP, _reason(exc)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return Failure.BAD_URL, _reason(exc)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return Failure.BROKEN, _reason(exc)
    return Failure.OTHER, _reason(exc)


def _reason(exc: BaseException) -> str:
    """A short cause: the OS error of a failed connection, else the exception's own text."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    return str(exc) or type(exc).__name__


async def _error_body(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.content.read(ERROR_BODY_LIMIT)
    except Exception:  # the body is only decoration for the error we are about to raise
        return b""
    finally:
        response.close()


# -- reading answers ---------------------------------------------------------------------


async def _completion(response: aiohttp.ClientResponse, call: Call) -> ModelResponse:
    import aiohttp

    failure: DispatchError | None = None
    try:
        raw = await response.read()
    except TimeoutError:
        failure = call.unfinished_answer()
    except (aiohttp.ClientError, OSError) as exc:
        failure = call.failure(Failure.BROKEN, _reason(exc))
    if failure is not None:
        response.close()
        raise failure
    return call.completion(raw, response.status)


async def _stream_chunks(
    response: aiohttp.ClientResponse, call: Call
) -> AsyncGenerator[StreamChunk, None]:
    """Yield each ``data:`` event as a chunk, as soon as it arrives, until ``[DONE]``."""
    import aiohttp

    finished = False
    try:
        if response.content_type == "application/json":
            # The server ignored ``stream`` or reported an error as a plain JSON answer.
            raise call.json_instead_of_events(await _error_body(response), response.status)
        async for data in _sse_data(response.content):
            if data == DONE:
                await _drain(response)
                return
            chunk = call.chunk(data)
            finished = finished or is_final(chunk)
            yield chunk
    except DispatchError:
        raise  # already ours; an UpstreamTimeoutError must not be caught as a TimeoutError
    except TimeoutError:
        failure = call.stream_silent()
    except (aiohttp.ClientError, OSError) as exc:
        failure = call.stream_broken(_reason(exc))
    else:
        if finished:
            return
        failure = call.stream_unfinished()
    finally:
        # A no-op after _drain released the connection to the pool.
        response.close()
    raise failure


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read the little that follows ``[DONE]`` so the connection can return to the pool.

    A server normally ends the body right after ``[DONE]``; this is bounded in time and size
    because a server may also keep it open, and then the connection is closed instead.
    """
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            for _ in range(4):
                if not await response.content.readany():
                    response.release()
                    return
    except Exception:  # noqa: S110 - the stream is complete; closing cleans up whatever failed
        pass


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The payload of each ``data:`` line of a server-sent event stream, as it arrives."""
    lines = EventLines()
    while block := await content.readany():
        for data in lines.feed(block):
            yield data
    for data in lines.end():
        yield data
