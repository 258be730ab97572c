"""A promptdock source plugin serving ``.prompt`` files from a zip archive (kind ``zip``)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import promptdock
from promptdock import (
    ConfigError,
    PromptdockError,
    PromptFile,
    PromptInfo,
    PromptNotFoundError,
    Provenance,
    SourceConfig,
    SourceKind,
)
from promptdock.ids import check_prompt_id, closest_ids, group_prompt_paths, split_version

KIND = "zip"

# Parsed prompts, reused while the archive is unchanged: (source, id, version) -> (mtime, prompt).
_cache: dict[tuple[SourceConfig, str, int | None], tuple[int, PromptFile]] = {}


def _validate(options: Mapping[str, Any]) -> Mapping[str, Any]:
    archive = options.get("archive")
    if not isinstance(archive, str) or not archive:
        raise ConfigError("a zip source needs 'archive': the path of the .zip file", key="archive")
    folder = str(options.get("folder") or "").strip("/")
    return {"archive": archive, "folder": folder}


def _read(source: SourceConfig, member: str) -> bytes:
    folder = source.options["folder"]
    with zipfile.ZipFile(source.options["archive"]) as archive:
        return archive.read(f"{folder}/{member}" if folder else member)


def _members(source: SourceConfig) -> list[str]:
    folder = source.options["folder"]
    prefix = f"{folder}/" if folder else ""
    with zipfile.ZipFile(source.options["archive"]) as archive:
        names = archive.namelist()
    return [name[len(prefix) :] for name in names if name.startswith(prefix)]


def _include_resolver(source: SourceConfig) -> Callable[[str], tuple[str, str, Callable[[], bool]]]:
    stamp = os.stat(source.options["archive"]).st_mtime_ns

    def resolve(name: str) -> tuple[str, str, Callable[[], bool]]:
        check_prompt_id(name, source=source.name)
        members = set(_members(source))
        member = name if name in members else f"{name}.prompt"
        if member not in members:
            raise PromptNotFoundError(
                f"included file {name!r} is not in archive {source.options['archive']}",
                prompt_id=name,
                source=source.name,
            )
        text = _read(source, member).decode("utf-8")
        return text, member, lambda: os.stat(source.options["archive"]).st_mtime_ns == stamp

    return resolve


@promptdock.hookimpl
def source_kinds() -> list[SourceKind]:
    """This plugin serves the ``zip`` kind."""
    return [SourceKind(KIND, distribution="promptdock-zipfile", validate=_validate)]


@promptdock.hookimpl
def load_prompt(source: SourceConfig, prompt_id: str, version: int | None) -> PromptFile | None:
    """Read one prompt from the archive."""
    if source.kind != KIND:
        return None
    check_prompt_id(prompt_id, source=source.name)
    stamp = os.stat(source.options["archive"]).st_mtime_ns
    cached = _cache.get((source, prompt_id, version))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    prompt = _load(source, prompt_id, version)
    _cache[(source, prompt_id, version)] = (stamp, prompt)
    return prompt


def _load(source: SourceConfig, prompt_id: str, version: int | None) -> PromptFile:
    base, suffix_version = split_version(prompt_id)
    version = suffix_version if version is None else version
    infos = {info.id: info for info in group_prompt_paths(_members(source), source=source.name)}
    info = infos.get(base)
    if info is None or (version is not None and version not in info.versions):
        suggestions = closest_ids(base, infos)
        detail = f"no version {version} of {base!r}" if info else f"no prompt {base!r}"
        raise PromptNotFoundError(
            f"{detail} in archive {source.options['archive']}"
            + (f"; did you mean {', '.join(suggestions)}?" if suggestions else ""),
            prompt_id=base,
            source=source.name,
            suggestions=suggestions,
        )
    if version is None and not info.has_unversioned:
        version = info.versions[-1]
    member = f"{base}.v{version}.prompt" if version is not None else f"{base}.prompt"
    data = _read(source, member)
    provenance = Provenance(
        source=source.name,
        kind=KIND,
        prompt_id=base,
        version=version,
        path=member,
        location=source.options["archive"],
        content_hash=hashlib.sha256(data).hexdigest(),
    )
    return promptdock.parse_prompt(
        data,
        name=base,
        path=f"{source.options['archive']}:{member}",
        version=version,
        provenance=provenance,
        include_resolver=_include_resolver(source),
    )


@promptdock.hookimpl
def list_prompts(source: SourceConfig) -> list[PromptInfo] | None:
    """List the archive's prompts; files that do not parse are listed with their error."""
    if source.kind != KIND:
        return None
    listing = []
    for info in group_prompt_paths(_members(source), source=source.name):
        error = info.error  # set when the file name is not a valid prompt id
        try:
            if error is None:
                load_prompt(source, info.id, None)
        except PromptdockError as exc:
            error = str(exc)
        listing.append(
            PromptInfo(info.id, info.source, info.versions, info.has_unversioned, info.path, error)
        )
    return listing
