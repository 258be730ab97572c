"""Reading a repository at one commit: which file a prompt id names, fetching each file once,
parsing, includes, the folder listing, and carrying what is known over to a newer commit.

Everything here works on a :class:`Snapshot` (one commit), so nothing ever goes stale; the
time-based part (TTL, background refresh, outages) is :mod:`promptdock_bitbucket._source`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable, Iterable

from promptdock import (
    ConfigError,
    PromptdockError,
    PromptFile,
    PromptInfo,
    PromptNotFoundError,
    PromptSyntaxError,
    Provenance,
    SourceConfig,
    SourceUnavailableError,
)
from promptdock.ids import (
    PROMPT_SUFFIX,
    check_prompt_id,
    closest_ids,
    split_version,
    version_file_stem,
)
from promptdock.models import IncludeResolver
from promptdock_bitbucket._api import RepoApi
from promptdock_bitbucket._config import Settings
from promptdock_bitbucket._http import ApiError, NotFound, TooLarge, Unreachable
from promptdock_bitbucket._singleflight import SingleFlight
from promptdock_bitbucket._snapshot import Snapshot

__all__ = ["CommitReader"]

# Literal includes are fetched with the prompt, so rendering needs no network (and works from
# the disk snapshot); computed names are still resolved lazily.
_INCLUDE = re.compile(r"""\{%-?\s*include\s+(["'])([^"'{}%]+)\1""")
_MAX_INCLUDE_DEPTH = 8
# A few requests in flight at once: much faster than one by one, still gentle on the rate limit.
_FETCH_WORKERS = 4


def _always_current() -> bool:
    return True  # content at a commit never changes


class _Missing(LookupError):
    """A path does not exist at the snapshot's commit."""


class CommitReader:
    """Reads prompts of one source from snapshots, asking Bitbucket only for what is unknown.

    Concurrent callers wanting the same file, listing or prompt share one fetch.

    :param config: the source (its name and kind go into provenance and messages).
    :param settings: the validated options.
    :param api: the repository adapter.
    :param ref_label: the branch, tag or SHA followed, for provenance and messages.
    """

    def __init__(
        self,
        config: SourceConfig,
        settings: Settings,
        api: RepoApi,
        ref_label: Callable[[], str],
    ) -> None:
        self.name = config.name
        self.kind = config.kind
        self.settings = settings
        self.api = api
        self._ref_label = ref_label
        self._flights = SingleFlight()

    # -- names for messages ----------------------------------------------------------------

    def where(self, snap: Snapshot | None = None) -> str:
        """``acme/prompts at main (0123456789ab)``."""
        at = f" ({snap.sha[:12]})" if snap is not None else ""
        return f"{self.settings.location} at {self._ref_label()}{at}"

    def _display(self, path: str) -> str:
        return f"{self.settings.location}@{self._ref_label()}:{path}"

    def unavailable(self, exc: Unreachable | ApiError, what: str) -> SourceUnavailableError:
        """The error for a failed request when nothing cached can stand in."""
        cause = exc.cause if isinstance(exc, Unreachable) else str(exc)
        return SourceUnavailableError(
            f"source {self.name!r}: {what} from Bitbucket repository {self.where()}: {cause}. "
            f"It is not in the cache either; check the network, base_url "
            f"({self.settings.base_url}) and Bitbucket's status, then retry."
        )

    # -- prompts ---------------------------------------------------------------------------

    def load(self, snap: Snapshot, stale: bool, prompt_id: str, version: int | None) -> PromptFile:
        """The prompt at ``snap`` (flagged ``is_stale`` when ``stale``), parsed once."""
        return self._flights.run(
            ("load", snap.sha, stale, prompt_id, version),
            lambda: self._prompt(snap, stale, prompt_id, version),
        )

    def _prompt(
        self, snap: Snapshot, stale: bool, prompt_id: str, version: int | None
    ) -> PromptFile:
        key = (prompt_id, version)
        fresh = snap.prompts.get(key)
        if fresh is None:
            fresh = self._parse(snap, prompt_id, version)
            snap.prompts[key] = fresh
        if not stale:
            return fresh
        assert fresh.provenance is not None
        stale_prompt = dataclasses.replace(
            fresh, provenance=dataclasses.replace(fresh.provenance, is_stale=True)
        )
        snap.stale_prompts[key] = stale_prompt
        return stale_prompt

    def _parse(self, snap: Snapshot, prompt_id: str, version: int | None) -> PromptFile:
        from promptdock import parse_prompt

        base, suffix_version = split_version(prompt_id)
        if version is None:
            version = suffix_version
        elif suffix_version is not None and suffix_version != version:
            base = prompt_id  # "x.v2" with version=3: version 3 of an id literally "x.v2"
        path, file_version = self._pick(snap, base, version)
        data = self._read(snap, path, prompt_id)
        provenance = Provenance(
            source=self.name,
            kind=self.kind,
            prompt_id=base,
            version=file_version,
            path=path,
            location=self.settings.location,
            ref=self._ref_label(),
            sha=snap.sha,
            content_hash=hashlib.sha256(data).hexdigest(),
        )
        prompt = parse_prompt(
            data,
            name=base,
            path=self._display(path),
            version=file_version,
            provenance=provenance,
            include_resolver=self._resolver(snap),
        )
        self._prefetch_includes(snap, prompt.body, 0)
        return prompt

    def _pick(self, snap: Snapshot, base: str, version: int | None) -> tuple[str, int | None]:
        path_of = self.settings.path_of
        wanted = path_of(version_file_stem(base, version) + PROMPT_SUFFIX)
        if snap.tree is None and self._exists(snap, wanted, base):
            return wanted, version  # one request, no listing: the common cold case
        index = self.index(snap)
        if self._exists(snap, wanted, base):
            return wanted, version
        if version is None:
            info = index.get(base)
            if info is not None and info.versions:
                highest = info.versions[-1]
                return path_of(version_file_stem(base, highest) + PROMPT_SUFFIX), highest
        raise self._not_found(snap, base, version, index)

    def _not_found(
        self, snap: Snapshot, base: str, version: int | None, index: dict[str, PromptInfo]
    ) -> PromptNotFoundError:
        info = index.get(base)
        if info is not None and version is not None:
            listed = ", ".join(str(v) for v in info.versions) or "none"
            plain = ", plus the unversioned file" if info.has_unversioned else ""
            return PromptNotFoundError(
                f"prompt {base!r} has no version {version} in source {self.name!r} "
                f"({self.where(snap)}; versions: {listed}{plain})",
                prompt_id=base,
                source=self.name,
            )
        folder = self.settings.prompt_folder
        hint = ""
        suggestions = closest_ids(base, index)
        if folder and base.startswith(folder + "/"):
            shorter = base[len(folder) + 1 :]
            if shorter in index:
                suggestions = (shorter, *(s for s in suggestions if s != shorter))[:3]
            hint = (
                f" Prompt ids are relative to prompt_folder {folder!r}: drop the prefix "
                f"(prompt_id={shorter!r}), or set prompt_folder: '' to use paths from the "
                f"repository root."
            )
        if suggestions:
            hint = f" Did you mean: {', '.join(suggestions)}?" + hint
        wanted = self.settings.path_of(version_file_stem(base, version) + PROMPT_SUFFIX)
        return PromptNotFoundError(
            f"prompt {base!r} not found in source {self.name!r}: no file {wanted} in "
            f"{self.where(snap)}.{hint}",
            prompt_id=base,
            source=self.name,
            suggestions=suggestions,
        )

    # -- files -----------------------------------------------------------------------------

    def _exists(self, snap: Snapshot, path: str, prompt_id: str) -> bool:
        known = snap.exists(path)
        if known is not None:
            return known
        try:
            self._read(snap, path, prompt_id)
        except _Missing:
            return False
        return True

    def _read(self, snap: Snapshot, path: str, prompt_id: str) -> bytes:
        data = snap.files.get(path)
        if data is not None:
            return data
        if path in snap.missing:
            raise _Missing(path)
        return self._flights.run(
            ("file", snap.sha, path), lambda: self._fetch(snap, path, prompt_id)
        )

    def _fetch(self, snap: Snapshot, path: str, prompt_id: str) -> bytes:
        data = snap.files.get(path)
        if data is not None:
            return data
        try:
            data = self.api.read(snap.sha, path)
        except NotFound:
            snap.missing.add(path)
            snap.dirty = True
            raise _Missing(path) from None
        except TooLarge as exc:
            raise ConfigError(
                f"prompt {prompt_id!r}: {self._display(path)} is {exc.size} bytes or more, over "
                f"the max_file_size limit of {exc.limit} bytes; shrink the file or raise "
                f"max_file_size for source {self.name!r}",
                key="max_file_size",
            ) from None
        except Unreachable as exc:
            raise self.unavailable(exc, f"cannot read {path}") from None
        except ApiError as exc:
            raise self.unavailable(exc, f"cannot read {path}") from None
        snap.files[path] = data
        snap.dirty = True
        return data

    def index(self, snap: Snapshot) -> dict[str, PromptInfo]:
        index = snap.index()
        if index is None:
            self._flights.run(("tree", snap.sha), lambda: self.list_folder(snap))
            index = snap.index()
            assert index is not None
        return index

    def list_folder(self, snap: Snapshot) -> None:
        if snap.tree is not None:
            return
        try:
            tree = self.api.list_files(snap.sha, self.settings.prompt_folder)
        except (Unreachable, ApiError) as exc:
            raise self.unavailable(exc, "cannot list the prompt folder") from None
        snap.set_tree(tree)

    # -- includes --------------------------------------------------------------------------

    def _resolver(self, snap: Snapshot) -> IncludeResolver:
        resolver = snap.resolver
        if resolver is None:
            # One object per commit: the renderer shares a template environment per resolver.
            resolver = snap.resolver = functools.partial(self._resolve_include, snap)
        return resolver

    def _resolve_include(self, snap: Snapshot, name: str) -> tuple[str, str, Callable[[], bool]]:
        check_prompt_id(name, source=self.name)
        candidates = [name] if name.endswith(PROMPT_SUFFIX) else [name, name + PROMPT_SUFFIX]
        for candidate in candidates:
            path = self.settings.path_of(candidate)
            if self._exists(snap, path, name):
                data = self._read(snap, path, name)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise PromptSyntaxError(
                        f"{self._display(path)}: the included file is not valid UTF-8; save it "
                        f"as UTF-8",
                        path=self._display(path),
                    ) from None
                return text, self._display(path), _always_current
        raise PromptNotFoundError(
            f"included file {name!r} not found in source {self.name!r}: no "
            f"{' or '.join(self.settings.path_of(c) for c in candidates)} in {self.where(snap)}",
            prompt_id=name,
            source=self.name,
        )

    def _prefetch_includes(self, snap: Snapshot, body: str, depth: int) -> None:
        if depth >= _MAX_INCLUDE_DEPTH or "include" not in body:
            return
        for match in _INCLUDE.finditer(body):
            try:
                text, _, _ = self._resolve_include(snap, match.group(2))
            except PromptdockError:
                continue  # rendering reports it, with the template line
            self._prefetch_includes(snap, text, depth + 1)

    # -- listing ---------------------------------------------------------------------------

    def listing(self, snap: Snapshot) -> list[PromptInfo]:
        """Every prompt id at ``snap``; files that cannot be loaded carry ``error``."""
        listing = snap.listing
        if listing is None:
            listing = self._flights.run(("listing", snap.sha), lambda: self._build_listing(snap))
        return listing

    def _build_listing(self, snap: Snapshot) -> list[PromptInfo]:
        if snap.listing is not None:
            return snap.listing
        index = self.index(snap)
        wanted: list[tuple[str, int | None]] = []
        for info in index.values():
            versions: Iterable[int | None] = (
                (None, *info.versions) if info.has_unversioned else info.versions
            )
            wanted.extend((info.id, v) for v in versions)
        self._fetch_many(snap, [self._path(i, v) for i, v in wanted])
        infos = []
        for info in index.values():
            errors = [info.error] if info.error else []
            for version in (None, *info.versions) if info.has_unversioned else info.versions:
                try:
                    self._prompt(snap, False, info.id, version)
                except (PromptSyntaxError, ConfigError, PromptNotFoundError) as exc:
                    errors.append(str(exc))
                except SourceUnavailableError:
                    errors.append("not in the offline cache: Bitbucket is unreachable")
            description = None
            if not errors:
                description = self._prompt(snap, False, info.id, None).description
            infos.append(
                dataclasses.replace(
                    info,
                    source=self.name,
                    path=info.path and self.settings.path_of(info.path),
                    error="; ".join(errors) or None,
                    description=description,
                )
            )
        snap.listing = infos
        return infos

    def _path(self, prompt_id: str, version: int | None) -> str:
        return self.settings.path_of(version_file_stem(prompt_id, version) + PROMPT_SUFFIX)

    def _fetch_many(self, snap: Snapshot, paths: list[str]) -> None:
        todo = [p for p in paths if p not in snap.files and p not in snap.missing]
        if not todo:
            return

        def one(path: str) -> None:
            # Failures are reported per prompt by the caller, with the prompt's name.
            with contextlib.suppress(_Missing, ConfigError, SourceUnavailableError):
                self._read(snap, path, path)

        if len(todo) == 1:
            one(todo[0])
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=_FETCH_WORKERS) as pool:
            list(pool.map(one, todo))

    # -- moving to a newer commit ----------------------------------------------------------

    def advance(self, old: Snapshot, sha: str, prefetch: bool) -> Snapshot:
        """The snapshot of ``sha``, reusing what did not change since ``old``.

        With ``prefetch``, files that were in use and changed are fetched now (this runs in
        the background), and a listing that existed is rebuilt, so no caller waits.
        """
        new = Snapshot(sha, self.settings.prompt_folder)
        folder = self.settings.prompt_folder
        try:
            changes = self.api.changes(sha, old.sha, folder)
        except (Unreachable, ApiError):
            changes = None  # e.g. the old commit is gone after a force-push
        old_files = old.files.copy()
        if changes is None:
            refetch = set(old_files)
            relist = old.tree is not None
        else:
            touched = {p for c in changes for p in (c.old_path, c.new_path) if p is not None}
            new.files = {p: b for p, b in old_files.items() if p not in touched}
            new.missing = {p for p in old.missing.copy() if p not in touched}
            if old.tree is not None:
                tree = old.tree.copy()
                for change in changes:
                    if change.old_path is not None:
                        tree.pop(change.old_path, None)
                    if change.new_path is not None:
                        tree[change.new_path] = None
                new.set_tree(tree)
            touched_ids = {self._base_id(p) for p in touched}
            for key, prompt in old.prompts.copy().items():
                if prompt.id not in touched_ids and prompt.provenance is not None:
                    new.prompts[key] = self._rebase(prompt, new)
            # Only files that were in use and still exist: a deleted one is simply gone.
            refetch = {c.new_path for c in changes if c.new_path in old_files}
            relist = False
        new.dirty = True
        if not prefetch:
            return new
        if relist:
            self.list_folder(new)
        if old.listing is not None:
            self.index(new)
            refetch |= {p for p in new.tree or () if p.endswith(PROMPT_SUFFIX)}
        self._fetch_many_strict(new, sorted(refetch))
        if old.listing is not None:
            self._build_listing(new)
        return new

    def _fetch_many_strict(self, snap: Snapshot, paths: list[str]) -> None:
        # A refresh that cannot fetch what callers use must fail (and serve stale), not
        # swap in a commit whose files would then be fetched on the callers' time.
        def one(path: str) -> None:
            try:
                snap.files[path] = self.api.read(snap.sha, path)
            except NotFound:
                snap.missing.add(path)
            except TooLarge:
                pass  # reported when loaded

        todo = [p for p in paths if p not in snap.files and p not in snap.missing]
        if len(todo) <= 1:
            for path in todo:
                one(path)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=_FETCH_WORKERS) as pool:
            list(pool.map(one, todo))

    def _base_id(self, path: str) -> str:
        folder = self.settings.prompt_folder
        rel = path[len(folder) + 1 :] if folder and path.startswith(folder + "/") else path
        return split_version(rel.removesuffix(PROMPT_SUFFIX))[0]

    def _rebase(self, prompt: PromptFile, snap: Snapshot) -> PromptFile:
        assert prompt.provenance is not None
        provenance = dataclasses.replace(prompt.provenance, sha=snap.sha, is_stale=False)
        return dataclasses.replace(
            prompt, provenance=provenance, include_resolver=self._resolver(snap)
        )
