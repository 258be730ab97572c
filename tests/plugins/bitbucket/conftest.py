"""Fixtures for the Bitbucket source plugin: a local emulator serving a real git repository.

Every test gets a fresh emulator (``bitbucket``) on its own port, serving ``git_repo`` as the
Cloud repository ``acme/prompts`` and the Data Center repository ``ACME/prompts``, readable
with :data:`TOKEN`. ``options`` are source options pointing at it, with short retry delays and
a snapshot folder inside the test's temporary folder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import promptdock_bitbucket
from promptdock import PromptDock
from promptdock_bitbucket import BitbucketSource
from tests.support.bitbucket import BitbucketEmulator, GitRepo

TOKEN = "test-token-5f2c9a"  # distinctive, so tests can grep for leaks
WORKSPACE, REPO = "acme", "prompts"
DC_PROJECT = "ACME"


def commit_prompts(
    git_repo: GitRepo,
    files: Mapping[str, str | None],
    *,
    folder: str = "prompts",
    message: str = "Update prompts",
    branch: str = "main",
) -> str:
    """Commit ``files`` (paths relative to ``folder``) and return the new commit's SHA."""
    prefix = f"{folder}/" if folder else ""
    return git_repo.commit({prefix + k: v for k, v in files.items()}, message, branch=branch)


@pytest.fixture(autouse=True)
def _fresh_plugin_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # The default cache_dir lives under XDG_CACHE_HOME: never the developer's real one.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    yield
    promptdock_bitbucket.close_all()


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    """An empty bare repository (first branch ``main``)."""
    return GitRepo(tmp_path / "bitbucket-repo")


@pytest.fixture
def bitbucket(git_repo: GitRepo) -> Iterator[BitbucketEmulator]:
    """The emulator serving ``git_repo``; fails the test if the emulator itself broke."""
    with BitbucketEmulator() as emu:
        emu.add_repository(WORKSPACE, REPO, git_repo)
        emu.add_dc_repository(DC_PROJECT, REPO, git_repo)
        emu.add_token(TOKEN, repos=[(WORKSPACE, REPO), (DC_PROJECT, REPO)])
        yield emu
        assert emu.errors == []


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """Where the source persists its snapshot."""
    return tmp_path / "snapshots"


@pytest.fixture
def options(bitbucket: BitbucketEmulator, cache_dir: Path) -> dict[str, Any]:
    """Cloud source options for ``acme/prompts`` on the emulator (branch ``main``)."""
    return {
        "workspace": WORKSPACE,
        "repository": REPO,
        "access_token": TOKEN,
        "branch": "main",
        "base_url": bitbucket.base_url,
        "cache_dir": str(cache_dir),
        "retry_backoff": 0.001,
        "max_retries": 2,
        "timeout": 5,
    }


@pytest.fixture
def dc_options(bitbucket: BitbucketEmulator, cache_dir: Path) -> dict[str, Any]:
    """Data Center source options for ``ACME/prompts`` on the emulator (branch ``main``)."""
    return {
        "api": "datacenter",
        "project_key": DC_PROJECT,
        "repository": REPO,
        "access_token": TOKEN,
        "branch": "main",
        "base_url": bitbucket.dc_base_url,
        "cache_dir": str(cache_dir),
        "retry_backoff": 0.001,
        "max_retries": 2,
        "timeout": 5,
    }


def make_dock(source_options: Mapping[str, Any], name: str = "team-a") -> PromptDock:
    """A PromptDock with one Bitbucket source ``name`` (plugins from their entry points)."""
    return PromptDock(sources={name: {"kind": "bitbucket", **source_options}})


def source_of(dock: PromptDock, name: str = "team-a") -> BitbucketSource:
    """The plugin's source object behind ``name`` in ``dock``."""
    return promptdock_bitbucket.source_for(dock.get_source(name))


def settle(dock: PromptDock, name: str = "team-a") -> None:
    """Wait for the source's background refresh, if one runs (bounded)."""
    assert source_of(dock, name).wait_idle(10.0), "the background refresh did not finish"
