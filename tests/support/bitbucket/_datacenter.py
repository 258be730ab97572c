"""The Bitbucket Data Center REST 1.0 routes a Git-source client uses (reference §2).

Paging is ``start``/``limit`` with ``isLastPage`` and ``nextPageStart``; errors are
``{"errors": [...]}``; a caller who may not read a repository gets 401, as Data Center documents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

from ._http import HttpError, Request, Response, Settings, guess_mimetype, json_response
from ._state import CredentialStore, HostedRepo

__all__ = ["DataCenterApi", "dc_error"]

T = TypeVar("T")
Json = dict[str, Any]

# [U] Exception class names as seen in Data Center error bodies; clients should not rely on them.
_NO_PATH = "com.atlassian.bitbucket.content.NoSuchPathException"
_NO_REPO = "com.atlassian.bitbucket.repository.NoSuchRepositoryException"
_NO_COMMIT = "com.atlassian.bitbucket.commit.NoSuchCommitException"
_NOT_ALLOWED = "com.atlassian.bitbucket.AuthorisationException"
_DEFAULT_LIMIT = 25


def dc_error(exc: HttpError) -> Response:
    """Render ``exc`` as Data Center's error body."""
    error = {"context": None, "message": exc.message, "exceptionName": exc.exception_name}
    return json_response({"errors": [error]}, exc.status, exc.headers)


class DataCenterApi:
    """Routes ``/rest/api/1.0/projects/{key}/repos/{slug}/...`` (``latest`` works as well)."""

    def __init__(
        self,
        repos: Mapping[tuple[str, str], HostedRepo],
        creds: CredentialStore,
        settings: Settings,
    ) -> None:
        self._repos = repos
        self._creds = creds
        self._settings = settings
        self._files: dict[tuple[str, str], list[str]] = {}

    def handle(self, req: Request) -> Response:
        """Answer one request (errors included)."""
        try:
            return self._route(req)
        except HttpError as exc:
            return dc_error(exc)

    def _route(self, req: Request) -> Response:
        # ["", "rest", "api", "1.0", "projects", key, "repos", slug, *rest]
        parts = req.raw_path.split("/")
        if (
            len(parts) < 8
            or parts[3] not in ("1.0", "latest")
            or (parts[4], parts[6]) != ("projects", "repos")
        ):
            raise HttpError(404, "Resource not found")
        hosted = self._authorize(req, unquote(parts[5]), unquote(parts[7]))
        rest = [unquote(p) for p in parts[8:]]
        if rest in ([], [""]):
            return json_response(self._repo_object(hosted))
        head, args = rest[0], rest[1:]
        if head == "raw" and args:
            return self._raw(req, hosted, "/".join(args).strip("/"))
        if head == "files":
            return self._list_files(req, hosted, "/".join(args).strip("/"))
        if rest in (["branches", "default"], ["default-branch"]):
            return self._default_branch(hosted, full=head == "branches")
        if head == "branches" and args in ([], [""]):
            return self._branches(req, hosted)
        if head == "tags" and args:
            return self._tag(hosted, "/".join(args))
        if head == "commits":
            return self._commit(hosted, args[0]) if args else self._commits(req, hosted)
        raise HttpError(404, "Resource not found")

    def _authorize(self, req: Request, key: str, slug: str) -> HostedRepo:
        _, cred = self._creds.identify(req.header("Authorization"))
        if cred is None:
            raise HttpError(
                401,
                "Authentication failed. Check the username and password or access token.",
                exception_name=_NOT_ALLOWED,
                headers={"WWW-Authenticate": 'Basic realm="Bitbucket"'},
            )
        spent = self._creds.spend(cred.secret)
        if spent is not None and spent[1] > spent[0]:
            after = {} if spent[2] is None else {"Retry-After": str(spent[2])}
            raise HttpError(429, "Too many requests: the rate limit was exceeded.", headers=after)
        if cred.repos is not None and (key, slug) not in cred.repos:
            # [D] Data Center answers 401, not 403, when the caller may not view a repository.
            raise HttpError(
                401,
                f"You are not permitted to access repository {key}/{slug}. Ask its admin for "
                "read access or use a token created for it.",
                exception_name=_NOT_ALLOWED,
            )
        hosted = self._repos.get((key, slug))
        if hosted is None:
            raise HttpError(
                404, f"Repository {key}/{slug} does not exist.", exception_name=_NO_REPO
            )
        return hosted

    @staticmethod
    def _at(hosted: HostedRepo, at: str | None) -> str:
        # [D] at= takes refs/heads/x, a plain branch or tag name, or a full or short SHA;
        # without it the default branch is read.
        ref = at or hosted.mainbranch
        sha = hosted.repo.try_resolve(ref)
        if sha is None:
            raise HttpError(
                404,
                f"Commit '{ref}' does not exist in repository '{hosted.slug}'.",
                exception_name=_NO_COMMIT,
            )
        return sha

    def _raw(self, req: Request, hosted: HostedRepo, path: str) -> Response:
        sha = self._at(hosted, req.arg("at"))
        entry = hosted.repo.tree(sha).get(path)
        if entry is None or entry.kind != "blob":
            if hosted.repo.is_folder(sha, path):
                raise HttpError(400, f"'{path}' is a directory at {sha}; list it with files/.")
            raise HttpError(
                404,
                f"The path '{path}' does not exist at revision '{sha}'.",
                exception_name=_NO_PATH,
            )
        mime = guess_mimetype(path) or "application/octet-stream"  # [U] Content-Type
        return Response(200, hosted.repo.read(sha, path), {"Content-Type": mime})

    def _list_files(self, req: Request, hosted: HostedRepo, folder: str) -> Response:
        sha = self._at(hosted, req.arg("at"))
        repo = hosted.repo
        if not repo.is_folder(sha, folder):
            if folder in repo.tree(sha):
                raise HttpError(400, f"'{folder}' is a file at {sha}, not a directory.")
            raise HttpError(
                404,
                f"The path '{folder}' does not exist at revision '{sha}'.",
                exception_name=_NO_PATH,
            )
        files = self._files.get((sha, folder))
        if files is None:
            # [O] recursive; values are paths relative to the folder requested
            prefix = f"{folder}/" if folder else ""
            files = [
                e.path[len(prefix) :]
                for e in repo.tree(sha).values()
                if e.kind == "blob" and e.path.startswith(prefix)
            ]
            if len(self._files) > 256:
                self._files.clear()
            self._files[(sha, folder)] = files
        return json_response(self._page(req, files, str))

    def _default_branch(self, hosted: HostedRepo, *, full: bool) -> Response:
        sha = hosted.repo.branches().get(hosted.mainbranch)
        if sha is None:
            return Response(204)  # [D] an empty repository has no default branch yet
        obj = self._branch_object(hosted.mainbranch, sha, is_default=True)
        if not full:  # default-branch names the configured branch only
            obj = {k: obj[k] for k in ("id", "displayId", "type")}
        return json_response(obj)

    def _branches(self, req: Request, hosted: HostedRepo) -> Response:
        refs = hosted.repo.branches()
        want = req.arg("filterText") or ""
        names = sorted(n for n in refs if want.lower() in n.lower())  # a substring match
        if req.arg("boostMatches") == "true" and want in names:
            names.remove(want)
            names.insert(0, want)
        render = lambda n: self._branch_object(n, refs[n], is_default=n == hosted.mainbranch)  # noqa: E731
        return json_response(self._page(req, names, render))

    def _tag(self, hosted: HostedRepo, name: str) -> Response:
        sha = hosted.repo.tags().get(name)
        if sha is None:
            raise HttpError(404, f"Tag '{name}' does not exist in repository '{hosted.slug}'.")
        return json_response(
            {
                "id": f"refs/tags/{name}",
                "displayId": name,
                "type": "TAG",
                "latestCommit": sha,
                "latestChangeset": sha,
                "hash": None,
            }
        )

    def _commit(self, hosted: HostedRepo, commit_id: str) -> Response:
        # [D] commits/{commitId} takes a SHA only; ref names are rejected.
        sha = hosted.repo.commit_sha(commit_id)
        if sha is None:
            raise HttpError(
                404,
                f"Commit '{commit_id}' does not exist in repository '{hosted.slug}'.",
                exception_name=_NO_COMMIT,
            )
        return json_response(self._commit_object(hosted, sha))

    def _commits(self, req: Request, hosted: HostedRepo) -> Response:
        head = self._at(hosted, req.arg("until"))
        start = req.int_arg("start", 0)
        limit = self._limit(req)
        paths = req.query.get("path", [])
        shas = hosted.repo.log(head, paths, skip=start, limit=limit + 1)
        page = [self._commit_object(hosted, s) for s in shas[:limit]]
        payload: Json = {
            "size": len(page),
            "limit": limit,
            "isLastPage": len(shas) <= limit,
            "start": start,
            "values": page,
        }
        if len(shas) > limit:
            payload["nextPageStart"] = start + limit
        return json_response(payload)

    # -- objects and paging --------------------------------------------------------------------

    def _limit(self, req: Request) -> int:
        return min(req.int_arg("limit", _DEFAULT_LIMIT, low=1), self._settings.dc_limit_cap)

    def _page(self, req: Request, items: Sequence[T], render: Callable[[T], Any]) -> Json:
        start, limit = req.int_arg("start", 0), self._limit(req)
        chunk = items[start : start + limit]
        last = start + len(chunk) >= len(items)
        payload: Json = {
            "size": len(chunk),
            "limit": limit,
            "isLastPage": last,
            "start": start,
            "values": [render(item) for item in chunk],
        }
        if not last:  # [D] nextPageStart is absent on the last page
            payload["nextPageStart"] = start + len(chunk)
        return payload

    @staticmethod
    def _repo_object(hosted: HostedRepo) -> Json:
        return {
            "slug": hosted.slug,
            "name": hosted.slug,
            "scmId": "git",
            "state": "AVAILABLE",
            "public": False,
            "project": {"key": hosted.owner, "name": hosted.owner},
        }

    @staticmethod
    def _branch_object(name: str, sha: str, *, is_default: bool) -> Json:
        return {
            "id": f"refs/heads/{name}",
            "displayId": name,
            "type": "BRANCH",
            "latestCommit": sha,
            "latestChangeset": sha,
            "isDefault": is_default,
        }

    @staticmethod
    def _commit_object(hosted: HostedRepo, sha: str) -> Json:
        info = hosted.repo.commit_info(sha)
        name, _, email = info.author.partition(" <")
        person = {"name": name, "emailAddress": email.rstrip(">")}
        return {
            "id": sha,
            "displayId": sha[:11],
            "author": person,
            "authorTimestamp": info.timestamp * 1000,
            "committer": person,
            "committerTimestamp": info.timestamp * 1000,
            "message": info.message,
            "parents": [{"id": p, "displayId": p[:11]} for p in info.parents],
        }
