"""Listing: one recursive paged walk, 555 fallbacks, diffstat refreshes, broken files listed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from promptdock import PromptDock
from tests.plugins.bitbucket.conftest import (
    DC_PROJECT,
    REPO,
    TOKEN,
    WORKSPACE,
    commit_prompts,
    make_dock,
    settle,
)
from tests.support.bitbucket import BitbucketEmulator, GitRepo

TEXT = "---\ndescription: {d}\n---\nUser: {{{{ q }}}}\n"


def nested(count_a: int, count_b: int, count_c: int) -> dict[str, str]:
    """``team{i}/area{j}/p{k}.prompt`` files."""
    return {
        f"team{i}/area{j}/p{k}.prompt": TEXT.format(d=f"{i}-{j}-{k}")
        for i in range(count_a)
        for j in range(count_b)
        for k in range(count_c)
    }


def listing_requests(emu: BitbucketEmulator) -> list[str]:
    return [r.path for r in emu.requests if r.path.endswith("/") and "/src/" in r.path]


def test_a_thousand_nested_prompts_take_the_minimum_of_requests(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    # One content for all: the emulator reads each distinct blob with a git subprocess.
    files = dict.fromkeys(nested(10, 10, 10), TEXT.format(d="same"))
    commit_prompts(git_repo, {**files, "README.md": "not a prompt"})
    dock = make_dock(options)
    listed = dock.list_prompts()
    assert len(listed) == 1000
    info = {i.id: i for i in listed}["team3/area4/p5"]
    assert (info.error, info.path) == (None, "prompts/team3/area4/p5.prompt")
    entries = 1000 + 10 + 100 + 1  # files, folders at two levels, the README
    assert bitbucket.request_count("/refs/branches/") == 1
    # One recursive walk, 100 entries a page, following `next`; then each file once.
    assert len(listing_requests(bitbucket)) == math.ceil(entries / 100)
    assert bitbucket.request_count("/src/") - len(listing_requests(bitbucket)) == 1000
    bitbucket.reset_counts()
    assert dock.list_prompts() == listed
    assert dock.get_prompt("team9/area9/p9").description == "same"
    assert bitbucket.request_count() == 0


def test_pages_are_followed_through_next_exactly(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, dict.fromkeys(nested(3, 3, 15), "User: same"))
    make_dock(options).list_prompts()
    pages = [r for r in bitbucket.requests if r.path.endswith("/prompts/")]
    assert len(pages) == math.ceil((135 + 3 + 9) / 100)
    assert pages[0].query == {
        "max_depth": "10",
        "pagelen": "100",
        "fields": "next,values.path,values.type,values.size,values.attributes",
    }
    assert "page" in pages[1].query  # the opaque token the server put into `next`


def test_a_555_lowers_the_depth_and_walks_deeper_folders_separately(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    repo = GitRepo(tmp_path / "deep")
    files = {"a/b/c/d/e/deep.prompt": "deep", "a/top.prompt": "top", "x/y.prompt": "y"}
    commit_prompts(repo, files)
    with BitbucketEmulator(max_depth_limit=2) as emu:
        emu.add_repository(WORKSPACE, REPO, repo)
        emu.add_token(TOKEN)
        dock = make_dock({**options, "base_url": emu.base_url})
        ids = [info.id for info in dock.list_prompts()]
        assert ids == ["a/b/c/d/e/deep", "a/top", "x/y"]
        statuses = [r.status for r in emu.requests if r.path.endswith("/")]
        assert statuses[:2] == [555, 555]  # max_depth 10, then 5
        assert all(status == 200 for status in statuses[2:])
        assert emu.errors == []


def test_a_listing_too_large_for_one_walk_goes_folder_by_folder(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    repo = GitRepo(tmp_path / "wide")
    commit_prompts(repo, nested(3, 2, 2))
    with BitbucketEmulator(max_listing_entries=4) as emu:
        emu.add_repository(WORKSPACE, REPO, repo)
        emu.add_token(TOKEN)
        dock = make_dock({**options, "base_url": emu.base_url})
        assert len(dock.list_prompts()) == 12
        assert emu.errors == []


def test_a_refreshed_listing_fetches_only_changed_files(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    files = nested(2, 3, 5)
    commit_prompts(git_repo, files)
    dock = make_dock({**options, "cache_ttl": 0})
    before = {i.id: i for i in dock.list_prompts()}
    settle(dock)
    new_sha = commit_prompts(
        git_repo,
        {
            "team0/area0/p0.prompt": TEXT.format(d="changed"),
            "team1/area2/p4.prompt": TEXT.format(d="changed too"),
            "team1/new.prompt": TEXT.format(d="new"),
            "team0/area1/p1.prompt": None,
        },
    )
    bitbucket.reset_counts()
    assert {i.id: i for i in dock.list_prompts()} == before  # served at once, refreshed behind
    settle(dock)
    after = {i.id: i for i in dock.list_prompts()}
    assert after["team0/area0/p0"].description == "changed"
    assert after["team1/new"].description == "new"
    assert "team0/area1/p1" not in after
    assert len(after) == len(before)
    assert bitbucket.request_count("/diffstat/") == 1
    assert listing_requests(bitbucket) == []
    fetched = sorted(
        r.path.rsplit("/prompts/", 1)[1] for r in bitbucket.requests if "/src/" in r.path
    )
    assert fetched == ["team0/area0/p0.prompt", "team1/area2/p4.prompt", "team1/new.prompt"]
    assert all(new_sha in r.path for r in bitbucket.requests if "/src/" in r.path)


def test_broken_and_oversized_files_are_listed_with_their_error(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(
        git_repo,
        {
            "good.prompt": "User: hi",
            "broken.prompt": "---\nmodel: [x\n---\nUser: hi",
            "big.prompt": "User: " + "x" * 300,
        },
    )
    listed = {i.id: i for i in make_dock({**options, "max_file_size": 200}).list_prompts()}
    assert listed["good"].error is None
    assert listed["broken"].error is not None
    assert "prompts/broken.prompt:2" in listed["broken"].error
    assert listed["big"].error is not None
    assert "max_file_size" in listed["big"].error


def test_partials_hidden_folders_and_other_files_are_not_listed(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(
        git_repo,
        {
            "hello.prompt": "User: hi",
            "_partials/tone.prompt": "calm",
            ".drafts/wip.prompt": "wip",
            "notes.md": "# notes",
        },
    )
    commit_prompts(git_repo, {"outside.prompt": "not in the prompt folder"}, folder="")
    assert [i.id for i in make_dock(options).list_prompts()] == ["hello"]


def test_a_missing_prompt_folder_is_an_empty_source(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"README.md": "nothing here"}, folder="")
    assert make_dock(options).list_prompts() == []


def test_data_center_listing_follows_next_page_start(
    tmp_path: Path, dc_options: dict[str, Any]
) -> None:
    repo = GitRepo(tmp_path / "dc")
    commit_prompts(repo, nested(1, 5, 5))
    with BitbucketEmulator(dc_limit_cap=10) as emu:
        emu.add_dc_repository(DC_PROJECT, REPO, repo)
        emu.add_token(TOKEN)
        dock = PromptDock(
            sources={"dc": {"kind": "bitbucket", **dc_options, "base_url": emu.dc_base_url}}
        )
        assert len(dock.list_prompts()) == 25
        pages = [r for r in emu.requests if "/files/" in r.path]
        assert [r.query["start"] for r in pages] == ["0", "10", "20"]
        assert emu.errors == []
