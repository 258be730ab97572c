"""The Bitbucket source passes the shared source contract, on Cloud and on Data Center."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from promptdock import SourceConfig
from promptdock.testing import SourceContract
from tests.plugins.bitbucket.conftest import commit_prompts
from tests.support.bitbucket import GitRepo

MakeSource = Callable[[Mapping[str, str]], SourceConfig]


class TestBitbucketCloudSource(SourceContract):
    @pytest.fixture
    def make_source(self, git_repo: GitRepo, options: dict[str, Any]) -> MakeSource:
        def make(files: Mapping[str, str]) -> SourceConfig:
            commit_prompts(git_repo, files)
            return SourceConfig("team-a", "bitbucket", options)

        return make


class TestBitbucketDataCenterSource(SourceContract):
    @pytest.fixture
    def make_source(self, git_repo: GitRepo, dc_options: dict[str, Any]) -> MakeSource:
        def make(files: Mapping[str, str]) -> SourceConfig:
            commit_prompts(git_repo, files)
            return SourceConfig("team-dc", "bitbucket", dc_options)

        return make


class TestBitbucketRepositoryRoot(SourceContract):
    """``prompt_folder: ""``: ids are paths from the repository root."""

    @pytest.fixture
    def make_source(self, git_repo: GitRepo, options: dict[str, Any]) -> MakeSource:
        def make(files: Mapping[str, str]) -> SourceConfig:
            commit_prompts(git_repo, files, folder="")
            return SourceConfig("root", "bitbucket", {**options, "prompt_folder": ""})

        return make
