"""The source's state machine, driven through its repository seam and a hand-moved clock.

The emulator cannot hold an answer computed before a push and deliver it after; a scripted
repository can, which is what the race between a running refresh and an invalidation needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from promptdock import SourceAuthError, SourceConfig
from promptdock_bitbucket import BitbucketSource
from promptdock_bitbucket._api import Change
from promptdock_bitbucket._http import NotFound, Unreachable
from promptdock_bitbucket._singleflight import SingleFlight

SHA1, SHA2, SHA3 = "1" * 40, "2" * 40, "3" * 40


class _Http:
    retries: int | None = None

    def close(self) -> None:
        pass


class ScriptedRepo:
    """A repository whose branch moves when the test says, counting every call."""

    def __init__(self) -> None:
        self.http = _Http()
        self.head = SHA1
        self.files: dict[str, dict[str, bytes]] = {SHA1: {"prompts/hello.prompt": b"User: v1"}}
        self.calls: list[str] = []
        self.gate: threading.Event | None = None  # holds resolve *after* it read the head
        self.resolving = threading.Event()
        self.fail: BaseException | None = None
        self.fail_reads: BaseException | None = None

    def push(self, sha: str, files: dict[str, bytes]) -> None:
        self.files[sha] = {**self.files[self.head], **files}
        self.head = sha

    def default_branch(self) -> str:
        return "main"

    def resolve_branch(self, name: str) -> str:
        self.calls.append("resolve")
        if self.fail is not None:
            raise self.fail
        head = self.head
        self.resolving.set()
        if self.gate is not None:
            self.gate.wait(5)
        return head

    def resolve_ref(self, ref: str) -> str:
        return self.resolve_branch(ref)

    def read(self, sha: str, path: str) -> bytes:
        self.calls.append(f"read {sha[0]} {path}")
        if self.fail_reads is not None:
            raise self.fail_reads
        try:
            return self.files[sha][path]
        except KeyError:
            raise NotFound(404, path) from None

    def list_files(self, sha: str, folder: str) -> dict[str, int | None]:
        self.calls.append("list")
        return dict.fromkeys(self.files[sha])

    def changes(self, new: str, old: str, folder: str) -> list[Change] | None:
        self.calls.append("changes")
        return [
            Change("modified", p, p)
            for p, data in self.files[new].items()
            if self.files[old].get(p) != data
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_source(repo: ScriptedRepo, clock: Callable[[], float], **options: Any) -> BitbucketSource:
    config = SourceConfig(
        "team-a",
        "bitbucket",
        {
            "workspace": "acme",
            "repository": "prompts",
            "access_token": "t",
            "branch": "main",
            "cache_dir": "",
            "cache_ttl": 60,
            **options,
        },
    )
    return BitbucketSource(config, api=repo, clock=clock)  # type: ignore[arg-type]


def test_nothing_is_resolved_within_the_ttl_and_once_after_it() -> None:
    repo, clock = ScriptedRepo(), Clock()
    source = make_source(repo, clock)
    source.load("hello", None)
    clock.now += 59.9
    for _ in range(50):
        source.load("hello", None)
    assert repo.calls == ["resolve", "read 1 prompts/hello.prompt"]
    clock.now += 0.2
    for _ in range(50):
        source.load("hello", None)  # every call past the TTL; one refresh between them
    assert source.wait_idle(5)
    assert repo.calls.count("resolve") == 2
    assert source.status()["state"] == "fresh"


def test_an_invalidation_during_a_refresh_runs_another_one() -> None:
    repo, clock = ScriptedRepo(), Clock()
    source = make_source(repo, clock)
    source.load("hello", None)
    repo.gate = threading.Event()
    clock.now += 61
    source.load("hello", None)  # starts a refresh, which reads the head (SHA1) and blocks
    assert repo.resolving.wait(5)
    repo.push(SHA2, {"prompts/hello.prompt": b"User: v2"})
    assert source.invalidate("main") is True  # the webhook for the push
    repo.gate.set()
    prompt = source.load("hello", None)  # waits for the second round
    assert prompt.body == "User: v2"
    assert prompt.provenance is not None
    assert prompt.provenance.sha == SHA2


def test_a_refresh_that_cannot_fetch_a_changed_file_keeps_the_old_commit() -> None:
    repo, clock = ScriptedRepo(), Clock()
    source = make_source(repo, clock)
    source.load("hello", None)
    repo.push(SHA2, {"prompts/hello.prompt": b"User: v2"})
    repo.fail_reads = Unreachable("connection reset")
    clock.now += 61
    source.load("hello", None)
    assert source.wait_idle(5)
    prompt = source.load("hello", None)
    assert prompt.body == "User: v1"
    assert prompt.provenance is not None
    assert (prompt.provenance.sha, prompt.provenance.is_stale) == (SHA1, True)
    repo.fail_reads = None
    clock.now += 61
    source.load("hello", None)
    assert source.wait_idle(5)
    assert source.load("hello", None).body == "User: v2"


def test_a_revoked_token_during_a_refresh_serves_stale_and_says_why() -> None:
    repo, clock = ScriptedRepo(), Clock()
    source = make_source(repo, clock)
    source.load("hello", None)
    repo.fail = SourceAuthError("Bitbucket rejected the credentials (401): token rejected")
    clock.now += 61
    source.load("hello", None)
    assert source.wait_idle(5)
    prompt = source.load("hello", None)
    assert prompt.provenance is not None
    assert prompt.provenance.is_stale is True
    status = source.status()
    assert status["state"] == "stale"
    assert "token rejected" in status["last_error"]


def test_moving_back_to_a_recent_commit_reads_nothing() -> None:
    repo, clock = ScriptedRepo(), Clock()
    source = make_source(repo, clock)
    source.load("hello", None)
    repo.push(SHA2, {"prompts/hello.prompt": b"User: v2"})
    clock.now += 61
    source.load("hello", None)
    assert source.wait_idle(5)
    repo.head = SHA1  # a revert by force-push
    calls_before = len(repo.calls)
    clock.now += 61
    source.load("hello", None)
    assert source.wait_idle(5)
    assert source.load("hello", None).body == "User: v1"
    assert repo.calls[calls_before:] == ["resolve"]


def test_single_flight_shares_results_and_errors() -> None:
    flights = SingleFlight()
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []
    results: list[object] = []

    def slow() -> int:
        runs.append(1)
        started.set()
        release.wait(5)
        raise Unreachable("down")

    def call() -> None:
        try:
            results.append(flights.run("k", slow))
        except Unreachable as exc:
            results.append(exc)

    first = threading.Thread(target=call)
    first.start()
    assert started.wait(5)
    others = [threading.Thread(target=call) for _ in range(4)]
    for thread in others:
        thread.start()
    release.set()
    for thread in [first, *others]:
        thread.join(5)
    assert len(runs) == 1
    assert len(results) == 5
    assert all(isinstance(r, Unreachable) for r in results)
    assert flights.run("k", lambda: 7) == 7  # the key is free again


def test_a_source_for_another_ref_ignores_the_invalidation() -> None:
    repo, clock = ScriptedRepo(), Clock()
    source = make_source(repo, clock)
    source.load("hello", None)
    assert source.invalidate("refs/heads/develop") is False
    assert source.invalidate("refs/tags/main") is True  # the same name: refreshed to be safe
    assert source.wait_idle(5)


@pytest.mark.parametrize("ref", ["refs/heads/main", None])
def test_invalidating_before_any_load_does_nothing(ref: str | None) -> None:
    repo = ScriptedRepo()
    assert make_source(repo, Clock()).invalidate(ref) is False
    assert repo.calls == []


def test_a_slow_refresh_after_an_invalidation_holds_callers_only_up_to_the_timeout() -> None:
    repo, clock = ScriptedRepo(), Clock()
    source = make_source(repo, clock, timeout=0.1)
    source.load("hello", None)
    repo.push(SHA2, {"prompts/hello.prompt": b"User: v2"})
    repo.gate = threading.Event()  # Bitbucket takes its time answering
    assert source.invalidate("main") is True
    assert source.load("hello", None).body == "User: v1"  # waited `timeout`, then served
    assert source.load("hello", None).body == "User: v1"
    assert source.status()["state"] == "refreshing"
    repo.gate.set()
    assert source.wait_idle(5)
    assert source.load("hello", None).body == "User: v2"
