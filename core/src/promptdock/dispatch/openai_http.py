"""The OpenAI-compatible HTTP dispatcher: ``POST {api_base}/chat/completions`` over ``requests``.

It answers every request no other dispatcher took (it is registered ``trylast``), so it must be
correct for OpenAI itself and for the many servers that copy its API (vLLM, llama.cpp, Ollama,
LiteLLM, Azure-style gateways...).

Connection settings follow the official ``openai`` client: ``api_base`` ends in ``/v1`` and
defaults to ``$OPENAI_BASE_URL`` (then ``$OPENAI_API_BASE``, then OpenAI's own URL); the key is
``api_key=`` or ``$OPENAI_API_KEY``. Failed attempts are retried on connection errors and on
408, 409, 429 and 5xx gateway statuses, with capped exponential backoff and full jitter,
honouring ``Retry-After`` and ``retry-after-ms``.

``requests`` is imported on the first call, not when the plugin manager imports this module:
``import promptdock`` stays fast for programs that only render. Each thread keeps its own
``requests.Session`` (sessions are not thread-safe) so connections are pooled and reused.

The API key never appears in an error message, a log line or a ``repr``: errors are built from
our own text, scrubbed of the key, and raised without the ``requests`` exception (whose request
object carries the ``Authorization`` header) attached.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pluggy

from promptdock.errors import DispatchError, UpstreamTimeoutError
from promptdock.models import CompletionRequest, is_secret_key
from promptdock.response import ModelResponse, ObjectDict, StreamChunk

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

DEFAULT_API_BASE = "https://api.openai.com/v1"
"""Where requests go when neither ``api_base`` nor the environment names a server."""

DEFAULT_TIMEOUT = 600.0
"""Seconds to wait for the server when the request sets no ``timeout`` (as the openai client)."""

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a TCP/TLS connection, whatever the overall timeout."""

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt; any other 4xx is the caller's mistake and is not retried."""

BACKOFF_BASE = 0.5
"""Seconds: the first retry waits up to this, each later one up to twice as long."""

BACKOFF_CAP = 8.0
"""Seconds: no computed backoff exceeds this."""

MAX_RETRY_AFTER = 60.0
"""Seconds: a server's ``Retry-After`` is obeyed up to this, never longer."""

_OPENAI_HOST = "api.openai.com"
_MIN_SECRET_LENGTH = 8
_READ_SIZE = 65536
_DRAIN_TIMEOUT = 0.5
_ERROR_BODY_LIMIT = 65536
_SNIPPET = 300

# Indirections that tests replace to skip real waits.
_sleep = time.sleep
_jitter = random.random


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
    call = _Call.build(request)
    response = _send(call)
    if request.stream:
        return _stream_chunks(response, call)
    return _completion(response, call)


# -- settings ----------------------------------------------------------------------------


def resolve_api_base(api_base: str | None) -> str:
    """The base URL to call: ``api_base``, else ``$OPENAI_BASE_URL``, else ``$OPENAI_API_BASE``,
    else OpenAI's own ``https://api.openai.com/v1``; without a trailing slash."""
    base = (
        api_base
        or os.environ.get("OPENAI_BASE_URL")
        or os.environ.get("OPENAI_API_BASE")
        or DEFAULT_API_BASE
    )
    return base.rstrip("/")


@dataclass(frozen=True)
class _Call:
    """One request, ready to send, plus what error messages need to say about it."""

    url: str
    api_base: str
    what: str
    data: bytes
    headers: dict[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    timeout: tuple[float, float]
    stream: bool
    max_retries: int

    @classmethod
    def build(cls, request: CompletionRequest) -> _Call:
        """Resolve base URL, key, headers and body; raises before any network I/O."""
        api_base = resolve_api_base(request.api_base)
        shown_base, secrets = _hide_userinfo(api_base)
        what = _describe(request)
        key = request.api_key or os.environ.get("OPENAI_API_KEY") or None
        if key is None and urlsplit(api_base).hostname == _OPENAI_HOST:
            raise DispatchError(
                f"no API key for {what} at {shown_base}: set the OPENAI_API_KEY environment "
                f"variable or pass api_key=..., or point api_base at another server"
            )
        # Placeholder keys of local servers ("x", "EMPTY") are no secret, and scrubbing them
        # would garble every message they occur in.
        if key is not None and len(key) >= _MIN_SECRET_LENGTH:
            secrets += (key,)
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if request.stream else "application/json",
        }
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(request.extra_headers)
        secrets += tuple(
            value
            for name, value in request.extra_headers.items()
            if is_secret_key(name) and len(value) >= _MIN_SECRET_LENGTH
        )
        total = DEFAULT_TIMEOUT if request.timeout is None else float(request.timeout)
        return cls(
            url=f"{api_base}/chat/completions",
            api_base=shown_base,
            what=what,
            data=_body(request, what),
            headers=headers,
            secrets=secrets,
            timeout=(min(CONNECT_TIMEOUT, total), total),
            stream=request.stream,
            max_retries=max(0, request.max_retries),
        )

    def error(
        self,
        message: str,
        *,
        status_code: int | None = None,
        timeout: bool = False,
    ) -> DispatchError:
        """A typed error whose message cannot leak the key, even if the server echoed it."""
        for secret in self.secrets:
            message = message.replace(secret, "***")
        cls = UpstreamTimeoutError if timeout else DispatchError
        return cls(message, status_code=status_code)


def _hide_userinfo(api_base: str) -> tuple[str, tuple[str, ...]]:
    """``api_base`` fit for messages (``user:password@`` hidden), and the hidden part."""
    if "@" not in api_base:
        return api_base, ()
    parts = urlsplit(api_base)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return api_base, ()
    return parts._replace(netloc=f"***@{host}").geturl(), (userinfo,)


def _describe(request: CompletionRequest) -> str:
    what = f"model {request.model!r}"
    prov = request.provenance
    if prov is not None:
        where = prov.path or prov.location or prov.source
        what += f" (prompt {prov.prompt_id!r} from {where})"
    return what


def _body(request: CompletionRequest, what: str) -> bytes:
    payload: dict[str, Any] = {"model": request.model, "messages": request.messages}
    payload.update(request.params)
    if request.stream:
        payload["stream"] = True
    else:
        # A stray ``stream`` would make the server answer with events we would parse as JSON.
        payload.pop("stream", None)
        payload.pop("stream_options", None)
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise DispatchError(
            f"cannot send the request for {what}: {exc}. Messages and parameters must be JSON "
            f"values (strings, finite numbers, booleans, None, lists and dicts)"
        ) from None
    return text.encode()


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
        session.headers["User-Agent"] = _user_agent()
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


_USER_AGENT: str | None = None


def _user_agent() -> str:
    global _USER_AGENT
    if _USER_AGENT is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _USER_AGENT = f"promptdock/{version('promptdock')}"
        except PackageNotFoundError:
            _USER_AGENT = "promptdock"
    return _USER_AGENT


# -- sending, with retries ---------------------------------------------------------------


def retry_delay(attempt: int, headers: Mapping[str, str]) -> float:
    """Seconds to wait before retrying after failed attempt number ``attempt`` (0-based).

    The server's ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date) wins when
    present: negative values and past dates mean "now", and no wait exceeds
    :data:`MAX_RETRY_AFTER`. Otherwise the wait is drawn uniformly from zero to
    ``min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)`` ("full jitter"), which spreads the retries
    of many clients hit by the same outage.
    """
    wait = _server_wait(headers)
    if wait is None:
        wait = _jitter() * min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 32))
    return wait


def _server_wait(headers: Mapping[str, str]) -> float | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            return _bounded(float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return _bounded(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _bounded(when.timestamp() - time.time())


def _bounded(seconds: float) -> float | None:
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _send(call: _Call) -> requests.Response:
    session = _session()
    attempt = 0
    while True:
        failure: DispatchError | None = None
        retryable = False
        try:
            response = session.post(
                call.url,
                data=call.data,
                headers=call.headers,
                timeout=call.timeout,
                stream=call.stream,
                # A redirected POST may turn into a GET; make the user fix api_base instead.
                allow_redirects=False,
            )
        except Exception as exc:  # classified below; anything unknown is re-raised
            failure, retryable = _network_failure(exc, call, attempt)
        # Raised outside the ``except`` so the requests exception (which holds the request and
        # its Authorization header) is not chained to our error.
        if failure is not None:
            if retryable and attempt < call.max_retries:
                wait = retry_delay(attempt, {})
                _log_retry("retrying %s in %.2f s: %s", call.what, wait, failure)
                _sleep(wait)
                attempt += 1
                continue
            raise failure
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
        raise _status_failure(response, call, attempt)


def _log_retry(message: str, *args: object) -> None:
    # ``logging`` is imported here, on the rare retry, to keep it off the import path.
    import logging

    logging.getLogger(__name__).info(message, *args)


def _network_failure(exc: Exception, call: _Call, attempt: int) -> tuple[DispatchError, bool]:
    """Our error for a failed request, and whether another attempt might succeed."""
    import requests.exceptions as rex

    tries = _tries(attempt)
    if isinstance(exc, rex.ReadTimeout) or (
        isinstance(exc, rex.ConnectionError) and _read_timed_out(exc)
    ):
        # The server has the request and may still be working on it: retrying would multiply
        # the caller's wait, so a read timeout is final.
        return call.error(
            f"the model server at {call.api_base} did not answer {call.what} within "
            f"{call.timeout[1]:g} s; raise timeout=... or check the server's load",
            timeout=True,
        ), False
    if isinstance(exc, rex.ConnectTimeout):
        return call.error(
            f"could not connect to the model server at {call.api_base} within "
            f"{call.timeout[0]:g} s{tries}; check api_base and that the server is up",
            timeout=True,
        ), True
    if isinstance(exc, rex.SSLError):
        return call.error(
            f"TLS failed with the model server at {call.api_base}: {_reason(exc)}; check the "
            f"URL's scheme and the certificate (REQUESTS_CA_BUNDLE for a private CA)"
        ), False
    if isinstance(exc, rex.ConnectionError) and _hung_up(exc):
        return call.error(
            f"the model server at {call.api_base} closed the connection without answering "
            f"{call.what}: {_reason(exc)}{tries}; check the server's logs"
        ), True
    if isinstance(exc, rex.ConnectionError):
        return call.error(
            f"cannot reach the model server at {call.api_base}: {_reason(exc)}{tries}; check "
            f"api_base (or OPENAI_BASE_URL) and that the server is running"
        ), True
    if isinstance(exc, rex.ChunkedEncodingError | rex.ContentDecodingError):
        return call.error(
            f"the connection to the model server at {call.api_base} broke while reading the "
            f"answer for {call.what}: {_reason(exc)}{tries}"
        ), True
    if isinstance(exc, rex.InvalidURL | rex.MissingSchema | rex.InvalidSchema):
        return call.error(
            f"api_base {call.api_base!r} is not a usable URL ({_reason(exc)}); it should look "
            f"like 'http://127.0.0.1:8000/v1' or 'https://api.openai.com/v1'"
        ), False
    if isinstance(exc, rex.RequestException):
        return call.error(
            f"the request for {call.what} to {call.api_base} failed: {_reason(exc)}"
        ), False
    raise exc


def _tries(attempt: int) -> str:
    return f" (after {attempt + 1} attempts)" if attempt else ""


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


def _status_failure(response: requests.Response, call: _Call, attempt: int) -> DispatchError:
    status = response.status_code
    upstream = _upstream_message(_error_body(response))
    response.close()
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
        f"{_tries(attempt)}: {upstream}. Hint: {hint}",
        status_code=status,
    )


def _error_body(response: requests.Response) -> bytes:
    try:
        return next(response.iter_content(_ERROR_BODY_LIMIT), b"")
    except Exception:  # the body is only decoration for the error we are about to raise
        return b""


def _upstream_message(raw: bytes) -> str:
    """The message of an OpenAI-style error body, else the start of the body's text."""
    text = raw.decode("utf-8", "replace").strip()
    data = _json(raw)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[: _SNIPPET * 4]
        for candidate in (error, data.get("message"), data.get("detail")):
            if isinstance(candidate, str):
                return candidate[: _SNIPPET * 4]
    return text[:_SNIPPET] or "(empty body)"


# -- reading answers ---------------------------------------------------------------------


def _completion(response: requests.Response, call: _Call) -> ModelResponse:
    raw = response.content
    body = _json(raw)
    if body is _NOT_JSON:
        raise call.error(
            f"the model server at {call.api_base} answered {call.what} with a body that is not "
            f"JSON: {_snippet(raw)}; check that api_base points at an OpenAI-compatible API "
            f"(ending in /v1)",
            status_code=response.status_code,
        )
    if isinstance(body, dict) and isinstance(body.get("choices"), list):
        return ModelResponse(body)
    if isinstance(body, dict) and "error" in body:
        raise call.error(
            f"the model server at {call.api_base} reported an error for {call.what}: "
            f"{_upstream_message(raw)}",
            status_code=response.status_code,
        )
    raise call.error(
        f"the model server at {call.api_base} answered {call.what} with JSON that is not a "
        f"chat completion (no 'choices' list): {_snippet(raw)}",
        status_code=response.status_code,
    )


_NOT_JSON = object()


def _json(raw: bytes) -> Any:
    """``raw`` parsed, or ``_NOT_JSON``; never leaves a decoding error (which quotes the
    body) as the context of the error we raise."""
    try:
        return json.loads(raw)
    except ValueError:
        return _NOT_JSON


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return repr(text[:_SNIPPET]) if text else "(empty body)"


def _stream_chunks(response: requests.Response, call: _Call) -> Iterator[StreamChunk]:
    """Yield each ``data:`` event as a chunk, as soon as it arrives, until ``[DONE]``."""
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import ReadTimeoutError

    finished = False
    try:
        if response.headers.get("Content-Type", "").startswith("application/json"):
            # The server ignored ``stream`` or reported an error as a plain JSON answer.
            raw = _error_body(response)
            raise call.error(
                f"the model server at {call.api_base} answered a streaming request for "
                f"{call.what} with JSON instead of server-sent events: {_upstream_message(raw)}",
                status_code=response.status_code,
            )
        for data in _sse_data(response.raw):
            if data == b"[DONE]":
                _drain(response.raw)
                return
            chunk = _chunk(data, call)
            choices = chunk.get("choices")
            if isinstance(choices, list) and any(
                isinstance(c, dict) and c.get("finish_reason") for c in choices
            ):
                finished = True
            yield chunk
    except ReadTimeoutError:
        failure = call.error(
            f"the model server at {call.api_base} went silent for more than "
            f"{call.timeout[1]:g} s while streaming {call.what}; raise timeout=...",
            timeout=True,
        )
    except (Urllib3Error, OSError) as exc:
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
        response.close()
    raise failure


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
        sock.settimeout(_DRAIN_TIMEOUT)
        for _ in range(4):
            if not raw.read1(_READ_SIZE, decode_content=True):
                return
    except Exception:  # noqa: S110 - the stream is complete; close() cleans up whatever failed
        pass


def _sse_data(raw: Any) -> Iterator[bytes]:
    """The payload of each ``data:`` line of a server-sent event stream.

    Reads whatever bytes have arrived (``read1``) rather than fixed-size blocks, so a chunk is
    yielded as soon as its line is complete. Comments, ``event:``/``id:``/``retry:`` fields and
    blank lines carry nothing a chat completion needs and are skipped.
    """
    pending = b""
    while True:
        block = raw.read1(_READ_SIZE, decode_content=True)
        if not block:
            break
        pending += block
        if b"\n" not in block:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield _strip_data(line)
    if pending.startswith(b"data:"):
        yield _strip_data(pending)


def _strip_data(line: bytes) -> bytes:
    payload = line[5:].rstrip(b"\r")
    return payload[1:] if payload.startswith(b" ") else payload


def _chunk(data: bytes, call: _Call) -> StreamChunk:
    event = _json(data)
    if event is _NOT_JSON:
        raise call.error(
            f"the model server at {call.api_base} sent a stream event for {call.what} that is "
            f"not JSON: {_snippet(data)}"
        )
    if not isinstance(event, dict):
        raise call.error(
            f"the model server at {call.api_base} sent a stream event for {call.what} that is "
            f"not a JSON object: {_snippet(data)}"
        )
    if "error" in event:
        raise call.error(
            f"the model server at {call.api_base} reported an error while streaming "
            f"{call.what}: {_upstream_message(data)}"
        )
    return ObjectDict(event)
