"""Plain HTTP plumbing shared by the Cloud and Data Center routes: the request and response
objects, typed HTTP errors, opaque page tokens and Bitbucket's ``fields=`` partial responses."""

from __future__ import annotations

import json
import mimetypes
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode

__all__ = [
    "HttpError",
    "PageTokens",
    "Request",
    "Response",
    "Settings",
    "apply_fields",
    "braced_uuid",
    "guess_mimetype",
    "json_response",
]

# Built-in table only: /etc/mime.types differs between machines and would make tests flaky.
_MIME = mimetypes.MimeTypes(filenames=())
_MIME.add_type("text/markdown", ".md")  # RFC 7763; missing from Python 3.11's table
_TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_TOKEN_STEP = 7919  # a prime: page tokens do not look like page numbers or offsets


@dataclass
class Settings:
    """Knobs a test may turn at any time (deliberately mutable, read on every request).

    :ivar max_depth_limit: Cloud ``src`` listings with a larger ``max_depth`` answer 555.
    :ivar max_listing_entries: Cloud listings that would hold more entries answer 555.
    :ivar dc_limit_cap: the largest Data Center ``limit`` honoured.
    """

    max_depth_limit: int = 20
    max_listing_entries: int | None = None
    dc_limit_cap: int = 1000


@dataclass(frozen=True)
class Request:
    """An HTTP request split into the parts routes look at."""

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]
    origin: str
    query: Mapping[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", parse_qs(self.raw_query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        """Request header ``name`` (any case), or ``None``; ``headers`` has lower-case keys."""
        return self.headers.get(name.lower())

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or ``None``."""
        values = self.query.get(name)
        return values[0] if values else None

    def int_arg(self, name: str, default: int, *, low: int = 0) -> int:
        """Query parameter ``name`` as an integer of at least ``low`` (400 otherwise)."""
        text = self.arg(name)
        if text is None:
            return default
        if not text.isdigit() or int(text) < low:
            raise HttpError(
                400, f"Invalid value for {name}: {text!r}; expected an integer >= {low}."
            )
        return int(text)

    def url_with(self, **params: str) -> str:
        """This request's absolute URL with ``params`` replacing same-named query parameters."""
        kept = [
            (k, v) for k, v in parse_qsl(self.raw_query, keep_blank_values=True) if k not in params
        ]
        return f"{self.origin}{self.raw_path}?{urlencode([*kept, *params.items()])}"


@dataclass
class Response:
    """An HTTP response to write; ``headers`` may gain entries on the way out."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """An error answer; each API renders it in its own body format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        detail: str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        exception_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})
        self.exception_name = exception_name


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def braced_uuid(name: str) -> str:
    """A stable ``{uuid}`` for a workspace or repository name, in Bitbucket's braced form."""
    return "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://bitbucket.org/{name}")) + "}"


def guess_mimetype(path: str) -> str | None:
    """The MIME type a file name suggests (no charset), or ``None`` when unknown."""
    return _MIME.guess_type(path, strict=True)[0]


class PageTokens:
    """Encodes list offsets as short opaque tokens, salted per emulator so clients cannot
    compute them and must follow ``next`` verbatim."""

    def __init__(self) -> None:
        self._salt = secrets.randbelow(1_000_000) + 1

    def encode(self, offset: int) -> str:
        """The token for ``offset``; always contains a letter."""
        n = offset * _TOKEN_STEP + self._salt
        digits = ""
        while n:
            n, r = divmod(n, len(_TOKEN_ALPHABET))
            digits = _TOKEN_ALPHABET[r] + digits
        return "p" + digits

    def decode(self, token: str | None) -> int:
        """The offset behind ``token`` (``None`` is the first page); 400 for a forged token."""
        if token is None:
            return 0
        try:
            n = int(token[1:], 36) - self._salt if token.startswith("p") else -1
        except ValueError:
            n = -1
        if n < 0 or n % _TOKEN_STEP:
            raise HttpError(
                400, f"Invalid page: {token!r}. Follow the 'next' link of the previous page."
            )
        return n // _TOKEN_STEP


def apply_fields(payload: Any, spec: str) -> Any:
    """Bitbucket's partial responses: ``fields=a,b.c`` keeps only those paths (so an unlisted
    ``next`` disappears), ``-a.b`` removes one, ``+a`` is a no-op here (nothing is hidden by
    default). Lists are traversed transparently, as ``values.path`` implies."""
    keep: list[list[str]] = []
    drop: list[list[str]] = []
    for item in (part.strip() for part in spec.split(",")):
        if item.startswith("-"):
            drop.append(item[1:].split("."))
        elif item and not item.startswith("+") and item != "*":
            keep.append(item.split("."))
    result = _keep(payload, keep) if keep else payload
    for path in drop:
        result = _drop(result, path)
    return result


def _keep(node: Any, paths: Sequence[list[str]]) -> Any:
    if isinstance(node, list):
        return [_keep(item, paths) for item in node]
    if not isinstance(node, dict) or any(not p for p in paths) or any(p == ["*"] for p in paths):
        return node
    out: dict[str, Any] = {}
    for key in dict.fromkeys(p[0] for p in paths):
        if key in node:
            out[key] = _keep(node[key], [p[1:] for p in paths if p[0] == key])
    return out


def _drop(node: Any, path: list[str]) -> Any:
    if isinstance(node, list):
        return [_drop(item, path) for item in node]
    if not isinstance(node, dict) or not path or path[0] not in node:
        return node
    if len(path) == 1:
        return {k: v for k, v in node.items() if k != path[0]}
    return {**node, path[0]: _drop(node[path[0]], path[1:])}
