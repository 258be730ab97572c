"""Bitbucket Cloud REST 2.0: refs → SHA, ``src`` files and paged recursive listings, diffstat.

Every ``src`` call names a full SHA: branch names with ``/`` do not work in that slot, and a
SHA URL names content that never changes. Listings follow ``next`` exactly as sent (the page
token is opaque) and only to the API's own host, so the token never follows a link elsewhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from promptdock_bitbucket._api import Change, check_sha, looks_like_sha
from promptdock_bitbucket._config import Settings
from promptdock_bitbucket._http import ApiError, HttpClient, NotFound, Unreachable

__all__ = ["CloudApi"]

_PAGELEN = "100"
_MAX_PAGES = 10_000
_LIST_FIELDS = "next,values.path,values.type,values.size,values.attributes"
_SKIPPED_ATTRIBUTES = frozenset({"link", "subrepository", "lfs"})
# A 555 on a listing means "ask for less", not "ask again": the caller lowers max_depth.
_RETRY_BUT_555 = frozenset({429, 500, 502, 503, 504})
_STATUSES = frozenset({"added", "removed", "modified", "renamed"})


class CloudApi:
    """One repository on Bitbucket Cloud (or anything serving its 2.0 routes)."""

    def __init__(self, settings: Settings, http: HttpClient) -> None:
        self.settings = settings
        self.http = http
        owner, slug = quote(settings.owner, safe=""), quote(settings.repository, safe="")
        self._repo = f"/repositories/{owner}/{slug}"

    def default_branch(self) -> str:
        """``mainbranch.name`` of the repository."""
        payload = self.http.get(
            self.http.url(self._repo), params={"fields": "mainbranch.name"}
        ).json()
        name = (payload.get("mainbranch") or {}).get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name:
            raise Unreachable(f"Bitbucket reports no main branch for {self.settings.location}")
        return name

    def resolve_branch(self, name: str) -> str:
        """``refs/branches/{name}`` → ``target.hash``."""
        return self._target(f"/refs/branches/{quote(name, safe='')}", f"branch {name!r}")

    def resolve_ref(self, ref: str) -> str:
        """A commit SHA (``commit/{sha}``), else a tag, else a branch."""
        if looks_like_sha(ref):
            try:
                payload = self.http.get(
                    self.http.url(f"{self._repo}/commit/{quote(ref, safe='')}"),
                    params={"fields": "hash"},
                ).json()
                return check_sha(payload.get("hash"), f"commit {ref!r}")
            except NotFound:
                pass
        try:
            return self._target(f"/refs/tags/{quote(ref, safe='')}", f"tag {ref!r}")
        except NotFound:
            return self.resolve_branch(ref)

    def _target(self, route: str, what: str) -> str:
        payload = self.http.get(
            self.http.url(self._repo + route), params={"fields": "target.hash"}
        ).json()
        target = payload.get("target") if isinstance(payload, dict) else None
        return check_sha(target.get("hash") if isinstance(target, dict) else None, what)

    def read(self, sha: str, path: str) -> bytes:
        """``src/{sha}/{path}``: the raw bytes, capped at ``max_file_size``."""
        url = self.http.url(f"{self._repo}/src/{sha}/{quote(path)}")
        return self.http.get(url, max_bytes=self.settings.max_file_size).body

    def list_files(self, sha: str, folder: str) -> dict[str, int | None]:
        """A recursive listing: one paged walk per ``max_depth`` levels.

        Folders deeper than ``max_depth`` are walked on their own; a 555 (too deep or too
        large) halves the depth and tries that folder again, down to one level at a time.
        """
        files: dict[str, int | None] = {}
        depth = self.settings.max_depth
        pending = [folder]
        while pending:
            current = pending.pop()
            try:
                entries = self._walk(sha, current, depth)
            except NotFound:
                if current == folder:
                    return {}  # no prompt folder at this commit: an empty source
                raise
            except ApiError as exc:
                if exc.status != 555:
                    raise
                if depth == 1:
                    raise Unreachable(
                        f"Bitbucket times out (555) listing {current or 'the repository root'} "
                        f"of {self.settings.location} even one level deep",
                        555,
                    ) from None
                depth //= 2
                pending.append(current)
                continue
            base = current.count("/") + 1 if current else 0
            for entry in entries:
                path = entry.get("path")
                if not isinstance(path, str):
                    continue
                kind = entry.get("type")
                if kind == "commit_directory":
                    if path.count("/") + 1 - base >= depth:
                        pending.append(path)  # listed, but its contents were not
                elif kind == "commit_file":
                    if _SKIPPED_ATTRIBUTES & set(entry.get("attributes") or ()):
                        continue
                    size = entry.get("size")
                    files[path] = size if isinstance(size, int) else None
        return files

    def _walk(self, sha: str, folder: str, depth: int) -> list[dict[str, Any]]:
        prefix = f"{quote(folder)}/" if folder else ""
        url: str | None = self.http.url(f"{self._repo}/src/{sha}/{prefix}")
        params: dict[str, str | list[str]] | None = {
            "max_depth": str(depth),
            "pagelen": _PAGELEN,
            "fields": _LIST_FIELDS,
        }
        return self._pages(url, params, _RETRY_BUT_555)

    def changes(self, new: str, old: str, folder: str) -> list[Change] | None:
        """``diffstat/{new}..{old}`` (Bitbucket's order: the changes first, then the base)."""
        params: dict[str, str | list[str]] = {"topic": "false"}
        if folder:
            params["path"] = folder
        url = self.http.url(f"{self._repo}/diffstat/{new}..{old}")
        try:
            values = self._pages(url, params, _RETRY_BUT_555)
        except ApiError as exc:
            if exc.status == 555:
                return None  # too large to diff: the caller re-reads instead
            raise
        changes = []
        for value in values:
            status = value.get("status")
            if status not in _STATUSES:
                return None
            changes.append(Change(status, _path_of(value.get("old")), _path_of(value.get("new"))))
        return changes

    def _pages(
        self,
        url: str | None,
        params: dict[str, str | list[str]] | None,
        retry_statuses: frozenset[int],
    ) -> list[dict[str, Any]]:
        values: list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES):
            if url is None:
                return values
            page = self.http.get(url, params=params, retry_statuses=retry_statuses).json()
            if not isinstance(page, dict):
                raise Unreachable("Bitbucket answered a listing with something that is not one")
            values.extend(v for v in page.get("values") or () if isinstance(v, dict))
            url, params = page.get("next"), None  # `next` carries every parameter already
            if url is not None and (not isinstance(url, str) or not self.http.same_origin(url)):
                raise Unreachable(
                    "Bitbucket's 'next' link points to another host; refusing to send the token "
                    "there"
                )
        raise Unreachable(f"a listing of {self.settings.location} has over {_MAX_PAGES} pages")


def _path_of(side: Any) -> str | None:
    if isinstance(side, dict) and isinstance(side.get("path"), str):
        return str(side["path"])
    return None
