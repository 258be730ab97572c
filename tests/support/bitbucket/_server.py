"""The HTTP server around the Cloud and Data Center routes: threads, faults, the request log,
and going offline. Listens on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
from collections.abc import Collection, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import quote

from ._cloud import RATE_LIMIT_MESSAGE, TIMEOUT_MESSAGE, CloudApi, cloud_error
from ._datacenter import DataCenterApi, dc_error
from ._git import GitRepo
from ._http import HttpError, PageTokens, Request, Response, Settings
from ._state import (
    AuthKind,
    CredentialStore,
    Fault,
    FaultPlan,
    HostedRepo,
    RequestLog,
    RequestRecord,
)

__all__ = ["BitbucketEmulator"]

_HOST = "127.0.0.1"
_MAX_DELAY = 30.0
_MAX_TIMES = 10_000
_MAX_BODY = 1 << 20
_FAULT_MESSAGES = {
    429: RATE_LIMIT_MESSAGE,
    555: TIMEOUT_MESSAGE,
    500: "Something went wrong on the server. Try again later.",
    502: "Bad gateway. Try again later.",
    503: "Service unavailable. Try again later.",
    504: "Gateway timeout. Try again later.",
}


class BitbucketEmulator:
    """A local Bitbucket (Cloud REST 2.0 and Data Center REST 1.0) serving real git repositories.

    Starts at once on a free port of 127.0.0.1, in daemon threads; :meth:`close` (or leaving a
    ``with`` block) stops the server and joins every thread. Point a Cloud client at
    :attr:`base_url` and a Data Center client at :attr:`dc_base_url`. Every repository is
    private: register credentials with :meth:`add_token` or :meth:`add_basic`.
    """

    def __init__(
        self,
        *,
        max_depth_limit: int = 20,
        max_listing_entries: int | None = None,
        dc_limit_cap: int = 1000,
    ) -> None:
        self.settings = Settings(max_depth_limit, max_listing_entries, dc_limit_cap)
        self._cloud_repos: dict[tuple[str, str], HostedRepo] = {}
        self._dc_repos: dict[tuple[str, str], HostedRepo] = {}
        self._creds = CredentialStore()
        self._faults = FaultPlan()
        self._log = RequestLog()
        self._errors: list[BaseException] = []
        self._cloud = CloudApi(self._cloud_repos, self._creds, self.settings, PageTokens())
        self._dc = DataCenterApi(self._dc_repos, self._creds, self.settings)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.port = 0
        self._start()

    def __repr__(self) -> str:
        return f"BitbucketEmulator({self.origin!r}, offline={self.offline})"

    def __enter__(self) -> BitbucketEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{_HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """The Cloud API root, like ``https://api.bitbucket.org/2.0``."""
        return f"{self.origin}/2.0"

    @property
    def dc_base_url(self) -> str:
        """The Data Center API root, like ``https://bitbucket.example.com/rest/api/1.0``."""
        return f"{self.origin}/rest/api/1.0"

    def repository_url(self, workspace: str, slug: str) -> str:
        """``{base_url}/repositories/{workspace}/{slug}``, each part percent-encoded."""
        return f"{self.base_url}/repositories/{quote(workspace, safe='')}/{quote(slug, safe='')}"

    # -- what is hosted and who may read it -----------------------------------------------------

    def add_repository(
        self, workspace: str, slug: str, repo: GitRepo, mainbranch: str = "main"
    ) -> None:
        """Serve ``repo`` on the Cloud API as ``{workspace}/{slug}``."""
        self._cloud_repos[(workspace, slug)] = HostedRepo(workspace, slug, repo, mainbranch)

    def add_dc_repository(
        self, project_key: str, slug: str, repo: GitRepo, default_branch: str = "main"
    ) -> None:
        """Serve ``repo`` on the Data Center API as ``projects/{project_key}/repos/{slug}``."""
        self._dc_repos[(project_key, slug)] = HostedRepo(project_key, slug, repo, default_branch)

    def add_token(
        self,
        token: str,
        *,
        repos: Iterable[tuple[str, str]] | Literal["*"] = "*",
        scopes: Collection[str] = frozenset({"repository"}),
    ) -> None:
        """Accept ``Authorization: Bearer <token>`` (an access token) for ``repos``.

        ``repos`` lists ``(workspace or project key, slug)`` pairs, or ``"*"`` for all. Reading
        needs the ``repository`` scope (or ``repository:write``/``repository:admin``).
        """
        self._creds.add("bearer", token, user=None, repos=repos, scopes=scopes)

    def add_basic(
        self,
        user: str,
        api_token: str,
        *,
        repos: Iterable[tuple[str, str]] | Literal["*"] = "*",
        scopes: Collection[str] = frozenset({"read:repository:bitbucket"}),
    ) -> None:
        """Accept ``Authorization: Basic base64(user:api_token)`` (an Atlassian API token).

        On Cloud, reading needs the ``read:repository:bitbucket`` scope; nothing implies it.
        """
        self._creds.add("basic", api_token, user=user, repos=repos, scopes=scopes)

    def set_rate_limit(
        self, credential: str, n: int | None, *, retry_after: int | None = None
    ) -> None:
        """Allow ``n`` more requests with ``credential`` (a token or API token), then answer 429.

        The 429 carries ``Retry-After: <retry_after>`` only when ``retry_after`` is given.
        ``n=None`` lifts the limit. Access tokens also get ``X-RateLimit-*`` headers.
        """
        if n is not None and n < 0:
            raise ValueError(f"rate limit must be >= 0 requests, got {n}")
        self._creds.set_limit(credential, n, retry_after)

    # -- faults ---------------------------------------------------------------------------------

    def inject(
        self,
        route_substring: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        drop_connection: bool = False,
        truncate: bool = False,
        times: int = 1,
        body: bytes | None = None,
    ) -> Fault:
        """Misbehave on the next ``times`` requests whose raw path contains ``route_substring``.

        ``status`` answers with that status and the API's error body (or ``body``); otherwise
        the real answer is sent, with ``headers`` added. ``delay`` (seconds) waits first;
        ``drop_connection`` closes the socket without an answer; ``truncate`` sends the headers
        and half the body, then closes. Faults fire in the order they were injected.
        """
        if not 1 <= times <= _MAX_TIMES:
            raise ValueError(f"times must be between 1 and {_MAX_TIMES}, got {times}")
        if delay is not None and not 0 <= delay <= _MAX_DELAY:
            raise ValueError(f"delay must be between 0 and {_MAX_DELAY} seconds, got {delay}")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code (100-599), got {status}")
        fault = Fault(
            route_substring,
            status,
            dict(headers or {}),
            delay,
            drop_connection,
            truncate,
            times,
            body,
        )
        return self._faults.add(fault)

    def clear_faults(self) -> None:
        """Forget every fault that has not fired yet."""
        self._faults.clear()

    @property
    def offline(self) -> bool:
        """Whether the server is down: connections to its port are refused.

        Setting ``True`` stops listening and cuts open connections; setting ``False`` listens on
        the same port again.
        """
        return self._server is None

    @offline.setter
    def offline(self, value: bool) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this BitbucketEmulator is closed; create a new one")
            if value and self._server is not None:
                self._stop()
            elif not value and self._server is None:
                self._start()

    # -- observability --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request served so far (since :meth:`reset_counts`), oldest first."""
        return self._log.snapshot()

    def request_count(self, path_contains: str | None = None) -> int:
        """How many requests were served, counting only those whose raw path contains
        ``path_contains`` when it is given."""
        records = self._log.snapshot()
        if path_contains is None:
            return len(records)
        return sum(path_contains in r.path for r in records)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised inside the emulator while serving (each answered with a 500).

        A fixture should assert this is empty at teardown: a non-empty list is an emulator bug,
        not a client bug.
        """
        return list(self._errors)

    def reset_counts(self) -> None:
        """Forget the requests served so far (rate-limit budgets are not touched)."""
        self._log.clear()

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving, cut open connections and join every thread. Safe to call twice."""
        with self._lock:
            self._closed = True
            if self._server is not None:
                self._stop()

    def _start(self) -> None:
        server = _Server(self.port, self)
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"bitbucket-emulator-{self.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.stop()
        if thread is not None:
            thread.join(timeout=10)

    # -- one request ----------------------------------------------------------------------------

    def _serve(self, handler: _Handler, *, head: bool) -> None:
        raw_path, _, raw_query = handler.path.partition("?")
        length = handler.headers.get("Content-Length")
        if length and length.isdigit():  # drain a body so the connection stays usable
            handler.rfile.read(min(int(length), _MAX_BODY))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        req = Request(handler.command, raw_path, raw_query, headers, self.origin)
        fault = self._faults.take(raw_path)
        if fault is not None and fault.delay:
            handler.server_stopping.wait(fault.delay)
        if fault is not None and fault.drop_connection:
            self._record(req, None)
            handler.close_connection = True
            return
        cloud = raw_path.startswith("/2.0/")
        if fault is not None and fault.status is not None:
            message = _FAULT_MESSAGES.get(fault.status) or _phrase(fault.status)
            error = HttpError(fault.status, message, headers=fault.headers)
            resp = (
                cloud_error(error)
                if cloud or not raw_path.startswith("/rest/")
                else dc_error(error)
            )
            if fault.body is not None:
                resp.body = fault.body
        else:
            resp = self._dispatch(req, cloud)
            if fault is not None:
                resp.headers.update(fault.headers)
        self._record(req, resp.status)
        _write(handler, resp, head=head, truncate=fault is not None and fault.truncate)

    def _dispatch(self, req: Request, cloud: bool) -> Response:
        try:
            if cloud:
                return self._cloud.handle(req)
            if req.raw_path.startswith("/rest/api/"):
                return self._dc.handle(req)
            return cloud_error(HttpError(404, "Resource not found"))
        except Exception as exc:  # an emulator bug: answer visibly instead of hanging up
            self._errors.append(exc)
            return cloud_error(HttpError(500, f"Emulator error: {type(exc).__name__}: {exc}"))

    def _record(self, req: Request, status: int | None) -> None:
        query = {name: values[0] for name, values in req.query.items()}
        record = RequestRecord(req.method, req.raw_path, query, _auth_kind(req), status)
        self._log.append(record)


class _Server(ThreadingHTTPServer):
    """A threading server that tracks its open connections so stopping can cut them."""

    daemon_threads = True  # never block interpreter exit; stop() still joins them

    def __init__(self, port: int, emulator: BitbucketEmulator) -> None:
        self.emulator = emulator
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__((_HOST, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); a loopback server needs none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = _HOST, self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up, or stop() cutting a connection, is not an error worth a trace.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def stop(self) -> None:
        """Stop accepting, wake delayed handlers, cut open connections and join the handlers."""
        self.stopping.set()
        self.shutdown()
        with self._open_lock:
            still_open = list(self._open)
        for conn in still_open:
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()  # joins the handler threads


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API server
    timeout = 30  # an idle keep-alive connection does not hold a thread forever
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds ~40 ms.
    disable_nagle_algorithm = True

    @property
    def server_stopping(self) -> threading.Event:
        """Set when the server stops, so a delayed answer wakes up early."""
        return cast(_Server, self.server).stopping

    def do_GET(self) -> None:
        """Serve a GET."""
        cast(_Server, self.server).emulator._serve(self, head=False)

    def do_HEAD(self) -> None:
        """Serve a HEAD: the GET answer without its body."""
        cast(_Server, self.server).emulator._serve(self, head=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the request log is :attr:`BitbucketEmulator.requests`."""


def _write(handler: _Handler, resp: Response, *, head: bool, truncate: bool) -> None:
    handler.send_response(resp.status)
    for name, value in resp.headers.items():
        handler.send_header(name, value)
    bodyless = resp.status in (204, 304) or resp.status < 200
    if not bodyless:
        handler.send_header("Content-Length", str(len(resp.body)))
    handler.end_headers()
    if head or bodyless:
        return
    if truncate:
        handler.wfile.write(resp.body[: len(resp.body) // 2])
        handler.close_connection = True
    else:
        handler.wfile.write(resp.body)


def _auth_kind(req: Request) -> AuthKind:
    header = req.header("Authorization")
    if not header:
        return "none"
    scheme = header.partition(" ")[0].lower()
    return "bearer" if scheme == "bearer" else "basic" if scheme == "basic" else "other"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
