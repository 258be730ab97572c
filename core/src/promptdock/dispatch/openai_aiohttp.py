"""The async OpenAI-compatible dispatcher: ``POST {api_base}/chat/completions`` over aiohttp.

It implements the ``adispatch`` hook, so ``PromptDock.acompletion()`` and the proxy call
upstreams without a worker thread per request. It behaves like the sync dispatcher
(:mod:`promptdock.dispatch.openai_http`), whose request building, retry policy and error
texts it shares: the same URL, headers and body; retries on connection failures and on 408,
409, 429 and 5xx, honouring ``Retry-After``; the same messages, never holding the API key.

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
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

import pluggy

# The sync dispatcher's request building and message helpers are shared, so the two
# dispatchers cannot drift apart in what they send or in what their errors say.
from promptdock.dispatch import openai_http as _sync
from promptdock.dispatch.openai_http import RETRY_STATUSES, retry_delay
from promptdock.errors import DispatchError
from promptdock.models import CompletionRequest
from promptdock.response import ModelResponse, ObjectDict, StreamChunk

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

_ERROR_BODY_LIMIT = 65536
_READ_SIZE = 65536
_DRAIN_TIMEOUT = 0.5

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
    call = _sync._Call.build(request)
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
        connector=connector, headers={"User-Agent": _sync._user_agent()}, auto_decompress=True
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


async def _send(call: _sync._Call) -> aiohttp.ClientResponse:
    import aiohttp

    session = await open_session()
    timeout = _timeout(*call.timeout)
    attempt = 0
    while True:
        failure: DispatchError | None = None
        retryable = False
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
            failure, retryable = _network_failure(exc, call, attempt)
        # Raised outside the ``except`` so aiohttp's exception (whose request info holds the
        # Authorization header) is not chained to our error.
        if failure is not None:
            if retryable and attempt < call.max_retries:
                await _sleep(retry_delay(attempt, {}))
                attempt += 1
                continue
            raise failure
        status = response.status
        if status < 300:
            return response
        if status in RETRY_STATUSES and attempt < call.max_retries:
            wait = retry_delay(attempt, response.headers)
            response.release()
            await _sleep(wait)
            attempt += 1
            continue
        raise await _status_failure(response, call, attempt)


def _network_failure(
    exc: BaseException, call: _sync._Call, attempt: int
) -> tuple[DispatchError, bool]:
    """Our error for a failed request, and whether another attempt might succeed."""
    import aiohttp

    more = _sync._tries(attempt)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return call.error(
            f"could not connect to the model server at {call.api_base} within "
            f"{call.timeout[0]:g} s{more}; check api_base and that the server is up",
            timeout=True,
        ), True
    if isinstance(exc, TimeoutError):
        # The server has the request and may still be working on it: retrying would multiply
        # the caller's wait, so a read timeout is final.
        return call.error(
            f"the model server at {call.api_base} did not answer {call.what} within "
            f"{call.timeout[1]:g} s; raise timeout=... or check the server's load",
            timeout=True,
        ), False
    if isinstance(exc, aiohttp.ClientSSLError):
        return call.error(
            f"TLS failed with the model server at {call.api_base}: {_reason(exc)}; check the "
            f"URL's scheme and the certificate (SSL_CERT_FILE for a private CA)"
        ), False
    if isinstance(exc, aiohttp.ClientConnectorError):
        return call.error(
            f"cannot reach the model server at {call.api_base}: {_reason(exc)}{more}; check "
            f"api_base (or OPENAI_BASE_URL) and that the server is running"
        ), True
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return call.error(
            f"the model server at {call.api_base} closed the connection without answering "
            f"{call.what}: {_reason(exc)}{more}; check the server's logs"
        ), True
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return call.error(
            f"api_base {call.api_base!r} is not a usable URL ({_reason(exc)}); it should look "
            f"like 'http://127.0.0.1:8000/v1' or 'https://api.openai.com/v1'"
        ), False
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return call.error(
            f"the connection to the model server at {call.api_base} broke while reading the "
            f"answer for {call.what}: {_reason(exc)}{more}"
        ), True
    return call.error(
        f"the request for {call.what} to {call.api_base} failed: {_reason(exc)}"
    ), False


def _reason(exc: BaseException) -> str:
    """A short cause: the OS error of a failed connection, else the exception's own text."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    return str(exc) or type(exc).__name__


async def _status_failure(
    response: aiohttp.ClientResponse, call: _sync._Call, attempt: int
) -> DispatchError:
    status = response.status
    upstream = _sync._upstream_message(await _error_body(response))
    if 300 <= status < 400:
        location = response.headers.get("Location", "?")
        hint = f"redirects are not followed: set api_base to the final URL (Location: {location})"
    elif status in (401, 403):
        hint = "check the API key (api_key=... or OPENAI_API_KEY) and its access to this model"
    elif status == 404:
        hint = f"check the model name and that api_base ends in /v1 (it is {call.api_base})"
    elif status == 429:
        hint = "the server is rate limiting: wait, or allow more retries with max_retries=..."
    elif status >= 500:
        hint = "the model server failed: try again later"
    else:
        hint = "check the request's messages and parameters"
    return call.error(
        f"the model server at {call.api_base} answered HTTP {status} for {call.what}"
        f"{_sync._tries(attempt)}: {upstream}. Hint: {hint}",
        status_code=status,
    )


async def _error_body(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.content.read(_ERROR_BODY_LIMIT)
    except Exception:  # the body is only decoration for the error we are about to raise
        return b""
    finally:
        response.close()


# -- reading answers ---------------------------------------------------------------------


async def _completion(response: aiohttp.ClientResponse, call: _sync._Call) -> ModelResponse:
    import aiohttp

    failure: DispatchError | None = None
    try:
        raw = await response.read()
    except TimeoutError:
        failure = call.error(
            f"the model server at {call.api_base} did not finish answering {call.what} within "
            f"{call.timeout[1]:g} s; raise timeout=... or check the server's load",
            timeout=True,
        )
    except (aiohttp.ClientError, OSError) as exc:
        failure = call.error(
            f"the connection to the model server at {call.api_base} broke while reading the "
            f"answer for {call.what}: {_reason(exc)}"
        )
    if failure is not None:
        response.close()
        raise failure
    body = _parse(raw)
    if body is _sync._NOT_JSON:
        raise call.error(
            f"the model server at {call.api_base} answered {call.what} with a body that is not "
            f"JSON: {_sync._snippet(raw)}; check that api_base points at an OpenAI-compatible API "
            f"(ending in /v1)",
            status_code=response.status,
        )
    if isinstance(body, dict) and isinstance(body.get("choices"), list):
        completion = ModelResponse()
        _fill(completion, body)
        return completion
    if isinstance(body, dict) and "error" in body:
        raise call.error(
            f"the model server at {call.api_base} reported an error for {call.what}: "
            f"{_sync._upstream_message(raw)}",
            status_code=response.status,
        )
    raise call.error(
        f"the model server at {call.api_base} answered {call.what} with JSON that is not a "
        f"chat completion (no 'choices' list): {_sync._snippet(raw)}",
        status_code=response.status,
    )


# Objects are made ObjectDicts while parsing, which costs less than converting the parsed
# tree afterwards (what ``ModelResponse(data)`` does); the result is the same.
_new_object = ObjectDict.__new__
_fill = dict.update


def _object(values: dict[str, Any]) -> ObjectDict:
    made = _new_object(ObjectDict)
    _fill(made, values)
    return made


def _parse(raw: bytes) -> Any:
    """``raw`` parsed with every object an :class:`ObjectDict`, or ``_NOT_JSON``."""
    try:
        return json.loads(raw, object_hook=_object)
    except ValueError:
        return _sync._NOT_JSON


async def _stream_chunks(
    response: aiohttp.ClientResponse, call: _sync._Call
) -> AsyncGenerator[StreamChunk, None]:
    """Yield each ``data:`` event as a chunk, as soon as it arrives, until ``[DONE]``."""
    import aiohttp

    finished = False
    try:
        if response.content_type == "application/json":
            # The server ignored ``stream`` or reported an error as a plain JSON answer.
            message = _sync._upstream_message(await _error_body(response))
            raise call.error(
                f"the model server at {call.api_base} answered a streaming request for "
                f"{call.what} with JSON instead of server-sent events: {message}",
                status_code=response.status,
            )
        async for data in _sse_data(response.content):
            if data == b"[DONE]":
                await _drain(response)
                return
            chunk = _sync._chunk(data, call)
            choices = chunk.get("choices")
            if isinstance(choices, list) and any(
                isinstance(c, dict) and c.get("finish_reason") for c in choices
            ):
                finished = True
            yield chunk
    except DispatchError:
        raise
    except TimeoutError:
        failure = call.error(
            f"the model server at {call.api_base} went silent for more than "
            f"{call.timeout[1]:g} s while streaming {call.what}; raise timeout=...",
            timeout=True,
        )
    except (aiohttp.ClientError, OSError) as exc:
        failure = call.error(
            f"the stream from the model server at {call.api_base} for {call.what} broke: "
            f"{_reason(exc)}"
        )
    else:
        if finished:
            return
        failure = call.error(
            f"the stream from the model server at {call.api_base} for {call.what} ended "
            f"before the answer was complete (no finish_reason and no 'data: [DONE]')"
        )
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
        async with asyncio.timeout(_DRAIN_TIMEOUT):
            for _ in range(4):
                if not await response.content.readany():
                    response.release()
                    return
    except Exception:  # noqa: S110 - the stream is complete; closing cleans up whatever failed
        pass


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The payload of each ``data:`` line of a server-sent event stream, as it arrives.

    Comments, ``event:``/``id:``/``retry:`` fields and blank lines carry nothing a chat
    completion needs and are skipped.
    """
    pending = b""
    while block := await content.readany():
        pending += block
        if b"\n" not in block:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield _sync._strip_data(line)
    if pending.startswith(b"data:"):
        yield _sync._strip_data(pending)
