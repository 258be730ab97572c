"""What both OpenAI-compatible dispatchers send and how they read answers, whatever the transport.

The sync dispatcher (:mod:`~promptdock.dispatch.openai_http`, over ``requests``) and the async
one (:mod:`~promptdock.dispatch.openai_async`) differ only in how bytes move. Everything
else lives here, once, so the two cannot drift apart:

- building a call: URL, headers, JSON body, timeouts and the secrets to scrub (:class:`Call`);
- the retry policy: which statuses and failures are retried, and how long to wait
  (:data:`RETRY_STATUSES`, :class:`Failure`, :func:`retry_delay`);
- every error message, built from our own text with the API key scrubbed out;
- reading answers: a ``chat.completion`` body, and the ``data:`` lines of a server-sent event
  stream (:class:`EventLines`).

Nothing here does I/O or imports an HTTP library.
"""

from __future__ import annotations

import enum
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from json.encoder import encode_basestring
from json.scanner import make_scanner
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import urlsplit

from promptdock.errors import DispatchError, UpstreamTimeoutError
from promptdock.models import CompletionRequest, is_secret_key
from promptdock.response import ModelResponse, ObjectDict, StreamChunk

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CONNECT_TIMEOUT",
    "DEFAULT_API_BASE",
    "DEFAULT_TIMEOUT",
    "DONE",
    "DRAIN_TIMEOUT",
    "ERROR_BODY_LIMIT",
    "MAX_RETRY_AFTER",
    "READ_SIZE",
    "RETRY_STATUSES",
    "Call",
    "EventLines",
    "Failure",
    "compact_json",
    "is_final",
    "object_decoder",
    "resolve_api_base",
    "retry_delay",
    "tries",
    "upstream_body",
    "user_agent",
]

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

READ_SIZE = 65536
"""Bytes asked for per read of a streamed answer."""

ERROR_BODY_LIMIT = 65536
"""Bytes of an error answer read to find its message; the rest is not worth waiting for."""

DRAIN_TIMEOUT = 0.5
"""Seconds spent reading what follows ``[DONE]`` so the connection can be reused."""

DONE = b"[DONE]"
"""The payload of the ``data:`` line that ends an OpenAI stream."""

_OPENAI_HOST = "api.openai.com"
# Placeholder keys of local servers ("x", "EMPTY") are no secret, and scrubbing them would
# garble every message they occur in.
_MIN_SECRET_LENGTH = 8
_SNIPPET = 300

# Indirection that tests replace to make the backoff deterministic.
jitter = random.random
"""Draws the full-jitter fraction in ``[0, 1)``: :func:`random.random`, or a test's stand-in."""


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


_USER_AGENT: str | None = None


def user_agent() -> str:
    """``promptdock/<version>``: the ``User-Agent`` both dispatchers send."""
    global _USER_AGENT
    if _USER_AGENT is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _USER_AGENT = f"promptdock/{version('promptdock')}"
        except PackageNotFoundError:
            _USER_AGENT = "promptdock"
    return _USER_AGENT


# -- the retry policy --------------------------------------------------------------------


class Failure(enum.Enum):
    """How a request failed before the server answered it; each kind has its message and
    decides whether another attempt might succeed (:attr:`retryable`)."""

    CONNECT_TIMEOUT = "connect-timeout"
    """No connection within the connect timeout: the server may be restarting."""
    READ_TIMEOUT = "read-timeout"
    """Connected, but no answer in time: the server may still be working on the request,
    so retrying would multiply the caller's wait."""
    TLS = "tls"
    """The TLS handshake failed: a wrong scheme or an untrusted certificate stays wrong."""
    HUNG_UP = "hung-up"
    """The server accepted the connection, then closed it without an answer."""
    UNREACHABLE = "unreachable"
    """No connection at all (refused, unknown host...)."""
    BROKEN = "broken"
    """The connection broke while the answer was being read."""
    BAD_URL = "bad-url"
    """``api_base`` is not an ``http(s)://`` URL."""
    OTHER = "other"
    """Anything else the HTTP library raised."""

    @property
    def retryable(self) -> bool:
        """Whether another attempt might succeed."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {Failure.CONNECT_TIMEOUT, Failure.HUNG_UP, Failure.UNREACHABLE, Failure.BROKEN}
)

_FAILURE_TEXT: Mapping[Failure, str] = {
    Failure.READ_TIMEOUT: (
        "the model server at {base} did not answer {what} within {read:g} s; raise "
        "timeout=... or check the server's load"
    ),
    Failure.CONNECT_TIMEOUT: (
        "could not connect to the model server at {base} within {connect:g} s{tries}; check "
        "api_base and that the server is up"
    ),
    Failure.TLS: (
        "TLS failed with the model server at {base}: {reason}; check the URL's scheme and the "
        "certificate ({ca_variable} for a private CA)"
    ),
    Failure.HUNG_UP: (
        "the model server at {base} closed the connection without answering {what}: "
        "{reason}{tries}; check the server's logs"
    ),
    Failure.UNREACHABLE: (
        "cannot reach the model server at {base}: {reason}{tries}; check api_base (or "
        "OPENAI_BASE_URL) and that the server is running"
    ),
    Failure.BROKEN: (
        "the connection to the model server at {base} broke while reading the answer for "
        "{what}: {reason}{tries}"
    ),
    Failure.BAD_URL: (
        "api_base {base!r} is not a usable URL ({reason}); it should look like "
        "'http://127.0.0.1:8000/v1' or 'https://api.openai.com/v1'"
    ),
    Failure.OTHER: "the request for {what} to {base} failed: {reason}",
}


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
        wait = jitter() * min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 32))
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


def tries(attempt: int) -> str:
    """`` (after N attempts)`` for messages about a failure that was retried, else ``""``."""
    return f" (after {attempt + 1} attempts)" if attempt else ""


# -- one call ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    """What every call to one server with one key and the same headers shares.

    :ivar url: where to ``POST``.
    :ivar shown_base: the base URL as messages show it (``user:password@`` hidden).
    :ivar headers: the request headers, ``Authorization`` included (never modified).
    :ivar secrets: strings scrubbed from every message.
    :ivar missing_key: OpenAI's own server without a key: every call fails before sending.
    """

    url: str
    shown_base: str
    headers: Mapping[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    missing_key: bool

    @classmethod
    def make(
        cls, api_base: str, key: str | None, stream: bool, extra: tuple[tuple[str, str], ...]
    ) -> _Endpoint:
        shown_base, secrets = _hide_userinfo(api_base)
        if key is not None and len(key) >= _MIN_SECRET_LENGTH:
            secrets += (key,)
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(extra)
        secrets += tuple(
            value
            for name, value in extra
            if is_secret_key(name) and len(value) >= _MIN_SECRET_LENGTH
        )
        return cls(
            url=f"{api_base}/chat/completions",
            shown_base=shown_base,
            headers=MappingProxyType(headers),
            secrets=secrets,
            missing_key=key is None and urlsplit(api_base).hostname == _OPENAI_HOST,
        )


# Calls to the same server with the same key and headers share one _Endpoint; bounded, since
# per-request headers could otherwise grow it without end.
_endpoints: dict[tuple[str, str | None, bool, tuple[tuple[str, str], ...]], _Endpoint] = {}
_MAX_ENDPOINTS = 256


@dataclass(frozen=True)
class Call:
    """One request, ready to send, plus what its error messages need to say about it.

    Every message names the server (credentials in the URL hidden) and the model, with the
    prompt it came from; none can hold the API key, even when the server echoes it back.

    :ivar url: where to ``POST``: ``{api_base}/chat/completions``.
    :ivar api_base: the base URL as messages show it (``user:password@`` hidden).
    :ivar what: the model and prompt, as messages name them.
    :ivar data: the JSON body.
    :ivar headers: the request's headers, ``Authorization`` included (hidden from ``repr``).
    :ivar secrets: strings scrubbed from every message (hidden from ``repr``).
    :ivar timeout: ``(connect, read)`` seconds.
    :ivar stream: whether the answer is a server-sent event stream.
    :ivar max_retries: how many times a retryable failure is tried again.
    """

    url: str
    api_base: str
    what: str
    data: bytes
    headers: Mapping[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    timeout: tuple[float, float]
    stream: bool
    max_retries: int

    @classmethod
    def build(cls, request: CompletionRequest) -> Call:
        """Resolve base URL, key, headers and body.

        :raises DispatchError: no key for OpenAI's own server, or parameters that are not
            JSON values; both before any network I/O.
        """
        api_base = resolve_api_base(request.api_base)
        key = request.api_key or os.environ.get("OPENAI_API_KEY") or None
        extra = tuple(request.extra_headers.items()) if request.extra_headers else ()
        cache_key = (api_base, key, request.stream, extra)
        endpoint = _endpoints.get(cache_key)
        if endpoint is None:
            endpoint = _Endpoint.make(api_base, key, request.stream, extra)
            if len(_endpoints) >= _MAX_ENDPOINTS:
                _endpoints.clear()
            _endpoints[cache_key] = endpoint
        what = _describe(request)
        if endpoint.missing_key:
            raise DispatchError(
                f"no API key for {what} at {endpoint.shown_base}: set the OPENAI_API_KEY "
                f"environment variable or pass api_key=..., or point api_base at another server"
            )
        total = DEFAULT_TIMEOUT if request.timeout is None else float(request.timeout)
        # Built without the generated __init__, which sets each of the frozen fields through
        # object.__setattr__ and costs more than the rest of this method but the JSON body.
        call = object.__new__(cls)
        fields = call.__dict__
        fields["url"] = endpoint.url
        fields["api_base"] = endpoint.shown_base
        fields["what"] = what
        fields["data"] = _body(request, what)
        fields["headers"] = endpoint.headers
        fields["secrets"] = endpoint.secrets
        fields["timeout"] = (min(CONNECT_TIMEOUT, total), total)
        fields["stream"] = request.stream
        fields["max_retries"] = max(0, request.max_retries)
        return call

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

    # -- failures before an answer -------------------------------------------------------

    def failure(
        self, kind: Failure, reason: str = "", attempt: int = 0, *, ca_variable: str = ""
    ) -> DispatchError:
        """The error for a request that failed the way ``kind`` says.

        :param reason: the innermost cause, e.g. ``[Errno 111] Connection refused``.
        :param attempt: the 0-based attempt that failed; messages count the attempts.
        :param ca_variable: the environment variable that names a private CA bundle for
            this transport (for :attr:`Failure.TLS`).
        """
        message = _FAILURE_TEXT[kind].format(
            base=self.api_base,
            what=self.what,
            connect=self.timeout[0],
            read=self.timeout[1],
            reason=reason,
            tries=tries(attempt),
            ca_variable=ca_variable,
        )
        timed_out = kind is Failure.READ_TIMEOUT or kind is Failure.CONNECT_TIMEOUT
        return self.error(message, timeout=timed_out)

    def status_failure(
        self, status: int, body: bytes, location: str | None, attempt: int
    ) -> DispatchError:
        """The error for an answer with an error status, with the server's message and a hint.

        :param body: the start of the answer's body, where the server's message is.
        :param location: the ``Location`` header (of a redirect).
        """
        if 300 <= status < 400:
            hint = (
                f"redirects are not followed: set api_base to the final URL (Location: "
                f"{location or '?'})"
            )
        elif status in (401, 403):
            hint = "check the API key (api_key=... or OPENAI_API_KEY) and its access to this model"
        elif status == 404:
            hint = f"check the model name and that api_base ends in /v1 (it is {self.api_base})"
        elif status == 429:
            hint = "the server is rate limiting: wait, or allow more retries with max_retries=..."
        elif status >= 500:
            hint = "the model server failed: try again later"
        else:
            hint = "check the request's messages and parameters"
        return self.error(
            f"the model server at {self.api_base} answered HTTP {status} for {self.what}"
            f"{tries(attempt)}: {upstream_message(body)}. Hint: {hint}",
            status_code=status,
        )

    def unfinished_answer(self) -> DispatchError:
        """The error for an answer whose body stopped arriving before the read timeout."""
        return self.error(
            f"the model server at {self.api_base} did not finish answering {self.what} within "
            f"{self.timeout[1]:g} s; raise timeout=... or check the server's load",
            timeout=True,
        )

    # -- answers -------------------------------------------------------------------------

    def completion(self, raw: bytes, status: int) -> ModelResponse:
        """The ``chat.completion`` in a successful answer's body.

        The response keeps ``raw`` for :func:`upstream_body`.

        :raises DispatchError: the body is not JSON, reports an error, or is not a chat
            completion.
        """
        body = _parse(raw)
        if body is _NOT_JSON:
            raise self.error(
                f"the model server at {self.api_base} answered {self.what} with a body that is "
                f"not JSON: {_snippet(raw)}; check that api_base points at an OpenAI-compatible "
                f"API (ending in /v1)",
                status_code=status,
            )
        if isinstance(body, dict) and isinstance(body.get("choices"), list):
            # The parsed object's keys go into a response made without ModelResponse's
            # constructor, which would wrap each of them again (they are wrapped already).
            completion = _new_object(_WireResponse)
            _fill(completion, body)
            completion.with_prompt(None)
            _set_slot(completion, "_body", raw if _plain_utf8_object(raw) else None)
            return completion
        if isinstance(body, dict) and "error" in body:
            raise self.error(
                f"the model server at {self.api_base} reported an error for {self.what}: "
                f"{upstream_message(raw)}",
                status_code=status,
            )
        raise self.error(
            f"the model server at {self.api_base} answered {self.what} with JSON that is not a "
            f"chat completion (no 'choices' list): {_snippet(raw)}",
            status_code=status,
        )

    def json_instead_of_events(self, body: bytes, status: int) -> DispatchError:
        """The error for a streaming request answered with one JSON body (often an error)."""
        return self.error(
            f"the model server at {self.api_base} answered a streaming request for {self.what} "
            f"with JSON instead of server-sent events: {upstream_message(body)}",
            status_code=status,
        )

    def chunk(self, data: bytes) -> StreamChunk:
        """The ``chat.completion.chunk`` in one ``data:`` payload of a stream.

        :raises DispatchError: the payload is not a JSON object, or reports an error.
        """
        event = _parse(data)
        if event is _NOT_JSON:
            raise self.error(
                f"the model server at {self.api_base} sent a stream event for {self.what} that "
                f"is not JSON: {_snippet(data)}"
            )
        if not isinstance(event, ObjectDict):  # the parser makes every JSON object one
            raise self.error(
                f"the model server at {self.api_base} sent a stream event for {self.what} that "
                f"is not a JSON object: {_snippet(data)}"
            )
        if "error" in event:
            raise self.error(
                f"the model server at {self.api_base} reported an error while streaming "
                f"{self.what}: {upstream_message(data)}"
            )
        return event

    def stream_silent(self) -> DispatchError:
        """The error for a stream that sent nothing for longer than the read timeout."""
        return self.error(
            f"the model server at {self.api_base} went silent for more than "
            f"{self.timeout[1]:g} s while streaming {self.what}; raise timeout=...",
            timeout=True,
        )

    def stream_broken(self, reason: str) -> DispatchError:
        """The error for a stream whose connection failed part way."""
        return self.error(
            f"the stream from the model server at {self.api_base} for {self.what} broke: {reason}"
        )

    def stream_unfinished(self) -> DispatchError:
        """The error for a stream that ended without a ``finish_reason`` or ``[DONE]``."""
        return self.error(
            f"the stream from the model server at {self.api_base} for {self.what} ended "
            f"before the answer was complete (no finish_reason and no 'data: [DONE]')"
        )


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


def compact_json(*, allow_nan: bool) -> Callable[[Any], str]:
    """A compact JSON encoder (``ensure_ascii=False``), made once and shared by every call.

    ``JSONEncoder.encode`` builds a new C encoder, and a closure, on every call: about a third
    of its cost for the small bodies of chat requests. This one does not look for cycles,
    which would need per-call bookkeeping; a value that contains itself raises
    ``RecursionError``.
    """
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=allow_nan, separators=(",", ":"))
    # json's C encoder (typeshed does not declare it); None without the C speedups.
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:
        return encoder.encode
    one_shot = make_encoder(
        None, encoder.default, encode_basestring, None, ":", ",", False, False, allow_nan
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(one_shot(value, 0))

    return encode


_encode = compact_json(allow_nan=False)

_JSON_SPACE = " \t\n\r"


def object_decoder(
    object_hook: Callable[[dict[str, Any]], Any] | None = None,
) -> Callable[[str], Any]:
    """``JSONDecoder(object_hook=object_hook).decode``: the same values and the same errors.

    Text that starts with its value (``{`` for a request or an answer) goes straight to the C
    scanner, without the two layers of Python and the two whitespace matches around it, which
    cost about a quarter of decoding a small body.
    """
    decoder = json.JSONDecoder(object_hook=object_hook)
    # The C scanner reads its settings from the decoder (typeshed asks for a scanner instead).
    scan = make_scanner(cast(Any, decoder))

    def decode(text: str) -> Any:
        try:
            value, end = scan(text, 0)
        except StopIteration:  # leading whitespace, or no value at all
            return decoder.decode(text)
        if end != len(text):
            rest = text[end:].lstrip(_JSON_SPACE)
            if rest:
                raise json.JSONDecodeError("Extra data", text, len(text) - len(rest))
        return value

    return decode


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
        text = _encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise DispatchError(
            f"cannot send the request for {what}: {exc}. Messages and parameters must be JSON "
            f"values (strings, finite numbers, booleans, None, lists and dicts)"
        ) from None
    return text.encode()


# -- reading bodies ----------------------------------------------------------------------


class _WireResponse(ModelResponse):
    """A :class:`ModelResponse` that keeps the body it was parsed from (:func:`upstream_body`)."""

    __slots__ = ("_body",)
    _body: bytes | None


_set_slot = object.__setattr__  # ObjectDict.__setattr__ would store a key instead


def upstream_body(response: ModelResponse) -> bytes | None:
    """The UTF-8 JSON body ``response`` was parsed from by :meth:`Call.completion`, else ``None``.

    The bytes stand for the response only while nothing has changed it since: the caller
    must know that nothing could have (the proxy sends them when no dispatch wrapper is
    registered, and encodes the response otherwise).
    """
    return response._body if type(response) is _WireResponse else None


_NOT_JSON = object()

# Objects are made ObjectDicts while parsing, which costs less than converting the parsed
# tree afterwards (what ``ModelResponse(data)`` does); the result is the same.
_new_object = ObjectDict.__new__
_fill = dict.update


def _object(values: dict[str, Any]) -> ObjectDict:
    made = _new_object(ObjectDict)
    _fill(made, values)
    return made


# ``json.loads`` with an ``object_hook`` builds a decoder per call; this one is made once.
_decode = object_decoder(_object)


def _plain_utf8_object(raw: bytes) -> bool:
    """Whether ``raw`` starts a JSON object in UTF-8 without a BOM (not UTF-16/32): what every
    server sends."""
    return raw[:1] == b"{" and raw[1:2] != b"\x00"


def _parse(raw: bytes) -> Any:
    """``raw`` parsed with every object an :class:`ObjectDict`, or ``_NOT_JSON``.

    Never leaves a decoding error (which quotes the body) as the context of the error we raise.
    """
    try:
        if _plain_utf8_object(raw):
            return _decode(raw.decode())  # skips json.loads' detection of the encoding
        return json.loads(raw, object_hook=_object)
    except ValueError:  # UnicodeDecodeError included
        return _NOT_JSON


def upstream_message(raw: bytes) -> str:
    """The message of an OpenAI-style error body, else the start of the body's text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[: _SNIPPET * 4]
        for candidate in (error, data.get("message"), data.get("detail")):
            if isinstance(candidate, str):
                return candidate[: _SNIPPET * 4]
    return text[:_SNIPPET] or "(empty body)"


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return repr(text[:_SNIPPET]) if text else "(empty body)"


def is_final(chunk: StreamChunk) -> bool:
    """Whether a stream chunk carries a ``finish_reason``: the answer is complete."""
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices
    )


class EventLines:
    """Splits a server-sent event stream, fed block by block, into its ``data:`` payloads.

    Comments, ``event:``/``id:``/``retry:`` fields and blank lines carry nothing a chat
    completion needs and are skipped. A payload is returned as soon as its line is complete.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, block: bytes) -> list[bytes]:
        """The payloads of the lines ``block`` completes (often none, or one)."""
        pending = self._pending + block
        if b"\n" not in block:
            self._pending = pending
            return []
        *lines, self._pending = pending.split(b"\n")
        return [_strip_data(line) for line in lines if line.startswith(b"data:")]

    def end(self) -> list[bytes]:
        """The payload of a last line the stream did not end with a newline, if any."""
        pending, self._pending = self._pending, b""
        return [_strip_data(pending)] if pending.startswith(b"data:") else []


def _strip_data(line: bytes) -> bytes:
    payload = line[5:].rstrip(b"\r")
    return payload[1:] if payload.startswith(b" ") else payload
