"""The OpenAI-compatible HTTP dispatcher: ``POST {api_base}/chat/completions`` over ``requests``.

It answers every request no other dispatcher took (it is registered ``trylast``), so it must be
correct for OpenAI itself and for the many servers that copy its API (vLLM, llama.cpp, Ollama,
LiteLLM, Azure-style gateways...).

Connection settings follow the official ``openai`` client: ``api_base`` ends in ``/v1`` and
defaults to ``$OPENAI_BASE_URL`` (then ``$OPENAI_API_BASE``, then OpenAI's own URL); the key is
``api_key=`` or ``$OPENAI_API_KEY``. Failed attempts are retried on connection errors and on
408, 409, 429 and 5xx gateway statuses, with capped exponential backoff and full jitter,
honouring ``Retry-After`` and ``retry-after-ms``. What is sent, the retry policy and every
message are shared with the async dispatcher (:mod:`promptdock.dispatch._openai_wire`); this
module moves the bytes.

``requests`` is imported on the first call, not when the plugin manager imports this module:
``import promptdock`` stays fast for programs that only render. Each thread keeps its own
``requests.Session`` (sessions are not thread-safe) so connections are pooled and reused.

Proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and CA bundles
(``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) are read from the environment as ``requests``
reads them, but once per URL and value of those variables rather than on every call, where
``requests`` scans the whole environment twice (a quarter of its CPU per call, measured).
Credentials in ``~/.netrc`` are not used: pass ``api_key``.

The API key never appears in an error message, a log line or a ``repr``: errors are built from
our own text, scrubbed of the key, and raised without the ``requests`` exception (whose request
object carries the ``Authorization`` header) attached.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pluggy

from promptdock.dispatch._openai_wire import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    CONNECT_TIMEOUT,
    DEFAULT_API_BASE,
    DEFAULT_TIMEOUT,
    DONE,
    DRAIN_TIMEOUT,
    ERROR_BODY_LIMIT,
    MAX_RETRY_AFTER,
    READ_SIZE,
    RETRY_STATUSES,
    Call,
    EventLines,
    Failure,
    is_final,
    resolve_api_base,
    retry_delay,
    user_agent,
)
from promptdock.models import CompletionRequest
from promptdock.response import ModelResponse, StreamChunk

if TYPE_CHECKING:
    import requests

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CONNECT_TIMEOUT",
    "DEFAULT_API_BASE",
    "DEFAULT_TIMEOUT",
    "MAX_RETRY_AFTER",
    "RETRY_STATUSES",
    "dispatch",
    "reset_session",
    "resolve_api_base",
    "retry_delay",
]

# Imported from pluggy rather than ``promptdock`` so that importing this module never triggers
# the package ``__init__`` while the plugin manager is being built.
hookimpl = pluggy.HookimplMarker("promptdock")
"""Marks this module's hook implementations (same marker as ``promptdock.hookimpl``)."""

# Indirection that tests replace to skip real waits.
_sleep = time.sleep


# -- the hook ----------------------------------------------------------------------------


@hookimpl(trylast=True)
def dispatch(request: CompletionRequest) -> ModelResponse | Iterator[StreamChunk]:
    """Send ``request`` to an OpenAI-compatible server and return its answer.

    :returns: the ``chat.completion`` as a :class:`~promptdock.ModelResponse`, or, when
        ``request.stream`` is true, an iterator of ``chat.completion.chunk`` dicts that yields
        each chunk as it arrives and closes the connection when exhausted or closed.
    :raises DispatchError: no key for OpenAI's own server, an unreachable server, an error
        status after the allowed retries, or an answer that is not a chat completion.
    :raises UpstreamTimeoutError: the server did not answer within the timeout.
    """
    call = Call.build(request)
    response = _send(call)
    if request.stream:
        return _stream_chunks(response, call)
    return call.completion(response.content, response.status_code)


# -- sessions ----------------------------------------------------------------------------


class _SessionHolder:
    """Closes its session when the owning thread's locals are dropped (the thread ended)."""

    def __init__(self, session: requests.Session) -> None:
        self.session = session

    def __del__(self) -> None:
        # Nothing useful can be done about a failure while a thread is being torn down.
        with contextlib.suppress(Exception):
            self.session.close()


_local = threading.local()


def _session() -> requests.Session:
    holder: _SessionHolder | None = getattr(_local, "holder", None)
    if holder is None:
        import requests

        session = requests.Session()
        session.headers["User-Agent"] = user_agent()
        session.trust_env = False  # the environment is read by _environment(), cached
        holder = _local.holder = _SessionHolder(session)
    return holder.session


def reset_session() -> None:
    """Close this thread's pooled connections; the next call opens fresh ones."""
    holder: _SessionHolder | None = getattr(_local, "holder", None)
    if holder is not None:
        del _local.holder
        holder.session.close()


def _forget_sessions() -> None:
    # A forked child must not share its parent's sockets: start from an empty pool.
    global _local
    _local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sessions)


_ENVIRONMENT = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)
_environments: dict[tuple[str, tuple[str | None, ...]], tuple[dict[str, str], bool | str]] = {}


def _environment(url: str) -> tuple[dict[str, str], bool | str]:
    """The proxies and the ``verify`` setting ``requests`` would take from the environment
    for ``url``, worked out again only when one of the variables it reads changes."""
    key = (url, tuple(map(os.environ.get, _ENVIRONMENT)))
    found = _environments.get(key)
    if found is None:
        from requests.utils import get_environ_proxies

        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        found = (get_environ_proxies(url), bundle or True)
        if len(_environments) >= 256:
            _environments.clear()
        _environments[key] = found
    return found


# -- sending, with retries ---------------------------------------------------------------


def _send(call: Call) -> requests.Response:
    session = _session()
    proxies, verify = _environment(call.url)
    attempt = 0
    while True:
        failure: Failure | None = None
        reason = ""
        try:
            response = session.post(
                call.url,
                data=call.data,
                headers=call.headers,
                timeout=call.timeout,
                stream=call.stream,
                # A redirected POST may turn into a GET; make the user fix api_base instead.
                allow_redirects=False,
                proxies=proxies,
                verify=verify,
            )
        except Exception as exc:  # classified below; anything unknown is re-raised
            failure, reason = _classify(exc)
        # Raised outside the ``except`` so the requests exception (which holds the request and
        # its Authorization header) is not chained to our error.
        if failure is not None:
            error = call.failure(failure, reason, attempt, ca_variable="REQUESTS_CA_BUNDLE")
            if failure.retryable and attempt < call.max_retries:
                wait = retry_delay(attempt, {})
                _log_retry("retrying %s in %.2f s: %s", call.what, wait, error)
                _sleep(wait)
                attempt += 1
                continue
            raise error
        status = response.status_code
        if status < 300:
            return response
        if status in RETRY_STATUSES and attempt < call.max_retries:
            wait = retry_delay(attempt, response.headers)
            response.close()
            _log_retry("retrying %s in %.2f s after HTTP %d", call.what, wait, status)
            _sleep(wait)
            attempt += 1
            continue
        body = _error_body(response)
        response.close()
        raise call.status_failure(status, body, response.headers.get("Location"), attempt)


def _log_retry(message: str, *args: object) -> None:
    # ``logging`` is imported here, on the rare retry, to keep it off the import path.
    import logging

    logging.getLogger(__name__).info(message, *args)


def _classify(exc: Exception) -> tuple[Failure, str]:
    """What kind of failure a ``requests`` exception is, and its innermost cause.

    :raises Exception: ``exc`` itself when it is not a ``requests`` exception (a bug).
    """
    import requests.exceptions as rex

    if isinstance(exc, rex.ReadTimeout) or (
        isinstance(exc, rex.ConnectionError) and _read_timed_out(exc)
    ):
        return Failure.READ_TIMEOUT, ""
    if isinstance(exc, rex.ConnectTimeout):
        return Failure.CONNECT_TIMEOUT, ""
    if isinstance(exc, rex.SSLError):
        return Failure.TLS, _reason(exc)
    if isinstance(exc, rex.ProxyError):
        # The proxy from HTTP(S)_PROXY failed, not the model server: say so.
        return Failure.UNREACHABLE, f"through the proxy set in HTTP(S)_PROXY: {_reason(exc)}"
    if isinstance(exc, rex.ConnectionError) and _hung_up(exc):
        return Failure.HUNG_UP, _reason(exc)
    if isinstance(exc, rex.ConnectionError):
        return Failure.UNREACHABLE, _reason(exc)
    if isinstance(exc, rex.ChunkedEncodingError | rex.ContentDecodingError):
        return Failure.BROKEN, _reason(exc)
    if isinstance(exc, rex.InvalidURL | rex.MissingSchema | rex.InvalidSchema):
        return Failure.BAD_URL, _reason(exc)
    if isinstance(exc, rex.RequestException):
        return Failure.OTHER, _reason(exc)
    raise exc


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception nested in it (args, ``reason``, cause, context)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [*current.args, getattr(current, "reason", None)]
        nested += [current.__cause__, current.__context__]
        todo.extend(item for item in nested if isinstance(item, BaseException))


def _read_timed_out(exc: BaseException) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    return any(isinstance(e, ReadTimeoutError) for e in _causes(exc))


def _hung_up(exc: BaseException) -> bool:
    """Whether the server accepted the connection, then closed it without a response."""
    from http.client import RemoteDisconnected

    return any(isinstance(e, RemoteDisconnected | ConnectionResetError) for e in _causes(exc))


def _reason(exc: BaseException) -> str:
    """The innermost, most specific cause, e.g. ``[Errno 111] Connection refused``."""
    innermost: BaseException = exc
    for cause in _causes(exc):
        innermost = cause
    text = str(innermost)
    # urllib3 prefixes its messages with an object repr ("<...HTTPConnection object at 0x..>:").
    if text.startswith("<") and ">: " in text:
        text = text.split(">: ", 1)[1]
    return text or type(innermost).__name__


def _error_body(response: requests.Response) -> bytes:
    try:
        return next(response.iter_content(ERROR_BODY_LIMIT), b"")
    except Exception:  # the body is only decoration for the error we are about to raise
        return b""


# -- streamed answers --------------------------------------------------------------------


def _stream_chunks(response: requests.Response, call: Call) -> Iterator[StreamChunk]:
    """Yield each ``data:`` event as a chunk, as soon as it arrives, until ``[DONE]``."""
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import ReadTimeoutError

    finished = False
    try:
        if response.headers.get("Content-Type", "").startswith("application/json"):
            # The server ignored ``stream`` or reported an error as a plain JSON answer.
            raise call.json_instead_of_events(_error_body(response), response.status_code)
        for data in _sse_data(response.raw):
            if data == DONE:
                _drain(response.raw)
                return
            chunk = call.chunk(data)
            finished = finished or is_final(chunk)
            yield chunk
    except ReadTimeoutError:
        failure = call.stream_silent()
    except (Urllib3Error, OSError) as exc:
        failure = call.stream_broken(_reason(exc))
    else:
        if finished:
            return
        failure = call.stream_unfinished()
    finally:
        response.close()
    raise failure


def _sse_data(raw: Any) -> Iterator[bytes]:
    """The payload of each ``data:`` line, read with ``read1`` (whatever bytes have arrived)
    rather than in fixed-size blocks, so a chunk is yielded as soon as its line is complete."""
    lines = EventLines()
    while block := raw.read1(READ_SIZE, decode_content=True):
        yield from lines.feed(block)
    yield from lines.end()


def _drain(raw: Any) -> None:
    """Read the little that follows ``[DONE]`` so the connection can return to the pool.

    Closing a response that was not read to its end closes its socket; a server normally ends
    the body right after ``[DONE]``, so this costs one read. It is bounded in time and size,
    as a server may also keep the body open.
    """
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None:
        return
    try:
        # urllib3 sets the socket's timeout again before it reuses the connection.
        sock.settimeout(DRAIN_TIMEOUT)
        for _ in range(4):
            if not raw.read1(READ_SIZE, decode_content=True):
                return
    except Exception:  # noqa: S110 - the stream is complete; close() cleans up whatever failed
        pass
