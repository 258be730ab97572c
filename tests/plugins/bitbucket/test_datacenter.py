"""Bitbucket Data Center (REST 1.0): branches and tags to SHAs, ``raw`` reads, refreshes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.plugins.bitbucket.conftest import commit_prompts, make_dock, settle
from tests.support.bitbucket import BitbucketEmulator, GitRepo


def test_a_cold_load_resolves_the_branch_then_reads_raw_at_the_sha(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, dc_options: dict[str, Any]
) -> None:
    sha = commit_prompts(git_repo, {"hello.prompt": "User: hi"})
    git_repo.branch("main-old")  # filterText matches it too: the exact name must win
    commit_prompts(git_repo, {"hello.prompt": "User: old"}, branch="main-old")
    prompt = make_dock(dc_options).get_prompt("hello")
    assert prompt.body == "User: hi"
    assert prompt.provenance is not None
    assert (prompt.provenance.sha, prompt.provenance.location) == (sha, "ACME/prompts")
    paths = [(r.path.rsplit("/", 2)[-2:], r.query.get("at")) for r in bitbucket.requests]
    assert paths == [(["prompts", "branches"], None), (["prompts", "hello.prompt"], sha)]
    assert {r.auth for r in bitbucket.requests} == {"bearer"}


@pytest.mark.parametrize("kind", ["tag", "sha"])
def test_tags_and_commits(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, dc_options: dict[str, Any], kind: str
) -> None:
    sha = commit_prompts(git_repo, {"hello.prompt": "User: v1"})
    git_repo.tag("v1", sha)
    commit_prompts(git_repo, {"hello.prompt": "User: v2"})
    ref = "v1" if kind == "tag" else sha[:12]
    prompt = make_dock({**dc_options, "branch": None, "ref": ref}).get_prompt("hello")
    assert prompt.body == "User: v1"
    assert prompt.provenance is not None
    assert prompt.provenance.sha == sha


def test_the_default_branch_is_asked_for(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, dc_options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"hello.prompt": "User: hi"})
    prompt = make_dock({**dc_options, "branch": None}).get_prompt("hello")
    assert prompt.provenance is not None
    assert prompt.provenance.ref == "main"
    assert bitbucket.request_count("/default-branch") == 1


def test_a_push_is_picked_up_by_re_reading_the_files_in_use(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, dc_options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"a.prompt": "User: a1", "b.prompt": "User: b1", "c.prompt": "x"})
    dock = make_dock({**dc_options, "cache_ttl": 0})
    dock.get_prompt("a")
    dock.get_prompt("b")
    settle(dock)
    new_sha = commit_prompts(git_repo, {"a.prompt": "User: a2"})
    bitbucket.reset_counts()
    dock.get_prompt("a")
    settle(dock)
    assert dock.get_prompt("a").body == "User: a2"
    b = dock.get_prompt("b")
    assert b.provenance is not None
    assert b.provenance.sha == new_sha
    # No diff route is used on Data Center: the two files in use are read at the new SHA.
    raw = [r for r in bitbucket.requests if "/raw/" in r.path]
    assert sorted(r.path.rsplit("/", 1)[1] for r in raw) == ["a.prompt", "b.prompt"]
    assert {r.query["at"] for r in raw} == {new_sha}
