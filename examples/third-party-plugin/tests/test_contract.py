"""promptdock-zipfile passes the contract every promptdock source must pass."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from promptdock import SourceConfig
from promptdock.testing import SourceContract


class TestZipSource(SourceContract):
    @pytest.fixture
    def make_source(self, tmp_path: Path) -> Callable[[Mapping[str, str]], SourceConfig]:
        def make(files: Mapping[str, str]) -> SourceConfig:
            archive = tmp_path / "prompts.zip"
            with zipfile.ZipFile(archive, "w") as bundle:
                for name, text in files.items():
                    bundle.writestr(f"prompts/{name}", text)
            return SourceConfig("bundle", "zip", {"archive": str(archive), "folder": "prompts"})

        return make


def test_found_through_its_entry_point() -> None:
    import promptdock

    records = {r.name: r for r in promptdock.PromptDock().plugin_host.plugins()}
    assert records["zip"].distribution == "promptdock-zipfile"
