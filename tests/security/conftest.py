"""Fixtures for the security tests, and the "security figures" summary at the end of a run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import promptdock_bitbucket
from promptdock import PromptDock, RenderOptions, rendering
from tests.proxy.conftest import prompts_folder, proxy, serve_config, upstream
from tests.security.figures import totals
from tests.support.bitbucket import BitbucketEmulator, GitRepo

# The proxy's own fixtures (a real uvicorn server per test), reused by test_proxy.py.
__all__ = ["prompts_folder", "proxy", "serve_config", "upstream"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures counted by the tests that ran (and save them, if asked)."""
    figures = totals()
    if not figures:
        return
    terminalreporter.section("security figures")
    for name, value in figures.items():
        terminalreporter.write_line(f"{name}: {value:,}")
    target = os.environ.get("PROMPTDOCK_FIGURES")
    if target:
        Path(target).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


FAST_LIMIT = 0.25
"""Seconds: the render time limit while the hang payloads run, so the suite stays quick."""


@pytest.fixture
def short_time_limit(monkeypatch: pytest.MonkeyPatch) -> RenderOptions:
    """Render options whose time limit is :data:`FAST_LIMIT` (through the RenderOptions field
    once it exists, else through the module default)."""
    if "max_render_seconds" in RenderOptions.__dataclass_fields__:
        field: dict[str, Any] = {"max_render_seconds": FAST_LIMIT}
        return RenderOptions(**field)
    monkeypatch.setattr(rendering, "MAX_RENDER_SECONDS", FAST_LIMIT)
    return RenderOptions()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Path]:
    """A path a successful injection payload would create; the test fails if it exists."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a template payload executed a command"


# -- a local Bitbucket ------------------------------------------------------------------------

TOKEN = "sec-token-8d1f3a5c"  # distinctive, so tests can grep for leaks
WORKSPACE, REPO = "acme", "prompts"


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    """An empty bare repository (first branch ``main``)."""
    return GitRepo(tmp_path / "bitbucket-repo")


@pytest.fixture
def bitbucket(
    git_repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BitbucketEmulator]:
    """The emulator serving ``git_repo`` as ``acme/prompts``; fails the test if it broke."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    with BitbucketEmulator() as emu:
        emu.add_repository(WORKSPACE, REPO, git_repo)
        emu.add_token(TOKEN, repos=[(WORKSPACE, REPO)])
        yield emu
        promptdock_bitbucket.close_all()
        assert emu.errors == []


@pytest.fixture
def bitbucket_options(bitbucket: BitbucketEmulator, tmp_path: Path) -> dict[str, Any]:
    """Cloud source options for ``acme/prompts`` on the emulator, with short retry waits."""
    return {
        "workspace": WORKSPACE,
        "repository": REPO,
        "access_token": TOKEN,
        "branch": "main",
        "base_url": bitbucket.base_url,
        "cache_dir": str(tmp_path / "snapshots"),
        "retry_backoff": 0.001,
        "max_retries": 2,
        "timeout": 5,
    }


def bitbucket_dock(options: dict[str, Any], name: str = "team-a") -> PromptDock:
    """A PromptDock with one Bitbucket source ``name``."""
    return PromptDock(sources={name: {"kind": "bitbucket", **options}})
