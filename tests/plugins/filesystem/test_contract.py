"""The filesystem source passes the shared source contract."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from promptdock import SourceConfig
from promptdock.testing import SourceContract


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (relative path → text) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


class TestFilesystemSource(SourceContract):
    @pytest.fixture
    def make_source(self, tmp_path: Path) -> Callable[[Mapping[str, str]], SourceConfig]:
        def make(files: Mapping[str, str]) -> SourceConfig:
            root = tmp_path / "prompts"
            root.mkdir(exist_ok=True)
            write_files(root, files)
            return SourceConfig("local", "filesystem", {"path": str(root)})

        return make


class TestDotpromptAlias(SourceContract):
    """The LiteLLM name ``dotprompt`` is the same kind."""

    @pytest.fixture
    def make_source(self, tmp_path: Path) -> Callable[[Mapping[str, str]], SourceConfig]:
        def make(files: Mapping[str, str]) -> SourceConfig:
            write_files(tmp_path, files)
            return SourceConfig("dotprompt", "dotprompt", {"path": str(tmp_path)})

        return make
