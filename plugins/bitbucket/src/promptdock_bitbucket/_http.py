"""The HTTP client every Bitbucket call goes through: auth, retries, redirects and a size cap.

* **Auth**: ``Authorization: Bearer <token>`` or ``Basic base64(user:token)``, added per
  request (never stored on the session, never logged) and dropped when a redirect leaves the
  host the request started on.
* **Retries**: connection failures, timeouts, truncated bodies, 429, 5xx and 555 are retried a
  bounded number of times with exponential backoff and full jitter; a ``Retry-After`` header
  replaces the computed delay. 401, 403 and 404 are never retried.
* **Size cap**: bodies are streamed and refused past ``max_bytes``.

``requests`` is imported on first use: loading the plugin must not cost its import time.
Errors raised here carry no token and no ``requests`` exception (whose request object holds
the headers): they are :class:`ApiError`, :class:`Unreachable` or ``SourceAuthError``.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from promptdock import SourceAuthError
from promptdock_bitbucket._config import Settings

if TYPE_CHECKING:
    import requests

__all__ = [
    "ApiError",
    "HttpClient",
    "NotFound",
    "Reply",
    "TooLarge",
    "Unreachable",
    "retry_delay",
]

_MAX_REDIRECTS = 5
_BACKOFF_CAP = 8.0
_CHUNK = 64 * 1024
_HEADERS = {"User-Agent": "promptdock-bitbucket/0.1", "Accept": "*/*"}


class ApiError(Exception):
    """Bitbucket answered with an error status that is not retried (or no longer).

    :ivar status: the HTTP status.
    :ivar message: ``error.message`` (Cloud) or ``errors[0].message`` (Data Center).
    :ivar detail: ``error.detail`` as sent (a string or an object), if any.
    """

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.detail = detail


class NotFound(ApiError):
    """404: no such file, folder, ref or repository."""


class Unreachable(Exception):
    """Bitbucket could not be reached or kept failing (connection, timeout, 429, 5xx, 555).

    :ivar cause: a one-line description for error messages (no secrets).
    :ivar status: the last HTTP status, if there was an answer.
    :ivar after: the seconds a ``Retry-After`` header asked to wait, if any.
    """

    def __init__(self, cause: str, status: int | None = None, after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.status = status
        self.after = after


class TooLarge(Exception):
    """A body exceeded the size cap.

    :ivar size: the size announced or read so far, in bytes.
    :ivar limit: the cap.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Reply:
    """A successful answer: status and body."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (``Unreachable`` when it is not: a broken proxy)."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise Unreachable("Bitbucket answered with a body that is not JSON") from None


def retry_delay(
    attempt: int, base: float, retry_after: float | None, rng: Callable[[float, float], float]
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    ``Retry-After`` wins when present; otherwise full jitter: uniform in
    ``[0, min(cap, base * 2**attempt)]``.
    """
    if retry_after is not None:
        return retry_after
    return rng(0.0, min(_BACKOFF_CAP, base * (2**attempt)))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # only for the rare HTTP-date form

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(body: bytes) -> tuple[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        text = body[:200].decode("utf-8", "replace").strip()
        return text or "no error message", None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):  # Cloud: {"type": "error", "error": {...}}
            return str(error.get("message") or "no error message"), error.get("detail")
        errors = payload.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):  # Data Center
            return str(errors[0].get("message") or "no error message"), None
    return "no error message", None


def _anonymous(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class HttpClient:
    """GETs against one Bitbucket API root with one credential.

    :param settings: the source settings (base URL, credential, timeout, retry policy).
    :param sleep: waits between retries (tests pass a recorder).
    :param rng: ``uniform(a, b)`` for the jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.settings = settings
        self.origin = _origin(settings.base_url)
        self._sleep = sleep
        self._rng = rng
        self.retries: int | None = None
        """Overrides ``settings.max_retries`` for every call while set."""
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        if settings.auth_method == "basic":
            pair = f"{settings.username}:{settings.access_token}".encode()
            self._auth = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            self._auth = f"Bearer {settings.access_token}"

    def __repr__(self) -> str:
        return f"HttpClient({self.settings.base_url!r}, auth={self.settings.auth_method!r})"

    def close(self) -> None:
        """Close pooled connections (a new session is made on next use)."""
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def _get_session(self) -> requests.Session:
        session = self._session
        if session is None:
            with self._session_lock:
                session = self._session
                if session is None:
                    import requests
                    import requests.adapters

                    session = requests.Session()
                    adapter = requests.adapters.HTTPAdapter(pool_maxsize=8, max_retries=0)
                    session.mount("https://", adapter)
                    session.mount("http://", adapter)
                    self._session = session
        return session

    def _authorize(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._auth
        return request

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (already quoted) under the API root."""
        return self.settings.base_url + path

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` is on the API root's scheme, host and port (safe to send the token)."""
        return _origin(url) == self.origin

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        max_bytes: int | None = None,
        retry_statuses: frozenset[int] | None = None,
    ) -> Reply:
        """GET ``url`` with retries; the answer's body, read in full.

        :param max_bytes: refuse bodies larger than this (:class:`TooLarge`).
        :param retry_statuses: override which statuses are retried (default 429, 5xx, 555).
        :raises SourceAuthError: 401 or 403.
        :raises NotFound: 404.
        :raises ApiError: another 4xx (or a status excluded from retries).
        :raises Unreachable: connection failures and retryable statuses, after the retries.
        :raises TooLarge: the body exceeds ``max_bytes``.
        """
        retries = self.settings.max_retries if self.retries is None else self.retries
        attempts = 1 + retries
        last: Unreachable | None = None
        for attempt in range(attempts):
            if attempt:
                assert last is not None
                wait = retry_delay(attempt - 1, self.settings.retry_backoff, last.after, self._rng)
                if wait > self.settings.max_retry_wait:
                    break  # Bitbucket asks for a longer pause than we are willing to block
                self._sleep(wait)
            try:
                return self._once(url, params, max_bytes, retry_statuses)
            except Unreachable as exc:
                last = exc
        assert last is not None
        raise last

    def _once(
        self,
        url: str,
        params: Mapping[str, str | list[str]] | None,
        max_bytes: int | None,
        retry_statuses: frozenset[int] | None,
    ) -> Reply:
        import requests

        session = self._get_session()
        current = url
        authorized = True
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                resp = session.get(
                    current,
                    params=params,
                    headers=_HEADERS,
                    # Passing auth also keeps requests from applying ~/.netrc credentials over
                    # the configured token (or adding some for a host the token must not see).
                    auth=self._authorize if authorized else _anonymous,
                    timeout=self.settings.timeout,
                    allow_redirects=False,
                    stream=True,
                )
            except requests.Timeout:
                raise Unreachable(
                    f"no answer from {_host(current)} within {self.settings.timeout:g} s"
                ) from None
            except requests.RequestException as exc:
                raise Unreachable(f"cannot connect to {_host(current)}: {_reason(exc)}") from None
            with resp:
                if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                    target = urljoin(current, resp.headers["Location"])
                    # The token goes only where it was meant to go (an LFS file redirects to
                    # a media host); a new host gets the request without it.
                    if _origin(target) != _origin(current):
                        authorized = False
                    current, params = target, None
                    continue
                body = self._read(resp, max_bytes)
            return self._check(resp.status_code, resp.headers, body, retry_statuses)
        raise Unreachable(f"more than {_MAX_REDIRECTS} redirects starting at {_host(url)}")

    def _read(self, resp: requests.Response, max_bytes: int | None) -> bytes:
        import requests

        announced = resp.headers.get("Content-Length")
        if (
            max_bytes is not None
            and resp.status_code == 200
            and announced
            and announced.isdigit()
            and int(announced) > max_bytes
        ):
            raise TooLarge(int(announced), max_bytes)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(_CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if max_bytes is not None and resp.status_code == 200 and size > max_bytes:
                    raise TooLarge(size, max_bytes)
        except requests.RequestException as exc:
            raise Unreachable(
                f"the answer from {_host(resp.url)} was cut off: {_reason(exc)}"
            ) from None
        return b"".join(chunks)

    def _check(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        retry_statuses: frozenset[int] | None,
    ) -> Reply:
        if 200 <= status < 300:
            return Reply(status, body)
        message, detail = _error_message(body)
        where = self.settings.location
        if status == 401:
            raise SourceAuthError(
                f"Bitbucket rejected the credentials for {where} (401: {message}): token "
                f"rejected or expired{self._auth_hint()}. Create a new token with read access "
                f"to the repository and update 'access_token'."
            )
        if status == 403:
            raise SourceAuthError(_forbidden(where, message, detail))
        if status == 404:
            raise NotFound(status, message, detail)
        if (
            status in retry_statuses
            if retry_statuses is not None
            else (status == 429 or status >= 500)
        ):
            after = _parse_retry_after(headers.get("Retry-After"))
            raise Unreachable(_status_cause(status, message), status, after)
        raise ApiError(status, message, detail)

    def _auth_hint(self) -> str:
        if self.settings.auth_method == "basic":
            return (
                " (with auth_method: basic, 'username' must be your Atlassian account email on "
                "Cloud; app passwords no longer work)"
            )
        if self.settings.api == "datacenter":
            return ", or it may not read this repository"
        return ""


def _forbidden(where: str, message: str, detail: Any) -> str:
    required = detail.get("required") if isinstance(detail, Mapping) else None
    if isinstance(required, list) and required:
        granted = detail.get("granted") if isinstance(detail, Mapping) else None
        have = f" (it has: {', '.join(map(str, granted))})" if granted else ""
        return (
            f"Bitbucket refused access to {where} (403): the token lacks the scope "
            f"{', '.join(map(str, required))}{have}. Create a token with that scope and update "
            f"'access_token'."
        )
    return (
        f"Bitbucket refused access to {where} (403: {message}): this token may not read the "
        f"repository. Use a token created for {where}, or ask its admin for read access."
    )


def _status_cause(status: int, message: str) -> str:
    if status == 429:
        return f"Bitbucket is rate-limiting this token (429: {message})"
    if status == 555:
        return f"Bitbucket timed out serving the request (555: {message})"
    return f"Bitbucket answered {status}: {message}"


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url


def _reason(exc: BaseException) -> str:
    # The innermost cause names the real problem ("Connection refused"); never the request.
    seen = exc
    while seen.__context__ is not None:
        seen = seen.__context__
    if isinstance(seen, OSError) and seen.strerror:
        return seen.strerror
    return (str(seen) or type(seen).__name__)[:200]
