"""Option validation: defaults, ``os.environ/NAME`` references, and errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promptdock import ConfigError, PromptDock
from promptdock_bitbucket import validate
from promptdock_bitbucket._config import CLOUD_BASE_URL, DEFAULTS, settings_from

BASE = {"workspace": "acme", "repository": "prompts", "access_token": "tok-123"}


def test_defaults_fill_every_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    options = validate(BASE)
    assert set(options) == set(DEFAULTS)
    assert options["api"] == "cloud"
    assert options["base_url"] == CLOUD_BASE_URL
    assert options["prompt_folder"] == "prompts"
    assert options["branch"] is None  # the repository's main branch
    assert options["cache_ttl"] == 60.0
    assert options["max_file_size"] == 1 << 20
    assert options["cache_dir"] == str(tmp_path / "promptdock" / "bitbucket")
    assert validate(options) == options  # idempotent


def test_environment_references_are_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_TOKEN", "from-env")
    monkeypatch.setenv("BB_TTL", "5")
    options = validate(
        {**BASE, "access_token": "os.environ/BB_TOKEN", "cache_ttl": "os.environ/BB_TTL"}
    )
    assert (options["access_token"], options["cache_ttl"]) == ("from-env", 5.0)


def test_an_unset_environment_variable_names_the_key_and_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BB_MISSING", raising=False)
    with pytest.raises(ConfigError) as info:
        validate({**BASE, "access_token": "os.environ/BB_MISSING"})
    assert info.value.key == "access_token"
    assert "environment variable BB_MISSING, which is not set" in str(info.value)


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        ({"workspace": None}, "workspace", "needs 'workspace'"),
        ({"repository": ""}, "repository", "needs 'repository'"),
        ({"repository": "acme/prompts"}, "repository", "single name"),
        ({"access_token": None}, "access_token", "os.environ/BITBUCKET_TOKEN"),
        ({"access_token": "tok\n"}, "access_token", "whitespace or control characters"),
        ({"auth_method": "oauth"}, "auth_method", "token, basic"),
        ({"auth_method": "basic"}, "username", "Atlassian account email"),
        ({"api": "server"}, "api", "cloud, datacenter"),
        ({"branch": "main", "ref": "v1"}, "ref", "not both"),
        ({"branch": ""}, "branch", "non-empty"),
        ({"prompt_folder": "../up"}, "prompt_folder", "plain relative folder"),
        ({"base_url": "ftp://x"}, "base_url", "http(s) URL"),
        ({"base_url": "https://api.bitbucket.org"}, "base_url", "ends in /2.0"),
        ({"base_url": "https://u:p@x/2.0"}, "base_url", "credentials"),
        ({"cache_ttl": -1}, "cache_ttl", ">= 0"),
        ({"timeout": "soon"}, "timeout", "a number"),
        ({"max_retries": 1.5}, "max_retries", "an integer"),
        ({"max_depth": True}, "max_depth", "an integer"),
        ({"project_key": "ACME"}, "project_key", "Data Center option"),
        ({"branches": "main"}, "branches", "Did you mean 'branch'?"),
    ],
)
def test_bad_options_name_their_key(change: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate({**BASE, **change})
    assert info.value.key == key
    assert fragment in str(info.value)
    assert "tok-123" not in str(info.value)


def test_data_center_needs_a_project_key_and_a_server() -> None:
    dc = {"api": "datacenter", "repository": "prompts", "access_token": "t"}
    with pytest.raises(ConfigError) as info:
        validate({**dc, "base_url": "https://bb.example.com"})
    assert info.value.key == "project_key"
    with pytest.raises(ConfigError) as info:
        validate({**dc, "project_key": "ACME"})
    assert info.value.key == "base_url"
    with pytest.raises(ConfigError) as info:
        validate({**dc, "workspace": "acme", "base_url": "https://bb.example.com"})
    assert info.value.key == "workspace"
    options = validate({**dc, "project_key": "ACME", "base_url": "https://bb.example.com/"})
    assert options["base_url"] == "https://bb.example.com/rest/api/1.0"
    settings = settings_from(options)
    assert (settings.owner, settings.location) == ("ACME", "ACME/prompts")


def test_normalisation(tmp_path: Path) -> None:
    options = validate(
        {
            **BASE,
            "branch": "refs/heads/release/1",
            "prompt_folder": "/teams/support/",
            "base_url": "http://127.0.0.1:8080/2.0/",
            "cache_dir": str(tmp_path / "snap"),
            "auth_method": "BASIC",
            "username": " dev@example.com ",
        }
    )
    assert options["branch"] == "release/1"
    assert options["prompt_folder"] == "teams/support"
    assert options["base_url"] == "http://127.0.0.1:8080/2.0"
    assert (options["auth_method"], options["username"]) == ("basic", "dev@example.com")
    assert options["cache_dir"] == str(tmp_path / "snap")
    assert validate({**BASE, "cache_dir": ""})["cache_dir"] is None
    assert validate({**BASE, "prompt_folder": ""})["prompt_folder"] == ""


def test_settings_hide_the_token() -> None:
    settings = settings_from(BASE)
    assert "tok-123" not in repr(settings)
    assert settings.pinned_sha is None
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert settings_from({**BASE, "ref": sha}).pinned_sha == sha


def test_the_dock_reports_the_full_key_path() -> None:
    dock = PromptDock(sources={"team-a": {"kind": "bitbucket", **BASE, "workspace": ""}})
    with pytest.raises(ConfigError) as info:
        dock.get_source("team-a")
    assert info.value.key == "sources.team-a.workspace"
    assert str(info.value).startswith("source 'team-a': a bitbucket source needs 'workspace'")
