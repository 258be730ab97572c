"""Errors are typed and specific, retries are bounded, and the token never leaks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import promptdock_bitbucket
from promptdock import (
    ConfigError,
    PromptDock,
    PromptdockError,
    PromptNotFoundError,
    SourceAuthError,
    SourceUnavailableError,
)
from tests.plugins.bitbucket.conftest import (
    TOKEN,
    WORKSPACE,
    commit_prompts,
    make_dock,
)
from tests.support.bitbucket import BitbucketEmulator, GitRepo

HELLO = "---\nmodel: gpt-4\n---\nUser: Hello {{ name }}\n"


@pytest.fixture
def hello(git_repo: GitRepo) -> str:
    """Commit ``prompts/hello.prompt``; its commit SHA."""
    return commit_prompts(git_repo, {"hello.prompt": HELLO, "support/triage.prompt": HELLO})


def test_a_rejected_token_is_an_auth_error_and_not_retried(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    with pytest.raises(SourceAuthError) as info:
        make_dock({**options, "access_token": "expired-token"}).get_prompt("hello")
    assert isinstance(info.value, PermissionError)
    message = str(info.value)
    assert "token rejected or expired" in message
    assert "acme/prompts" in message
    assert "401" in message
    assert bitbucket.request_count() == 1


def test_a_missing_scope_is_named(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    bitbucket.add_token("pr-only-token", scopes={"pullrequest"})
    with pytest.raises(SourceAuthError) as info:
        make_dock({**options, "access_token": "pr-only-token"}).get_prompt("hello")
    message = str(info.value)
    assert "lacks the scope repository" in message
    assert "it has: pullrequest" in message
    assert bitbucket.request_count() == 1


def test_team_a_cannot_read_team_b_while_both_work_side_by_side(
    tmp_path: Path, hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    team_b = GitRepo(tmp_path / "team-b")
    commit_prompts(team_b, {"triage.prompt": "User: team B triage"})
    bitbucket.add_repository(WORKSPACE, "team-b-prompts", team_b)
    bitbucket.add_token("team-b-token", repos=[(WORKSPACE, "team-b-prompts")])
    b_options = {**options, "repository": "team-b-prompts", "access_token": "team-b-token"}
    dock = PromptDock(
        sources={
            "team-a": {"kind": "bitbucket", **options},
            "team-b": {"kind": "bitbucket", **b_options},
            "a-reads-b": {"kind": "bitbucket", **b_options, "access_token": TOKEN},
        }
    )
    assert dock.render("hello", {"name": "A"}, source="team-a").messages[0]["content"] == "Hello A"
    assert dock.get_prompt("triage", source="team-b").body == "User: team B triage"
    with pytest.raises(SourceAuthError) as info:
        dock.get_prompt("triage", source="a-reads-b")
    assert "acme/team-b-prompts" in str(info.value)
    assert "403" in str(info.value)


def test_a_missing_prompt_names_the_ref_and_the_closest_ids(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    with pytest.raises(PromptNotFoundError) as info:
        make_dock(options).get_prompt("support/triag")
    assert info.value.suggestions == ("support/triage",)
    message = str(info.value)
    assert f"no file prompts/support/triag.prompt in acme/prompts at main ({hello[:12]})" in message
    assert "Did you mean: support/triage?" in message


def test_an_id_with_the_prompt_folder_prefix_gets_a_hint(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    with pytest.raises(PromptNotFoundError) as info:
        make_dock(options).get_prompt("prompts/hello")  # LiteLLM's way of naming it
    assert info.value.suggestions[0] == "hello"
    message = str(info.value)
    assert "relative to prompt_folder 'prompts'" in message
    assert "prompt_id='hello'" in message
    assert "prompt_folder: ''" in message


def test_the_same_id_works_with_the_repository_root_as_folder(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    prompt = make_dock({**options, "prompt_folder": ""}).get_prompt("prompts/hello")
    assert prompt.provenance is not None
    assert prompt.provenance.path == "prompts/hello.prompt"


@pytest.mark.parametrize(("key", "value"), [("branch", "nope"), ("ref", "v9")])
def test_a_missing_branch_or_tag_is_a_config_error(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any], key: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_dock({**options, "branch": None, key: value}).get_prompt("hello")
    assert info.value.key == key
    assert f"{key} {value!r} does not exist in Bitbucket repository acme/prompts" in str(info.value)


def test_server_errors_are_retried_then_succeed(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    bitbucket.inject("/src/", status=503, times=2)
    assert make_dock(options).get_prompt("hello").body == "User: Hello {{ name }}"
    assert [r.status for r in bitbucket.requests if "/src/" in r.path] == [503, 503, 200]


@pytest.mark.parametrize("fault", ["drop_connection", "truncate"])
def test_broken_connections_are_retried(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any], fault: str
) -> None:
    bitbucket.inject(
        "/src/", drop_connection=fault == "drop_connection", truncate=fault == "truncate"
    )
    assert make_dock(options).get_prompt("hello").body == "User: Hello {{ name }}"
    assert bitbucket.request_count("/src/") == 2


def test_retries_are_bounded(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    bitbucket.inject("/refs/", status=502, times=50)
    with pytest.raises(SourceUnavailableError) as info:
        make_dock(options).get_prompt("hello")
    assert "Bitbucket answered 502" in str(info.value)
    assert bitbucket.request_count() == 1 + options["max_retries"]


def test_a_long_retry_after_fails_fast_instead_of_blocking(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    bitbucket.set_rate_limit(TOKEN, 0, retry_after=3600)
    with pytest.raises(SourceUnavailableError) as info:
        make_dock(options).get_prompt("hello")
    assert "rate-limiting" in str(info.value)
    assert bitbucket.request_count() == 1


def test_a_missing_file_is_not_retried(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    with pytest.raises(PromptNotFoundError):
        make_dock(options).get_prompt("nothing")
    assert bitbucket.request_count("/prompts/nothing.prompt") == 1


def test_files_over_the_size_cap_are_refused(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    commit_prompts(git_repo, {"big.prompt": "User: " + "x" * 5000})
    with pytest.raises(ConfigError) as info:
        make_dock({**options, "max_file_size": 1024}).get_prompt("big")
    assert info.value.key == "sources.team-a.max_file_size" or info.value.key == "max_file_size"
    assert "over the max_file_size limit of 1024 bytes" in str(info.value)
    assert "prompts/big.prompt" in str(info.value)


def test_basic_auth_uses_the_account_email_and_an_api_token(
    hello: str, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    bitbucket.add_basic("dev@example.com", "atlassian-api-token")
    basic = {
        **options,
        "auth_method": "basic",
        "username": "dev@example.com",
        "access_token": "atlassian-api-token",
    }
    assert make_dock(basic).get_prompt("hello").id == "hello"
    assert {r.auth for r in bitbucket.requests} == {"basic"}
    with pytest.raises(SourceAuthError) as info:
        make_dock({**basic, "username": "dev"}, name="wrong").get_prompt("hello")
    assert "Atlassian account email" in str(info.value)


def test_data_center_refusals_and_misses_are_typed(
    hello: str, bitbucket: BitbucketEmulator, dc_options: dict[str, Any]
) -> None:
    bitbucket.add_token("other-project-token", repos=[("OTHER", "prompts")])
    with pytest.raises(SourceAuthError) as info:
        make_dock({**dc_options, "access_token": "other-project-token"}).get_prompt("hello")
    assert "token rejected or expired, or it may not read this repository" in str(info.value)
    assert "ACME/prompts" in str(info.value)
    with pytest.raises(PromptNotFoundError) as missing:
        make_dock(dc_options, name="dc").get_prompt("helo")
    assert missing.value.suggestions == ("hello",)


def test_the_token_never_leaks(
    hello: str,
    bitbucket: BitbucketEmulator,
    options: dict[str, Any],
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    dock = make_dock({**options, "cache_ttl": 0})
    dock.get_prompt("hello")
    attempts: list[Callable[[], object]] = [
        lambda: dock.get_prompt("missing"),
        lambda: make_dock({**options, "max_file_size": 1, "cache_dir": ""}, "tiny").get_prompt(
            "hello"
        ),
        lambda: make_dock({**options, "repository": "secret-repo"}, name="x").get_prompt("hello"),
        lambda: make_dock({**options, "timeout": "soon"}, name="bad").get_prompt("hello"),
        lambda: make_dock({**options, "access_token": TOKEN + "\n"}, name="nl").get_prompt("x"),
    ]
    for attempt in attempts:
        with pytest.raises(PromptdockError) as info:
            attempt()
        errors.append(info.value)
    bitbucket.offline = True
    dock.get_prompt("hello")
    promptdock_bitbucket.source_for(dock.get_source("team-a")).wait_idle(10)
    promptdock_bitbucket.close_all()
    with pytest.raises(SourceUnavailableError) as offline:
        make_dock({**options, "cache_dir": ""}).get_prompt("support/triage")
    errors.append(offline.value)
    source = promptdock_bitbucket.source_for(dock.get_source("team-a"))
    seen = [
        caplog.text,
        repr(dock.get_source("team-a")),
        repr(source),
        repr(source.settings),
        repr(source.api.http),
        repr(source.status()),
    ]
    for error in errors:
        seen += [str(error), repr(error), repr(error.args), repr(error.__cause__)]
    seen += [p.read_text(errors="replace") for p in cache_dir.rglob("*") if p.is_file()]
    assert "Connection refused" in caplog.text  # the log did record the outage
    assert [text for text in seen if TOKEN in text] == []
