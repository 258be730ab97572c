"""The HTTP client: backoff with full jitter, Retry-After, redirects that drop the token, caps."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from promptdock import SourceAuthError
from promptdock_bitbucket._api import make_api
from promptdock_bitbucket._config import settings_from
from promptdock_bitbucket._http import (
    HttpClient,
    NotFound,
    TooLarge,
    Unreachable,
    retry_delay,
)
from tests.plugins.bitbucket.conftest import TOKEN, commit_prompts
from tests.support.bitbucket import BitbucketEmulator, GitRepo

Route = Callable[[BaseHTTPRequestHandler], None]


class FakeHost:
    """A bare HTTP server on 127.0.0.1 answering from a path → handler table, recording
    each request's path and ``Authorization`` header."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[tuple[str, str | None]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.seen.append((self.path, self.headers.get("Authorization")))
                route = host.routes.get(self.path.partition("?")[0])
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    route(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


@pytest.fixture
def fake() -> Iterator[FakeHost]:
    host = FakeHost()
    yield host
    host.close()


def client(base_url: str, **extra: Any) -> tuple[HttpClient, list[float]]:
    """A client for ``base_url`` whose waits are recorded instead of slept."""
    sleeps: list[float] = []
    settings = settings_from(
        {
            "workspace": "acme",
            "repository": "prompts",
            "access_token": TOKEN,
            "base_url": base_url,
            "cache_dir": "",
            **extra,
        }
    )
    return HttpClient(settings, sleep=sleeps.append, rng=random.Random(7).uniform), sleeps


def test_full_jitter_stays_within_the_doubling_bound() -> None:
    rng = random.Random(3)
    for attempt in range(6):
        delays = [retry_delay(attempt, 0.5, None, rng.uniform) for _ in range(200)]
        bound = min(8.0, 0.5 * 2**attempt)
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > bound * 0.8  # spread over the whole range, not a fixed step
    assert retry_delay(4, 0.5, 7.0, rng.uniform) == 7.0  # Retry-After wins


def test_retry_after_is_waited_for_exactly(git_repo: GitRepo, bitbucket: BitbucketEmulator) -> None:
    commit_prompts(git_repo, {"hello.prompt": "hi"})
    http, sleeps = client(bitbucket.base_url)
    bitbucket.inject("/refs/", status=429, headers={"Retry-After": "2"})
    bitbucket.inject("/refs/", status=503)
    api = make_api(http.settings, http)
    assert len(api.resolve_branch("main")) == 40
    assert sleeps[0] == 2.0
    assert 0.0 <= sleeps[1] <= 2 * http.settings.retry_backoff
    assert bitbucket.request_count("/refs/") == 3


@pytest.mark.parametrize(("status", "error"), [(401, SourceAuthError), (403, SourceAuthError)])
def test_auth_failures_are_never_retried(
    fake: FakeHost, status: int, error: type[Exception]
) -> None:
    fake.routes["/2.0/x"] = answer(status, b'{"type":"error","error":{"message":"no"}}')
    http, sleeps = client(f"http://127.0.0.1:{fake.port}/2.0")
    with pytest.raises(error):
        http.get(http.url("/x"))
    assert (len(fake.seen), sleeps) == (1, [])


def test_not_found_is_never_retried(fake: FakeHost) -> None:
    http, sleeps = client(f"http://127.0.0.1:{fake.port}/2.0")
    with pytest.raises(NotFound):
        http.get(http.url("/missing"))
    assert (len(fake.seen), sleeps) == (1, [])


def test_a_cross_host_redirect_drops_the_token(fake: FakeHost) -> None:
    # "localhost" and "127.0.0.1" are different hosts to the client, as a media CDN would be.
    fake.routes["/2.0/src/lfs.prompt"] = answer(
        301, headers={"Location": f"http://localhost:{fake.port}/media/blob"}
    )
    fake.routes["/media/blob"] = answer(200, b"from the media host")
    http, _ = client(f"http://127.0.0.1:{fake.port}/2.0")
    assert http.get(http.url("/src/lfs.prompt")).body == b"from the media host"
    assert fake.seen == [
        ("/2.0/src/lfs.prompt", f"Bearer {TOKEN}"),
        ("/media/blob", None),
    ]


def test_a_same_host_redirect_keeps_the_token(fake: FakeHost) -> None:
    fake.routes["/2.0/repositories/old/name"] = answer(
        301, headers={"Location": "/2.0/repositories/new/name"}
    )
    fake.routes["/2.0/repositories/new/name"] = answer(200, b"{}")
    http, _ = client(f"http://127.0.0.1:{fake.port}/2.0")
    http.get(http.url("/repositories/old/name"))
    assert [auth for _, auth in fake.seen] == [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]


def test_redirect_loops_are_cut(fake: FakeHost) -> None:
    fake.routes["/2.0/a"] = answer(302, headers={"Location": "/2.0/a"})
    http, _ = client(f"http://127.0.0.1:{fake.port}/2.0", max_retries=0)
    with pytest.raises(Unreachable, match="more than 5 redirects"):
        http.get(http.url("/a"))


def test_a_next_link_to_another_host_is_not_followed(fake: FakeHost) -> None:
    sha = "a" * 40
    page = {"values": [], "next": f"http://localhost:{fake.port}/steal?page=2"}
    fake.routes[f"/2.0/repositories/acme/prompts/src/{sha}/prompts/"] = answer(
        200, json.dumps(page).encode()
    )
    http, _ = client(f"http://127.0.0.1:{fake.port}/2.0")
    with pytest.raises(Unreachable, match="refusing to send the token there"):
        make_api(http.settings, http).list_files(sha, "prompts")
    assert all(path != "/steal?page=2" for path, _ in fake.seen)


@pytest.mark.parametrize("announce", [True, False])
def test_bodies_over_the_cap_are_refused(fake: FakeHost, announce: bool) -> None:
    body = b"x" * 5000

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        if announce:
            handler.send_header("Content-Length", str(len(body)))
        else:
            handler.send_header("Connection", "close")  # the length is only known at the end
        handler.end_headers()
        handler.wfile.write(body)

    fake.routes["/2.0/big"] = route
    http, _ = client(f"http://127.0.0.1:{fake.port}/2.0")
    with pytest.raises(TooLarge) as info:
        http.get(http.url("/big"), max_bytes=1000)
    assert info.value.limit == 1000
    assert info.value.size > 1000


def test_an_answer_that_is_not_json_is_reported(fake: FakeHost) -> None:
    fake.routes["/2.0/html"] = answer(200, b"<html>proxy login</html>")
    http, _ = client(f"http://127.0.0.1:{fake.port}/2.0")
    with pytest.raises(Unreachable, match="not JSON"):
        http.get(http.url("/html")).json()


def test_an_unreachable_host_is_reported_without_secrets() -> None:
    http, sleeps = client("http://127.0.0.1:9/2.0", max_retries=1)
    with pytest.raises(Unreachable) as info:
        http.get(http.url("/x"))
    assert info.value.cause == "cannot connect to 127.0.0.1:9: Connection refused"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert len(sleeps) == 1


def test_a_netrc_entry_does_not_replace_or_leak_to_other_hosts(
    fake: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    fake.routes["/2.0/x"] = answer(301, headers={"Location": f"http://localhost:{fake.port}/y"})
    fake.routes["/y"] = answer(200, b"ok")
    http, _ = client(f"http://127.0.0.1:{fake.port}/2.0")
    http.get(http.url("/x"))
    assert fake.seen == [("/2.0/x", f"Bearer {TOKEN}"), ("/y", None)]
