"""Bitbucket Data Center REST 1.0: branches and tags → SHA, ``raw`` files, ``files`` listings.

Paging is ``start``/``limit``: the next request starts at the ``nextPageStart`` the server
sent, until ``isLastPage``. Data Center answers 401 (not 403) when a token may not read a
repository; the HTTP client words that error for both cases.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from promptdock_bitbucket._api import Change, check_sha, looks_like_sha
from promptdock_bitbucket._config import Settings
from promptdock_bitbucket._http import ApiError, HttpClient, NotFound, Unreachable

__all__ = ["DataCenterApi"]

_LIMIT = 1000
_MAX_PAGES = 10_000


class DataCenterApi:
    """One repository on a Bitbucket Data Center (or Server) instance."""

    def __init__(self, settings: Settings, http: HttpClient) -> None:
        self.settings = settings
        self.http = http
        key, slug = quote(settings.owner, safe=""), quote(settings.repository, safe="")
        self._repo = f"/projects/{key}/repos/{slug}"

    def default_branch(self) -> str:
        """``default-branch`` → ``displayId``."""
        reply = self.http.get(self.http.url(f"{self._repo}/default-branch"))
        payload = reply.json() if reply.body else None
        name = payload.get("displayId") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name:
            raise NotFound(404, f"repository {self.settings.location} has no default branch yet")
        return name

    def resolve_branch(self, name: str) -> str:
        """``branches?filterText=`` is a substring search: pick the exact ``displayId``."""
        params = {"filterText": name, "boostMatches": "true"}
        for value in self._pages(f"{self._repo}/branches", params):
            if value.get("displayId") == name or value.get("id") == f"refs/heads/{name}":
                return check_sha(value.get("latestCommit"), f"branch {name!r}")
        raise NotFound(404, f"no branch named {name!r}")

    def resolve_ref(self, ref: str) -> str:
        """A commit SHA (``commits/{id}``), else a tag, else a branch."""
        if looks_like_sha(ref):
            try:
                payload = self.http.get(self.http.url(f"{self._repo}/commits/{ref}")).json()
                return check_sha(payload.get("id"), f"commit {ref!r}")
            except NotFound:
                pass
        try:
            payload = self.http.get(
                self.http.url(f"{self._repo}/tags/{quote(ref, safe='')}")
            ).json()
            return check_sha(payload.get("latestCommit"), f"tag {ref!r}")
        except NotFound:
            return self.resolve_branch(ref)

    def read(self, sha: str, path: str) -> bytes:
        """``raw/{path}?at={sha}``, capped at ``max_file_size``."""
        url = self.http.url(f"{self._repo}/raw/{quote(path)}")
        try:
            return self.http.get(
                url, params={"at": sha}, max_bytes=self.settings.max_file_size
            ).body
        except ApiError as exc:
            if exc.status == 400:  # a folder, not a file
                raise NotFound(404, exc.message) from None
            raise

    def list_files(self, sha: str, folder: str) -> dict[str, int | None]:
        """``files/{folder}?at={sha}``: recursive already; paths come back relative."""
        route = f"{self._repo}/files/{quote(folder)}" if folder else f"{self._repo}/files"
        prefix = f"{folder}/" if folder else ""
        try:
            values = self._pages(route, {"at": sha})
        except ApiError as exc:
            if exc.status in (400, 404):  # no such folder at this commit: an empty source
                return {}
            raise
        return {prefix + value: None for value in values if isinstance(value, str)}

    def changes(self, new: str, old: str, folder: str) -> list[Change] | None:
        """Not asked of Data Center yet: the caller re-reads the files it holds."""
        return None

    def _pages(self, route: str, params: dict[str, str]) -> list[Any]:
        values: list[Any] = []
        start = 0
        for _ in range(_MAX_PAGES):
            query: dict[str, str | list[str]] = {
                **params,
                "start": str(start),
                "limit": str(_LIMIT),
            }
            page = self.http.get(self.http.url(route), params=query).json()
            if not isinstance(page, dict):
                raise Unreachable("Bitbucket answered a listing with something that is not one")
            values.extend(page.get("values") or ())
            following = page.get("nextPageStart")
            if page.get("isLastPage", True) or not isinstance(following, int):
                return values
            if following <= start:
                raise Unreachable("Bitbucket's paging went backwards; giving up on the listing")
            start = following
        raise Unreachable(f"a listing of {self.settings.location} has over {_MAX_PAGES} pages")
