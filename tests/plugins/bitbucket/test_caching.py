"""Caching: warm loads make no requests, pushes show up, outages serve stale, restarts survive.

Requests are counted at the emulator; nothing here measures time. Where a test must let the
TTL pass it sleeps just over a short ``cache_ttl``; most use ``cache_ttl: 0`` instead, so every
load after the first starts a background refresh, and :func:`settle` waits for it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import promptdock_bitbucket
from promptdock import PromptFile, SourceUnavailableError
from tests.plugins.bitbucket.conftest import (
    REPO,
    TOKEN,
    WORKSPACE,
    commit_prompts,
    make_dock,
    settle,
    source_of,
)
from tests.support.bitbucket import BitbucketEmulator, GitRepo

HELLO = "---\nmodel: gpt-4\n---\nSystem: Be brief.\n\nUser: Hello {{ name }}\n"
HI = "---\nmodel: gpt-4\n---\nSystem: Be brief.\n\nUser: Hi {{ name }}\n"
GREET = 'System: {% include "_shared/tone.prompt" %}\nUser: {{ name }}'


def body(prompt: PromptFile) -> str:
    return prompt.body


def test_warm_loads_make_no_requests_and_reuse_the_parsed_prompt(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    dock = make_dock(options)
    first = dock.get_prompt("hello")
    bitbucket.reset_counts()
    for _ in range(200):
        assert dock.get_prompt("hello") is first
        dock.render("hello", {"name": "Ada"})
        dock.completion(
            model="team-a/gpt-4",
            prompt_id="hello",
            prompt_variables={"name": "Ada"},
            mock_response="ok",
        )
    assert bitbucket.request_count() == 0


def test_a_cold_load_is_one_ref_request_and_one_file_request(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    sha = commit_prompts(git_repo, {"hello.prompt": HELLO, "other.prompt": HI})
    prompt = make_dock(options).get_prompt("hello")
    assert [r.path for r in bitbucket.requests] == [
        "/2.0/repositories/acme/prompts/refs/branches/main",
        f"/2.0/repositories/acme/prompts/src/{sha}/prompts/hello.prompt",
    ]
    assert all(r.auth == "bearer" for r in bitbucket.requests)
    assert prompt.provenance is not None
    assert prompt.provenance.as_dict() == {
        "source": "team-a",
        "kind": "bitbucket",
        "prompt_id": "hello",
        "version": None,
        "path": "prompts/hello.prompt",
        "location": "acme/prompts",
        "ref": "main",
        "sha": sha,
        "content_hash": prompt.provenance.content_hash,
        "is_stale": False,
    }


def test_a_push_is_served_within_one_ttl_without_a_restart(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    dock = make_dock({**options, "cache_ttl": 0.2})
    assert "Hello" in dock.get_prompt("hello").body
    new_sha = commit_prompts(git_repo, {"hello.prompt": HI})
    assert "Hello" in dock.get_prompt("hello").body  # within the TTL: the cached commit
    time.sleep(0.25)
    # Past the TTL the cached prompt is still returned at once; the refresh runs behind it.
    assert "Hello" in dock.get_prompt("hello").body
    settle(dock)
    prompt = dock.get_prompt("hello")
    assert "Hi" in prompt.body
    assert prompt.provenance is not None
    assert prompt.provenance.sha == new_sha


def test_a_refresh_fetches_only_the_files_that_changed(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"a.prompt": "A1", "b.prompt": "B1", "c.prompt": "C1"})
    dock = make_dock({**options, "cache_ttl": 0})
    for name in "abc":
        dock.get_prompt(name)
    settle(dock)
    new_sha = commit_prompts(git_repo, {"a.prompt": "A2"})
    bitbucket.reset_counts()
    dock.get_prompt("b")
    settle(dock)
    assert bitbucket.request_count("/refs/branches/main") == 1
    assert bitbucket.request_count(f"/diffstat/{new_sha}..") == 1
    assert [r.path for r in bitbucket.requests if "/src/" in r.path] == [
        f"/2.0/repositories/acme/prompts/src/{new_sha}/prompts/a.prompt"
    ]
    assert dock.get_prompt("a").body == "A2"
    b = dock.get_prompt("b")
    assert b.body == "B1"
    assert b.provenance is not None
    assert b.provenance.sha == new_sha
    assert bitbucket.request_count("/src/") == 1  # b and c were carried over, not re-read


def test_a_new_highest_version_is_picked_up(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"only.v1.prompt": "one"})
    dock = make_dock({**options, "cache_ttl": 0})
    assert dock.get_prompt("only").version == 1
    settle(dock)
    commit_prompts(git_repo, {"only.v2.prompt": "two"})
    dock.get_prompt("only")
    settle(dock)
    prompt = dock.get_prompt("only")
    assert (prompt.version, prompt.body) == (2, "two")


def test_includes_come_from_the_same_commit_and_follow_pushes(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"_shared/tone.prompt": "Be calm.", "greet.prompt": GREET})
    dock = make_dock({**options, "cache_ttl": 0})
    assert dock.render("greet", {"name": "Ada"}).messages[0]["content"] == "Be calm."
    settle(dock)
    commit_prompts(git_repo, {"_shared/tone.prompt": "Be bold."})
    dock.get_prompt("greet")
    settle(dock)
    bitbucket.reset_counts()
    assert dock.render("greet", {"name": "Ada"}).messages[0]["content"] == "Be bold."
    # The refresh fetched the changed partial ahead of time: rendering waited on nothing.
    assert bitbucket.request_count("/src/") == 0


def test_an_outage_serves_the_cached_commit_flagged_stale(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    sha = commit_prompts(git_repo, {"hello.prompt": HELLO})
    dock = make_dock({**options, "cache_ttl": 0})
    dock.get_prompt("hello")
    settle(dock)
    bitbucket.offline = True
    first = dock.get_prompt("hello")  # returned at once; the refresh fails behind it
    assert first.provenance is not None
    assert first.provenance.is_stale is False
    settle(dock)
    stale = dock.get_prompt("hello")
    assert stale.provenance is not None
    assert (stale.provenance.is_stale, stale.provenance.sha) == (True, sha)
    assert stale.body == first.body
    status = promptdock_bitbucket.status(dock.get_source("team-a"))
    assert status["state"] == "stale"
    assert status["is_stale"] is True
    assert "Connection refused" in status["last_error"]
    settle(dock)
    bitbucket.offline = False
    dock.get_prompt("hello")
    settle(dock)
    recovered = dock.get_prompt("hello")
    assert recovered.provenance is not None
    assert recovered.provenance.is_stale is False
    assert promptdock_bitbucket.status(dock.get_source("team-a"))["last_error"] is None


@pytest.mark.parametrize(
    ("status", "headers", "cause"),
    [
        (503, {}, "503"),
        (500, {}, "500"),
        (429, {"Retry-After": "0"}, "429"),
        (429, {}, "rate-limiting"),
        (555, {}, "555"),
    ],
)
def test_server_errors_and_rate_limits_serve_stale(
    git_repo: GitRepo,
    bitbucket: BitbucketEmulator,
    options: dict[str, Any],
    status: int,
    headers: dict[str, str],
    cause: str,
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    dock = make_dock({**options, "cache_ttl": 0})
    dock.get_prompt("hello")
    settle(dock)
    bitbucket.inject("/refs/branches/", status=status, headers=headers, times=3)
    dock.get_prompt("hello")
    settle(dock)
    prompt = dock.get_prompt("hello")
    assert prompt.provenance is not None
    assert prompt.provenance.is_stale is True
    assert cause in promptdock_bitbucket.status(dock.get_source("team-a"))["last_error"]
    assert bitbucket.request_count("/refs/branches/") == 1 + 3  # the first load, then 1 + 2 retries


def test_a_restart_with_bitbucket_down_serves_the_last_known_good_snapshot(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    sha = commit_prompts(
        git_repo,
        {"hello.prompt": HELLO, "_shared/tone.prompt": "Be calm.", "greet.prompt": GREET},
    )
    dock = make_dock(options)
    dock.get_prompt("hello")
    dock.get_prompt("greet")
    listed = [info.id for info in dock.list_prompts()]
    promptdock_bitbucket.close_all()  # the process ends
    bitbucket.offline = True

    restarted = make_dock(options)
    prompt = restarted.get_prompt("hello")
    assert prompt.provenance is not None
    assert (prompt.provenance.sha, prompt.provenance.is_stale) == (sha, True)
    assert prompt.provenance.ref == "main"
    assert restarted.render("greet", {"name": "Ada"}).messages == [
        {"role": "system", "content": "Be calm."},
        {"role": "user", "content": "Ada"},
    ]
    assert [info.id for info in restarted.list_prompts()] == listed
    assert promptdock_bitbucket.status(restarted.get_source("team-a"))["state"] == "stale"


def test_a_prompt_never_cached_fails_clearly_while_offline(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO, "other.prompt": HI})
    make_dock(options).get_prompt("hello")
    promptdock_bitbucket.close_all()
    bitbucket.offline = True
    with pytest.raises(SourceUnavailableError) as info:
        make_dock(options).get_prompt("other")
    message = str(info.value)
    assert "cannot read prompts/other.prompt" in message
    assert "acme/prompts" in message
    assert "Connection refused" in message


def test_a_restart_online_reuses_the_snapshot_on_disk(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    make_dock(options).get_prompt("hello")
    promptdock_bitbucket.close_all()
    bitbucket.reset_counts()
    prompt = make_dock(options).get_prompt("hello")
    assert prompt.provenance is not None
    assert prompt.provenance.is_stale is False
    assert [r.path.rsplit("/", 2)[-2:] for r in bitbucket.requests] == [["branches", "main"]]


def test_a_restart_after_a_push_fetches_only_what_changed(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"a.prompt": "A1", "b.prompt": "B1"})
    dock = make_dock(options)
    dock.get_prompt("a")
    dock.get_prompt("b")
    promptdock_bitbucket.close_all()
    new_sha = commit_prompts(git_repo, {"a.prompt": "A2"})
    bitbucket.reset_counts()
    restarted = make_dock(options)
    assert restarted.get_prompt("b").body == "B1"
    assert bitbucket.request_count("/src/") == 0
    assert bitbucket.request_count("/diffstat/") == 1
    assert restarted.get_prompt("a").body == "A2"
    assert bitbucket.request_count(f"/src/{new_sha}/prompts/a.prompt") == 1


def test_no_cache_and_no_bitbucket_is_unavailable(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    bitbucket.offline = True
    with pytest.raises(SourceUnavailableError) as info:
        make_dock(options).get_prompt("hello")
    assert isinstance(info.value, ConnectionError)
    message = str(info.value)
    assert "acme/prompts" in message
    assert "Connection refused" in message
    assert "cache" in message


def test_concurrent_cold_callers_cause_one_fetch(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    dock = make_dock(options)
    # Slow answers hold the first caller inside each fetch while the others arrive.
    bitbucket.inject("/refs/branches/", delay=0.2)
    bitbucket.inject("/src/", delay=0.2)
    barrier = threading.Barrier(8)
    results: list[PromptFile] = []
    errors: list[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            results.append(dock.get_prompt("hello"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(results) == 8
    assert all(r is results[0] for r in results)
    assert bitbucket.request_count("/refs/branches/") == 1
    assert bitbucket.request_count("/src/") == 1


def test_invalidate_makes_the_next_load_see_the_push(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    dock = make_dock(options)  # cache_ttl 60 s: only an invalidation shows the push now
    dock.get_prompt("hello")
    new_sha = commit_prompts(git_repo, {"hello.prompt": HI})
    assert dock.invalidate("team-a", "refs/heads/main") is True
    prompt = dock.get_prompt("hello")
    assert prompt.provenance is not None
    assert prompt.provenance.sha == new_sha
    assert "Hi" in prompt.body


def test_invalidate_through_the_public_function_and_options(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    dock = make_dock(options)
    dock.get_prompt("hello")
    commit_prompts(git_repo, {"hello.prompt": HI})
    bitbucket.reset_counts()
    assert promptdock_bitbucket.invalidate(options, ref="develop") is False
    assert bitbucket.request_count() == 0
    assert promptdock_bitbucket.invalidate(options) is True
    assert "Hi" in dock.get_prompt("hello").body


def test_invalidate_of_an_unused_source_is_a_no_op(options: dict[str, Any]) -> None:
    assert promptdock_bitbucket.invalidate(options) is False
    assert make_dock(options).invalidate("team-a") is False


def test_a_pinned_commit_is_never_resolved_again(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    sha = commit_prompts(git_repo, {"hello.prompt": HELLO})
    commit_prompts(git_repo, {"hello.prompt": HI})
    pinned = {**options, "branch": None, "ref": sha, "cache_ttl": 0}
    dock = make_dock(pinned)
    for _ in range(3):
        prompt = dock.get_prompt("hello")
    assert "Hello" in prompt.body
    assert prompt.provenance is not None
    assert prompt.provenance.ref == sha
    assert bitbucket.request_count("/refs/") == 0
    assert bitbucket.request_count() == 1
    assert dock.invalidate("team-a") is False


@pytest.mark.parametrize("kind", ["tag", "short sha"])
def test_a_tag_or_short_sha_is_resolved_to_its_commit(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any], kind: str
) -> None:
    sha = commit_prompts(git_repo, {"hello.prompt": HELLO})
    git_repo.tag("v1", sha)
    commit_prompts(git_repo, {"hello.prompt": HI})
    ref = "v1" if kind == "tag" else sha[:10]
    prompt = make_dock({**options, "branch": None, "ref": ref}).get_prompt("hello")
    assert "Hello" in prompt.body
    assert prompt.provenance is not None
    assert (prompt.provenance.ref, prompt.provenance.sha) == (ref, sha)


def test_a_branch_with_a_slash_works(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": HELLO})
    git_repo.branch("feature/x")
    sha = commit_prompts(git_repo, {"hello.prompt": HI}, branch="feature/x")
    prompt = make_dock({**options, "branch": "feature/x"}).get_prompt("hello")
    assert "Hi" in prompt.body
    assert prompt.provenance is not None
    assert (prompt.provenance.ref, prompt.provenance.sha) == ("feature/x", sha)


def test_without_a_branch_the_main_branch_is_followed(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    repo = GitRepo(tmp_path / "trunk-repo", initial_branch="trunk")
    sha = commit_prompts(repo, {"hello.prompt": HELLO}, branch="trunk")
    with BitbucketEmulator() as emu:
        emu.add_repository(WORKSPACE, REPO, repo, mainbranch="trunk")
        emu.add_token(TOKEN)
        source_options = {**options, "branch": None, "base_url": emu.base_url}
        prompt = make_dock(source_options).get_prompt("hello")
        assert prompt.provenance is not None
        assert (prompt.provenance.ref, prompt.provenance.sha) == ("trunk", sha)
        assert emu.request_count("/refs/branches/trunk") == 1
        assert emu.errors == []


def test_status_reports_the_state_for_a_readiness_probe(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    sha = commit_prompts(git_repo, {"hello.prompt": HELLO})
    dock = make_dock(options)
    before = promptdock_bitbucket.status(options)
    assert (before["state"], before["sha"], before["cached_files"]) == ("cold", None, 0)
    dock.get_prompt("hello")
    status = source_of(dock).status()
    assert status == {
        "source": "team-a",
        "location": "acme/prompts",
        "api": "cloud",
        "ref": "main",
        "state": "fresh",
        "sha": sha,
        "is_stale": False,
        "last_error": None,
        "last_refresh": status["last_refresh"],
        "refreshes": 0,
        "cached_files": 1,
        "listed": False,
    }
    assert promptdock_bitbucket.status(dock.get_source("team-a")) == status
    assert TOKEN not in repr(status)
