"""One prompt folder: safe id → file resolution, a stat-checked parse cache, and the listing."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from promptdock import (
    ConfigError,
    PromptdockError,
    PromptFile,
    PromptInfo,
    PromptNotFoundError,
    PromptSyntaxError,
    Provenance,
    SourceConfig,
    UnsafePromptIdError,
    parse_prompt,
)
from promptdock.ids import (
    PROMPT_SUFFIX,
    check_prompt_id,
    closest_ids,
    group_prompt_paths,
    split_version,
    version_file_stem,
)

__all__ = ["PromptFolder"]

_StatKey = tuple[int, int, int]

# parse_prompt refuses prompts over 2 MiB of text; never read a file that could not pass
# (4 bytes per character at most in UTF-8), so a huge file costs no memory.
MAX_FILE_BYTES = 8 * 1024 * 1024


def _stat_key(path: str) -> _StatKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class _Missing(Exception):
    """No file for ``base`` (``version``): turned into a PromptNotFoundError outside the lock."""

    def __init__(self, base: str, version: int | None) -> None:
        super().__init__(base)
        self.base = base
        self.version = version


def _unchanged(entry: _Entry) -> bool:
    return _stat_key(entry.file) == entry.file_key and (
        entry.directory_key is None or _stat_key(entry.directory) == entry.directory_key
    )


@dataclass(frozen=True)
class _Entry:
    """A parsed file plus what must not change for the parse to stay valid."""

    file: str
    file_key: _StatKey | None
    directory: str
    directory_key: _StatKey | None  # None: the choice of file does not depend on the folder
    prompt: PromptFile


class PromptFolder:
    """The prompts under one folder, for one configured source.

    Loading is cached per ``(id, version)``; a warm load costs two ``stat`` calls (the file and
    its folder, so edits, new versions and deletions are all seen on the next call).
    """

    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        absolute = str(source.options["path"])
        self.root = os.path.realpath(absolute)
        relative = os.path.relpath(absolute)
        # Errors name the folder as the user is likely to recognise it.
        self.display_root = relative if not relative.startswith("..") else absolute
        self._cache: dict[tuple[str, int | None], _Entry] = {}
        self._lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise ConfigError(
                f"prompt folder {self.display_root!r} of source {self.source.name!r} does not "
                f"exist (resolved to {self.root}). Create it, or point the source elsewhere "
                f"(promptdock.global_prompt_directory, PROMPTDOCK_PROMPT_DIR or --prompt-dir).",
                key="path",
            )

    def _inside(self, path: str, prompt_id: str) -> str:
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise UnsafePromptIdError(
                f"refused prompt {prompt_id!r} in source {self.source.name!r}: "
                f"{self._display(path)} is a link that points outside the prompt folder",
                prompt_id=prompt_id,
                source=self.source.name,
            )
        return real

    def _display(self, path: str) -> str:
        rel = os.path.relpath(path, self.root)
        return os.path.join(self.display_root, rel)

    # -- loading -------------------------------------------------------------------------

    def load(self, prompt_id: str, version: int | None) -> PromptFile:
        """The parsed prompt ``prompt_id`` (version ``version``), re-read only when it changed."""
        key = (prompt_id, version)
        entry = self._cache.get(key)
        if entry is not None and entry.directory_key is None:
            # _unchanged(entry) for a file named exactly (the usual entry), inlined: this runs
            # on every call, and the stat is most of its cost.
            try:
                st = os.stat(entry.file)
            except OSError:
                pass
            else:
                if (st.st_mtime_ns, st.st_size, st.st_ino) == entry.file_key:
                    return entry.prompt
        elif entry is not None and _unchanged(entry):
            return entry.prompt
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and _unchanged(entry):  # loaded by another thread meanwhile
                return entry.prompt
            try:
                entry = self._cache[key] = self._load_fresh(prompt_id, version)
                return entry.prompt
            except _Missing as exc:
                missing = exc
        # Suggestions walk the whole folder: outside the lock, so unknown ids (which proxy
        # clients choose) cannot hold up loads of real prompts.
        raise self._not_found(missing.base, missing.version)

    def _load_fresh(self, prompt_id: str, version: int | None) -> _Entry:
        check_prompt_id(prompt_id, source=self.source.name)
        self._check_root()
        base, suffix_version = split_version(prompt_id)
        if version is None:
            version = suffix_version
        elif suffix_version is not None and suffix_version != version:
            base = prompt_id  # "x.v2" with version=3 means version 3 of an id literally "x.v2"
        directory = os.path.join(self.root, os.path.dirname(base))
        directory_key = _stat_key(directory)
        stem = os.path.basename(base)
        found = self._pick_file(directory, stem, version)
        if found is None:
            raise _Missing(base, version)
        file_version, path = found
        if version is not None or file_version is None:
            # The file was named exactly: only its own stat can invalidate the choice. A
            # "highest version" choice also depends on the folder (a new file may win).
            directory_key = None
        real = self._inside(path, prompt_id)
        file_key = _stat_key(real)
        self._check_size(real, file_key)
        try:
            with open(real, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:  # deleted since it was picked
            raise _Missing(base, version) from None
        except OSError as exc:
            raise PromptNotFoundError(
                f"prompt {base!r} of source {self.source.name!r} cannot be read: "
                f"{self._display(real)}: {exc.strerror}; check the file's permissions",
                prompt_id=base,
                source=self.source.name,
            ) from None
        rel = os.path.relpath(real, self.root).replace(os.sep, "/")
        provenance = Provenance(
            source=self.source.name,
            kind=self.source.kind,
            prompt_id=base,
            version=file_version,
            path=rel,
            location=self.display_root,
            content_hash=hashlib.sha256(data).hexdigest(),
        )
        prompt = parse_prompt(
            data,
            name=base,
            path=self._display(real),
            version=file_version,
            provenance=provenance,
            include_resolver=self.resolve_include,
        )
        return _Entry(path, file_key, directory, directory_key, prompt)

    def _pick_file(
        self, directory: str, stem: str, version: int | None
    ) -> tuple[int | None, str] | None:
        if version is not None:
            path = os.path.join(directory, version_file_stem(stem, version) + PROMPT_SUFFIX)
            return (version, path) if os.path.isfile(path) else None
        plain = os.path.join(directory, stem + PROMPT_SUFFIX)
        if os.path.isfile(plain):
            return None, plain
        versions = self._versions_in(directory, stem)
        if not versions:
            return None
        highest = max(versions)
        return highest, os.path.join(directory, version_file_stem(stem, highest) + PROMPT_SUFFIX)

    @staticmethod
    def _versions_in(directory: str, stem: str) -> list[int]:
        try:
            names = os.listdir(directory)
        except OSError:
            return []
        versions = []
        for name in names:
            if name.startswith((".", "_")) or not name.endswith(PROMPT_SUFFIX):
                continue
            base, version = split_version(name[: -len(PROMPT_SUFFIX)])
            if base == stem and version is not None:
                versions.append(version)
        return versions

    def _not_found(self, base: str, version: int | None) -> PromptNotFoundError:
        infos = {info.id: info for info in self._walk()}
        info = infos.get(base)
        if info is not None and version is not None:
            listed = ", ".join(str(v) for v in info.versions) or "none"
            message = (
                f"prompt {base!r} has no version {version} in source {self.source.name!r} "
                f"(folder {self.display_root}; versions: {listed}"
                f"{', plus the unversioned file' if info.has_unversioned else ''})"
            )
            return PromptNotFoundError(message, prompt_id=base, source=self.source.name)
        suggestions = closest_ids(base, infos)
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        wanted = version_file_stem(base, version) + PROMPT_SUFFIX
        return PromptNotFoundError(
            f"prompt {base!r} not found in source {self.source.name!r}: no file {wanted} under "
            f"{self.display_root}.{hint}",
            prompt_id=base,
            source=self.source.name,
            suggestions=suggestions,
        )

    def _check_size(self, path: str, key: _StatKey | None) -> None:
        if key is not None and key[1] > MAX_FILE_BYTES:
            raise PromptSyntaxError(
                f"{self._display(path)}: the file is {key[1]:,} bytes, more than a prompt may be "
                f"({MAX_FILE_BYTES:,}); pass long content as a variable instead",
                path=self._display(path),
            )

    # -- includes ------------------------------------------------------------------------

    def resolve_include(self, name: str) -> tuple[str, str, Callable[[], bool]]:
        """Text, display path and freshness check of an included file (same folder tree)."""
        check_prompt_id(name, source=self.source.name)
        path = os.path.join(self.root, name)
        if not os.path.isfile(path) and not name.endswith(PROMPT_SUFFIX):
            path += PROMPT_SUFFIX
        if not os.path.isfile(path):
            raise PromptNotFoundError(
                f"included file {name!r} not found in source {self.source.name!r} "
                f"(looked for {self._display(path)})",
                prompt_id=name,
                source=self.source.name,
            )
        real = self._inside(path, name)
        key = _stat_key(path)  # through a link, so retargeting the link is seen too
        self._check_size(real, key)
        with open(real, "rb") as handle:
            data = handle.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PromptSyntaxError(
                f"{self._display(real)}: included file is not valid UTF-8 (byte {exc.start}); "
                f"save it as UTF-8",
                path=self._display(real),
            ) from None
        return text, self._display(real), lambda: _stat_key(path) == key

    # -- listing -------------------------------------------------------------------------

    def listing(self) -> list[PromptInfo]:
        """Every prompt id under the folder; files that fail to parse carry ``error``."""
        self._check_root()
        infos = []
        for info in self._walk():
            errors = [info.error] if info.error else []
            for version in (None, *info.versions) if info.has_unversioned else info.versions:
                try:
                    self.load(info.id, version)
                except (PromptdockError, OSError) as exc:  # listed with its error, not skipped
                    errors.append(str(exc))
            description = None
            if not errors:
                description = self.load(info.id, None).description
            infos.append(
                PromptInfo(
                    id=info.id,
                    source=info.source,
                    versions=info.versions,
                    has_unversioned=info.has_unversioned,
                    path=info.path,
                    error="; ".join(errors) or None,
                    description=description,
                )
            )
        return infos

    def _walk(self) -> list[PromptInfo]:
        paths = (f"{d}/{name}" if d else name for d, name in self._files())
        return group_prompt_paths(paths, source=self.source.name)

    def _files(self) -> Iterator[tuple[str, str]]:
        pending = [""]
        while pending:
            rel_dir = pending.pop()
            try:
                entries = list(os.scandir(os.path.join(self.root, rel_dir)))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith((".", "_")):
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_dir():
                    # A linked folder is not walked: a link out of the folder is not part of
                    # the source, and a link inside it would list its prompts twice (they are
                    # listed under their real path; loading through the link still works).
                    if not entry.is_symlink():
                        pending.append(rel)
                elif entry.is_file():
                    if entry.is_symlink() and not os.path.realpath(entry.path).startswith(
                        self.root + os.sep
                    ):
                        continue  # a link out of the folder is not part of the source
                    yield rel_dir, entry.name
