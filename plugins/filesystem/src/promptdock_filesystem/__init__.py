"""promptdock source plugin: ``.prompt`` files in a local folder.

Kind ``filesystem``, alias ``dotprompt`` (LiteLLM's name). One option: ``path``, the folder.
Ids are paths without ``.prompt`` (``support/triage``); ``name.vN.prompt`` are versions;
files and folders starting with ``_`` or ``.`` are not listed (``_partials/`` for includes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import promptdock
from promptdock import ConfigError, PromptFile, PromptInfo, SourceConfig, SourceKind
from promptdock_filesystem._folder import PromptFolder

__all__ = ["KIND", "folder_for", "list_prompts", "load_prompt", "source_kinds"]

KIND = "filesystem"

_folders: dict[SourceConfig, PromptFolder] = {}
_folders_lock = threading.Lock()


def _validate(options: Mapping[str, Any]) -> Mapping[str, Any]:
    unknown = sorted(set(options) - {"path"})
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for a filesystem source (it takes only 'path')",
            key=unknown[0],
        )
    path = options.get("path")
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise ConfigError(
            "a filesystem source needs 'path': the folder of .prompt files", key="path"
        )
    # Resolved once, when the source is first used: a later os.chdir() does not move it.
    return {"path": os.path.abspath(os.path.expanduser(os.fspath(path)))}


# The last source served and its folder, one tuple replaced whole: a dock passes the same
# SourceConfig object on every call, and comparing identities skips hashing the config.
_last: tuple[SourceConfig | None, PromptFolder | None] = (None, None)


def folder_for(source: SourceConfig) -> PromptFolder:
    """The (shared, cached) :class:`PromptFolder` serving ``source``."""
    global _last
    last_source, folder = _last
    if last_source is source and folder is not None:
        return folder
    folder = _folders.get(source)
    if folder is None:
        with _folders_lock:
            folder = _folders.get(source)
            if folder is None:
                folder = _folders[source] = PromptFolder(source)
    _last = (source, folder)
    return folder


@promptdock.hookimpl
def source_kinds() -> list[SourceKind]:
    """Serve ``filesystem`` (alias ``dotprompt``)."""
    return [
        SourceKind(
            KIND, aliases=("dotprompt",), distribution="promptdock-filesystem", validate=_validate
        )
    ]


@promptdock.hookimpl
def load_prompt(source: SourceConfig, prompt_id: str, version: int | None) -> PromptFile | None:
    """Load ``prompt_id`` from the folder, or ``None`` for other kinds."""
    if source.kind != KIND:
        return None
    return folder_for(source).load(prompt_id, version)


@promptdock.hookimpl
def list_prompts(source: SourceConfig) -> list[PromptInfo] | None:
    """List the folder recursively, or ``None`` for other kinds."""
    if source.kind != KIND:
        return None
    return folder_for(source).listing()
