"""Failing networks: Bitbucket and the model upstream misbehave; nothing is lost or mixed.

For each fault the tests pin the behaviour (retried and served, stale served, or a clear error),
count the requests it cost, and check that the prompts served always come from one commit: a
refresh that fails half-way never leaves one file at the new commit and another at the old.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import promptdock_bitbucket
from promptdock import (
    DispatchError,
    PromptDock,
    PromptFile,
    SourceUnavailableError,
    UpstreamTimeoutError,
)
from promptdock.dispatch import openai_http
from tests.security.conftest import bitbucket_dock
from tests.security.figures import count
from tests.support.bitbucket import BitbucketEmulator, GitRepo
from tests.support.openai_server import OpenAIServer

RESOLVE = "/refs/branches/"
READ = "/src/"

FAULTS: dict[str, dict[str, Any]] = {
    "latency spike": {"delay": 0.6},
    "connection reset": {"drop_connection": True},
    "truncated body": {"truncate": True},
    "429 with Retry-After: 0": {"status": 429, "headers": {"Retry-After": "0"}},
    "500": {"status": 500},
    "502": {"status": 502},
    "503": {"status": 503},
    "504": {"status": 504},
    "555": {"status": 555},
    "Retry-After date in the past (clock behind)": {
        "status": 429,
        "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
    },
    "Retry-After that is not a date": {"status": 429, "headers": {"Retry-After": "soon"}},
}
"""Faults that are retried: one of them costs one more request and nothing else."""

FAIL_FAST: dict[str, dict[str, Any]] = {
    "Retry-After date far ahead (clock skewed)": {
        "status": 503,
        "headers": {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"},
    },
    "Retry-After of a day": {"status": 429, "headers": {"Retry-After": "86400"}},
    "invalid JSON from a broken proxy": {"status": 200, "body": b"<html>proxy error</html>"},
}
"""Faults not worth waiting for: the request fails at once (one request), with a clear error.
``Retry-After`` longer than ``max_retry_wait`` would block a caller, and a 200 that is not JSON
will not change by asking again."""

MAX_RETRIES = 2

FULL = os.environ.get("PROMPTDOCK_SECURITY_FULL") == "1"
"""``nox -s security_long`` runs every case; the default suite runs every third one."""


def _cases(cases: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return cases if FULL else cases[::3]


# Every fault is tried where it hurts most (resolving the branch, which every refresh needs);
# a representative few also where files are read and where a refresh asks what changed.
_SOME = ("latency spike", "connection reset", "truncated body", "503")
_ONCE = [(fault, RESOLVE) for fault in FAULTS] + [(fault, READ) for fault in _SOME]
_STORMS = [(fault, RESOLVE) for fault in (*FAULTS, *FAIL_FAST)] + [
    (fault, READ) for fault in (*_SOME, "Retry-After date far ahead (clock skewed)")
]
_DIFFSTAT = ("connection reset", "503", "invalid JSON from a broken proxy")
ONCE = _cases(_ONCE)
STORMS = _cases(_STORMS)
REFRESH_STORMS = _cases([*_STORMS, *((fault, "/diffstat/") for fault in _DIFFSTAT)])
UPSTREAM_STEP = 1 if FULL else 2


@pytest.fixture
def repo(git_repo: GitRepo) -> GitRepo:
    """Commit A: two prompts whose text names the commit."""
    git_repo.commit({"prompts/a.prompt": "User: a@A", "prompts/b.prompt": "User: b@A"}, "A")
    return git_repo


@pytest.fixture
def options(bitbucket_options: dict[str, Any]) -> dict[str, Any]:
    """Short timeouts, so a latency spike times out quickly."""
    return {**bitbucket_options, "timeout": 0.3, "max_retries": MAX_RETRIES}


def _settle(dock: PromptDock) -> None:
    assert promptdock_bitbucket.source_for(dock.get_source("team-a")).wait_idle(10.0)


def _served(dock: PromptDock) -> tuple[PromptFile, PromptFile]:
    """Both prompts, checked to come from one commit with that commit's text."""
    a, b = dock.get_prompt("a"), dock.get_prompt("b")
    assert a.provenance is not None
    assert b.provenance is not None
    assert a.provenance.sha == b.provenance.sha, "a torn snapshot: two commits served at once"
    return a, b


@pytest.mark.parametrize(("fault", "route"), ONCE)
def test_one_fault_is_retried_and_costs_one_request(
    repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any], fault: str, route: str
) -> None:
    bitbucket.inject(route, times=1, **FAULTS[fault])
    dock = bitbucket_dock(options)
    assert dock.render("a").messages == [{"role": "user", "content": "a@A"}]
    # Resolve + read, plus the retry (a delayed answer is logged only once it is sent).
    expected = 2 if fault == "latency spike" else 3
    assert bitbucket.request_count() == expected
    count("faults: Bitbucket fault scenarios")
    count("faults: Bitbucket requests made", bitbucket.request_count())


@pytest.mark.parametrize(("fault", "route"), STORMS)
def test_a_storm_on_a_cold_source_is_a_clear_error(
    repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any], fault: str, route: str
) -> None:
    spec = {**FAULTS, **FAIL_FAST}[fault]
    bitbucket.inject(route, times=50, **spec)
    dock = bitbucket_dock(options)
    with pytest.raises(SourceUnavailableError) as info:
        dock.get_prompt("a")
    message = str(info.value)
    assert message.startswith("source 'team-a': cannot ")
    assert "Bitbucket repository acme/prompts at main" in message
    attempts = 1 if fault in FAIL_FAST else 1 + MAX_RETRIES
    before = 1 if route == READ else 0  # the resolve that succeeded
    if fault != "latency spike":  # delayed answers are cut at close, never logged
        assert bitbucket.request_count() == before + attempts
    count("faults: Bitbucket fault scenarios")
    count("faults: Bitbucket requests made", bitbucket.request_count())


@pytest.mark.parametrize(("fault", "route"), REFRESH_STORMS)
def test_a_storm_during_a_refresh_serves_the_last_commit_whole(
    repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any], fault: str, route: str
) -> None:
    spec = {**FAULTS, **FAIL_FAST}[fault]
    dock = bitbucket_dock(options)
    first = _served(dock)
    old_sha = first[0].provenance.sha if first[0].provenance else None
    new_sha = repo.commit({"prompts/a.prompt": "User: a@B", "prompts/b.prompt": "User: b@B"}, "B")
    bitbucket.reset_counts()
    bitbucket.inject(route, times=50, **spec)
    dock.invalidate("team-a")
    dock.get_prompt("a")
    _settle(dock)
    a, b = _served(dock)
    if a.provenance is not None and a.provenance.sha == new_sha:
        # The diffstat is an optimisation: when it fails, every file in use is read again.
        assert route == "/diffstat/"
        assert (a.body, b.body) == ("User: a@B", "User: b@B")
    else:
        assert a.provenance is not None
        assert a.provenance.sha == old_sha
        assert a.provenance.is_stale
        assert (a.body, b.body) == ("User: a@A", "User: b@A")
    status = promptdock_bitbucket.status(dock.get_source("team-a"))
    assert status["state"] in {"stale", "fresh"}
    count("faults: Bitbucket fault scenarios")
    count("faults: Bitbucket requests made", bitbucket.request_count())
    # When Bitbucket recovers, the next refresh serves the new commit, whole.
    bitbucket.clear_faults()
    dock.invalidate("team-a")
    dock.get_prompt("a")
    _settle(dock)
    a, b = _served(dock)
    assert a.provenance is not None
    assert a.provenance.sha == new_sha
    assert (a.body, b.body) == ("User: a@B", "User: b@B")


def test_an_unreachable_host_is_a_clear_error_cold_and_stale_warm(
    repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    cold = bitbucket_dock({**options, "base_url": f"http://127.0.0.1:{_closed_port()}/2.0"})
    with pytest.raises(SourceUnavailableError, match="Connection refused") as info:
        cold.get_prompt("a")
    assert "acme/prompts at main" in str(info.value)
    warm = bitbucket_dock(options)
    _served(warm)
    repo.commit({"prompts/a.prompt": "User: a@B", "prompts/b.prompt": "User: b@B"}, "B")
    bitbucket.offline = True
    warm.invalidate("team-a")
    warm.get_prompt("a")
    _settle(warm)
    a, b = _served(warm)
    assert a.provenance is not None
    assert a.provenance.is_stale
    assert (a.body, b.body) == ("User: a@A", "User: b@A")
    count("faults: Bitbucket fault scenarios")


def test_a_restart_while_bitbucket_is_down_serves_the_snapshot_whole(
    repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    _served(bitbucket_dock(options))
    promptdock_bitbucket.close_all()  # a restart: only the disk snapshot is left
    bitbucket.offline = True
    a, b = _served(bitbucket_dock(options))
    assert a.provenance is not None
    assert a.provenance.is_stale
    assert (a.body, b.body) == ("User: a@A", "User: b@A")
    count("faults: Bitbucket fault scenarios")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the model upstream -------------------------------------------------------------------------

UPSTREAM_FAULTS: dict[str, dict[str, Any]] = {
    "connection reset": {"drop_connection": True},
    "truncated body": {"truncate": True},
    "429 with Retry-After: 0": {"status": 429, "headers": {"Retry-After": "0"}},
    "500": {"status": 500},
    "502": {"status": 502},
    "503": {"status": 503},
    "504": {"status": 504},
    "Retry-After date in the past (clock behind)": {
        "status": 429,
        "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
    },
    "Retry-After date far ahead (clock skewed)": {
        "status": 503,
        "headers": {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"},
    },
    "Retry-After that is not a date": {"status": 429, "headers": {"Retry-After": "soon"}},
}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The dispatcher's backoff waits, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(openai_http, "_sleep", waits.append)
    yield waits
    openai_http.reset_session()


@pytest.fixture
def upstream_dock(tmp_path: Any) -> PromptDock:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "hello.prompt").write_text("System: be brief\nUser: {{ q }}")
    return PromptDock(prompt_directory=str(folder))


def _ask(dock: PromptDock, server: OpenAIServer, **kwargs: Any) -> Any:
    return dock.completion(
        model="dotprompt/gpt-4o-mini",
        prompt_id="hello",
        prompt_variables={"q": "hi"},
        api_base=server.base_url,
        api_key="sk-upstream-faults-7c2d",
        max_retries=MAX_RETRIES,
        **kwargs,
    )


@pytest.mark.parametrize("fault", list(UPSTREAM_FAULTS)[::UPSTREAM_STEP])
def test_one_upstream_fault_is_retried(
    upstream_dock: PromptDock, openai_server: OpenAIServer, sleeps: list[float], fault: str
) -> None:
    openai_server.enqueue(**UPSTREAM_FAULTS[fault])
    response = _ask(upstream_dock, openai_server)
    assert response.choices[0].message.content == "echo: hi"
    assert response.prompt.prompt_id == "hello"
    assert len(openai_server.requests) == 2
    assert len(sleeps) == 1
    assert all(0 <= wait <= 60 for wait in sleeps)  # waits are capped, however skewed the clock
    count("faults: upstream fault scenarios")
    count("faults: upstream requests made", len(openai_server.requests))


@pytest.mark.parametrize("fault", list(UPSTREAM_FAULTS)[1::UPSTREAM_STEP])
def test_an_upstream_storm_is_a_clear_error_after_the_retries(
    upstream_dock: PromptDock, openai_server: OpenAIServer, sleeps: list[float], fault: str
) -> None:
    openai_server.enqueue(times=50, **UPSTREAM_FAULTS[fault])
    with pytest.raises(DispatchError) as info:
        _ask(upstream_dock, openai_server)
    assert "sk-upstream-faults-7c2d" not in str(info.value)
    assert str(info.value)
    assert len(openai_server.requests) == 1 + MAX_RETRIES
    count("faults: upstream fault scenarios")
    count("faults: upstream requests made", len(openai_server.requests))


def test_an_upstream_latency_spike_is_a_timeout(
    upstream_dock: PromptDock, openai_server: OpenAIServer, sleeps: list[float]
) -> None:
    openai_server.enqueue(delay=2.0)
    with pytest.raises(UpstreamTimeoutError):
        _ask(upstream_dock, openai_server, timeout=0.2)
    count("faults: upstream fault scenarios")
    count("faults: upstream requests made", len(openai_server.requests))


def test_an_unreachable_upstream_is_a_clear_error(
    upstream_dock: PromptDock, sleeps: list[float]
) -> None:
    port = _closed_port()
    with pytest.raises(DispatchError, match=f"127.0.0.1:{port}"):
        upstream_dock.completion(
            model="dotprompt/gpt-4o-mini",
            prompt_id="hello",
            prompt_variables={"q": "hi"},
            api_base=f"http://127.0.0.1:{port}/v1",
            max_retries=MAX_RETRIES,
        )
    count("faults: upstream fault scenarios")
