"""A tiny in-memory source plugin (kind ``memory``) for core tests that need no filesystem.

Options: ``files``, a mapping of ``"<id>.prompt"`` paths to text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import promptdock
from promptdock import PromptFile, PromptInfo, PromptNotFoundError, SourceConfig, SourceKind
from promptdock.ids import check_prompt_id

KIND = "memory"


def _validate(options: Mapping[str, Any]) -> Mapping[str, Any]:
    files = options.get("files")
    if not isinstance(files, Mapping):
        raise promptdock.ConfigError("a memory source needs 'files': {path: text}", key="files")
    return {"files": dict(files)}


@promptdock.hookimpl
def source_kinds() -> list[SourceKind]:
    return [SourceKind(KIND, aliases=("mem",), distribution="tests", validate=_validate)]


@promptdock.hookimpl
def load_prompt(source: SourceConfig, prompt_id: str, version: int | None) -> PromptFile | None:
    if source.kind != KIND:
        return None
    check_prompt_id(prompt_id, source=source.name)
    stem = prompt_id if version is None else f"{prompt_id}.v{version}"
    text = source.options["files"].get(f"{stem}.prompt")
    if text is None:
        raise PromptNotFoundError(
            f"prompt {prompt_id!r} not found in memory source {source.name!r}",
            prompt_id=prompt_id,
            source=source.name,
        )
    provenance = promptdock.Provenance(
        source=source.name, kind=KIND, prompt_id=prompt_id, version=version, path=f"{stem}.prompt"
    )
    return promptdock.parse_prompt(text, name=prompt_id, version=version, provenance=provenance)


@promptdock.hookimpl
def list_prompts(source: SourceConfig) -> list[PromptInfo] | None:
    if source.kind != KIND:
        return None
    return [
        PromptInfo(id=path.removesuffix(".prompt"), source=source.name, path=path)
        for path in sorted(source.options["files"])
    ]
