"""The Bitbucket Cloud REST 2.0 routes a Git-source client uses, served from :class:`GitRepo` data.

Behaviour follows ``/work/shared/reference/githosts-api.md`` §1 and the checklist in §4.3. Where
the reference marks a behaviour observed ([O]) or unverified ([U]) rather than documented, the
code says so next to it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from ._git import FileChange, GitRepo, TreeEntry
from ._http import (
    HttpError,
    PageTokens,
    Request,
    Response,
    Settings,
    apply_fields,
    braced_uuid,
    guess_mimetype,
    json_response,
)
from ._state import CredentialStore, HostedRepo

__all__ = ["RATE_LIMIT_MESSAGE", "SCOPE_MESSAGE", "TIMEOUT_MESSAGE", "CloudApi", "cloud_error"]

T = TypeVar("T")
Json = dict[str, Any]

RATE_LIMIT_MESSAGE = "Rate limit for this resource has been exceeded."  # [O]
SCOPE_MESSAGE = "Your credentials lack one or more required privilege scopes."  # [O]
BAD_TOKEN_MESSAGE = "Token is invalid, expired, or not supported for this endpoint."  # [O]
# [U] Bitbucket's wording for a 555 is not on record; only the status is documented.
TIMEOUT_MESSAGE = "The request timed out. List with a smaller max_depth or fewer folders."
_WWW_AUTHENTICATE = 'Basic realm="Bitbucket.org HTTP"'  # [O] one of the values seen
# Access-token scopes: a write or admin scope includes reading. API-token scopes imply nothing.
_ACCESS_TOKEN_READ = frozenset({"repository", "repository:write", "repository:admin"})
_API_TOKEN_READ = "read:repository:bitbucket"
_SRC_PAGELEN_MAX = 100
_DIFFSTAT_PAGELEN = 500  # [U] diffstat's page size is not in the reference; 500 is assumed
_REF_QUERY = re.compile(r'\s*name\s*(=|~)\s*"((?:[^"\\]|\\.)*)"\s*')
_MERGE_STRATEGIES = ["merge_commit", "squash", "fast_forward"]


def cloud_error(exc: HttpError) -> Response:
    """Render ``exc`` as Bitbucket Cloud's standard error body."""
    error: Json = {"message": exc.message}
    if exc.detail is not None:
        error["detail"] = exc.detail
    return json_response({"type": "error", "error": error}, exc.status, exc.headers)


class CloudApi:
    """Routes ``/2.0/repositories/...`` requests; every answer is a :class:`Response`."""

    def __init__(
        self,
        repos: Mapping[tuple[str, str], HostedRepo],
        creds: CredentialStore,
        settings: Settings,
        tokens: PageTokens,
    ) -> None:
        self._repos = repos
        self._creds = creds
        self._settings = settings
        self._tokens = tokens
        # Breadth-first listings keyed by (commit, folder, depth): immutable, so cached.
        self._walks: dict[tuple[str, str, int], list[TreeEntry]] = {}

    def handle(self, req: Request) -> Response:
        """Answer one request (errors included)."""
        extra: dict[str, str] = {}
        try:
            resp = self._route(req, extra)
        except HttpError as exc:
            resp = cloud_error(exc)
        resp.headers.update(extra)
        return resp

    # -- routing and access --------------------------------------------------------------------

    def _route(self, req: Request, extra: dict[str, str]) -> Response:
        parts = req.raw_path.split("/")  # ["", "2.0", "repositories", ws, slug, *rest]
        if len(parts) < 5 or parts[2] != "repositories" or not parts[3] or not parts[4]:
            raise HttpError(404, "Resource not found")
        hosted = self._authorize(req, unquote(parts[3]), unquote(parts[4]), extra)
        rest = parts[5:]
        if rest in ([], [""]):
            return self._repository(req, hosted)
        head, args = rest[0], rest[1:]
        if head == "refs" and args and args[0] in ("branches", "tags"):
            name = unquote("/".join(args[1:]))
            if name:
                return self._ref(req, hosted, args[0], name)
            return self._ref_list(req, hosted, args[0])
        if head == "src":
            return self._src(req, hosted, args)
        if head == "diffstat" and len(args) == 1:
            return self._diffstat(req, hosted, unquote(args[0]))
        if head == "commits" and len(args) == 1:
            return self._commits(req, hosted, unquote(args[0]))
        if head == "commit" and len(args) == 1:
            sha = self._resolve(hosted, unquote(args[0]))
            return self._json(req, self._commit_full(req, hosted, sha))
        raise HttpError(404, "Resource not found")

    def _authorize(self, req: Request, ws: str, slug: str, extra: dict[str, str]) -> HostedRepo:
        kind, cred = self._creds.identify(req.header("Authorization"))
        if cred is None:
            # Every hosted repository is private, so anonymous requests are refused too.
            message = {
                "none": "Authentication required. Send a Bearer access token or Basic "
                "email:API-token credentials.",
                "bearer": BAD_TOKEN_MESSAGE,
            }.get(
                kind, "Invalid credentials. Basic auth takes your Atlassian email and an API token."
            )
            raise HttpError(401, message, headers={"WWW-Authenticate": _WWW_AUTHENTICATE})
        spent = self._creds.spend(cred.secret)
        if spent is not None:
            limit, used, retry_after = spent
            if cred.kind == "bearer":  # [D/O] only access tokens get these headers
                near = (limit - used) < limit / 5  # [U] "near" assumed at under 20% left
                extra["X-RateLimit-Limit"] = str(limit)
                extra["X-RateLimit-Resource"] = "api"
                extra["X-RateLimit-NearLimit"] = "true" if near else "false"
            if used > limit:
                # [D] Retry-After is not documented; tests choose whether it is sent.
                after = {} if retry_after is None else {"Retry-After": str(retry_after)}
                raise HttpError(429, RATE_LIMIT_MESSAGE, headers=after)
        if cred.kind == "bearer":
            required, allowed = "repository", bool(cred.scopes & _ACCESS_TOKEN_READ)
        else:
            required, allowed = _API_TOKEN_READ, _API_TOKEN_READ in cred.scopes
        if not allowed:
            detail = {"required": [required], "granted": sorted(cred.scopes)}
            raise HttpError(403, SCOPE_MESSAGE, detail=detail)
        if cred.repos is not None and (ws, slug) not in cred.repos:
            # [D] 403 for a private repository the caller cannot access (reference §1.6), even
            # when it does not exist, so a token learns nothing about other repositories.
            raise HttpError(403, f"Access denied: these credentials cannot read {ws}/{slug}.")
        hosted = self._repos.get((ws, slug))
        if hosted is None:
            raise HttpError(404, f"Repository {ws}/{slug} not found")
        return hosted

    @staticmethod
    def _resolve(hosted: HostedRepo, segment: str) -> str:
        # [O] A branch name with "/" (raw, or %2F decoded to "/") fails in a {commit} slot.
        sha = hosted.repo.try_resolve(segment) if segment and "/" not in segment else None
        if sha is None:
            raise HttpError(404, "Commit not found")
        return sha

    # -- repository and refs -------------------------------------------------------------------

    def _repository(self, req: Request, hosted: HostedRepo) -> Response:
        full = f"{hosted.owner}/{hosted.slug}"
        payload = {
            "type": "repository",
            "full_name": full,
            "name": hosted.slug,
            "slug": hosted.slug,
            "uuid": braced_uuid(full),
            "is_private": True,
            "scm": "git",
            "mainbranch": {"type": "branch", "name": hosted.mainbranch},
            "workspace": {
                "type": "workspace",
                "slug": hosted.owner,
                "uuid": braced_uuid(hosted.owner),
            },
            "links": {"self": {"href": _api(req, hosted)}, "html": {"href": _web(req, hosted)}},
        }
        return self._json(req, payload)

    def _ref(self, req: Request, hosted: HostedRepo, table: str, name: str) -> Response:
        refs = hosted.repo.branches() if table == "branches" else hosted.repo.tags()
        sha = refs.get(name)
        if sha is None:
            kind = "branch" if table == "branches" else "tag"
            raise HttpError(404, f"No {kind} named {name!r} in {hosted.owner}/{hosted.slug}.")
        # [O] refs answer with an ETag and honour If-None-Match.
        etag = _etag(f"{table}/{name}@{sha}")
        if _not_modified(req, etag):
            return Response(304, headers={"ETag": etag})
        resp = self._json(req, self._ref_object(req, hosted, table, name, sha))
        resp.headers["ETag"] = etag
        return resp

    def _ref_list(self, req: Request, hosted: HostedRepo, table: str) -> Response:
        refs = hosted.repo.branches() if table == "branches" else hosted.repo.tags()
        names = sorted(refs)
        if (q := req.arg("q")) is not None:
            match = _REF_QUERY.fullmatch(q)
            if match is None:
                raise HttpError(
                    400, f'Invalid query {q!r}: only name = "x" and name ~ "x" work here.'
                )
            op, want = match.group(1), re.sub(r"\\(.)", r"\1", match.group(2))
            names = [n for n in names if (n == want if op == "=" else want.lower() in n.lower())]
        pagelen = min(req.int_arg("pagelen", 10, low=1), _SRC_PAGELEN_MAX)
        render = lambda n: self._ref_object(req, hosted, table, n, refs[n])  # noqa: E731
        return self._json(req, self._page(req, names, pagelen, render))

    def _ref_object(
        self, req: Request, hosted: HostedRepo, table: str, name: str, sha: str
    ) -> Json:
        api = _api(req, hosted)
        obj: Json = {
            "type": "branch" if table == "branches" else "tag",
            "name": name,
            "target": self._commit_full(req, hosted, sha),
            "links": {
                "self": {"href": f"{api}/refs/{table}/{quote(name, safe='')}"},
                "commits": {"href": f"{api}/commits/{quote(name, safe='')}"},
                "html": {"href": f"{_web(req, hosted)}/src/{sha}"},
            },
        }
        if table == "branches":
            obj["merge_strategies"] = _MERGE_STRATEGIES
            obj["default_merge_strategy"] = "merge_commit"
        return obj

    # -- src -----------------------------------------------------------------------------------

    def _src(self, req: Request, hosted: HostedRepo, args: list[str]) -> Response:
        if args in ([], [""]):
            # [D] .../src redirects to the main branch's root listing; [U] the status is assumed.
            main = hosted.mainbranch
            target = main if "/" not in main else self._resolve_branch(hosted, main)
            return Response(302, headers={"Location": f"{_api(req, hosted)}/src/{target}/"})
        sha = self._resolve(hosted, unquote(args[0]))
        if len(args) == 1:
            # [D] the root listing needs the trailing slash; [U] the answer without it.
            raise HttpError(404, "Resource not found")
        trailing = args[-1] == ""
        path = unquote("/".join(args[1:])).strip("/")
        repo, fmt = hosted.repo, req.arg("format")
        if fmt not in (None, "meta"):
            raise HttpError(400, f"Unsupported format {fmt!r}; this server knows only format=meta.")
        if repo.is_folder(sha, path):
            if fmt == "meta":
                return self._json(req, self._entry(req, hosted, sha, _Folder(path)))
            return self._listing(req, hosted, sha, path)
        entry = repo.tree(sha).get(path)
        if entry is None or trailing:
            raise HttpError(404, f"No such file or directory: {path}")  # [O] message
        if fmt == "meta":
            return self._json(req, self._entry(req, hosted, sha, entry))
        etag = _etag(f"{entry.mode} {entry.object_id}")  # [D] content and attributes only
        if _not_modified(req, etag):
            return Response(304, headers={"ETag": etag})
        headers = {
            # [D] type from the extension with no charset; [U] unknown ones as octet-stream.
            "Content-Type": guess_mimetype(path) or "application/octet-stream",
            "Content-Disposition": "attachment",
            "ETag": etag,
        }
        return Response(200, repo.read(sha, path), headers)

    def _listing(self, req: Request, hosted: HostedRepo, sha: str, folder: str) -> Response:
        depth = req.int_arg("max_depth", 1, low=1)
        if depth > self._settings.max_depth_limit:
            raise HttpError(555, TIMEOUT_MESSAGE)  # [D] deep recursion times out with 555
        entries = self._walk(hosted.repo, sha, folder, depth)
        cap = self._settings.max_listing_entries
        if cap is not None and len(entries) > cap:
            raise HttpError(555, TIMEOUT_MESSAGE)
        pagelen = min(req.int_arg("pagelen", 10, low=1), _SRC_PAGELEN_MAX)
        render = lambda e: self._entry(req, hosted, sha, e)  # noqa: E731
        return self._json(req, self._page(req, entries, pagelen, render))

    def _walk(self, repo: GitRepo, sha: str, folder: str, depth: int) -> list[TreeEntry]:
        key = (sha, folder, depth)
        found = self._walks.get(key)
        if found is None:
            found, level = [], list(repo.children(sha, folder))
            for _ in range(depth):  # breadth first: a whole level before the next one
                found += level
                level = [c for e in level if e.kind == "tree" for c in repo.children(sha, e.path)]
            if len(self._walks) > 256:  # bounded; rebuilding is cheap
                self._walks.clear()
            self._walks[key] = found
        return found

    def _entry(
        self, req: Request, hosted: HostedRepo, sha: str, entry: TreeEntry | _Folder
    ) -> Json:
        api = _api(req, hosted)
        src = f"{api}/src/{sha}/{quote(entry.path)}"
        commit = {"type": "commit", "hash": sha, "links": self._commit_links(req, hosted, sha)}
        if isinstance(entry, _Folder) or entry.kind == "tree":
            # [O] folders carry no size or attributes; their links end in "/"
            self_href = src if src.endswith("/") else f"{src}/"
            links = {"self": {"href": self_href}, "meta": {"href": f"{self_href}?format=meta"}}
            return {
                "type": "commit_directory",
                "path": entry.path,
                "commit": commit,
                "links": links,
            }
        return {
            "type": "commit_file",
            "path": entry.path,
            "escaped_path": entry.path,
            "size": entry.size or 0,
            "attributes": _attributes(entry),
            "mimetype": guess_mimetype(entry.path),  # [O]
            "commit": commit,
            "links": {
                "self": {"href": src},
                "meta": {"href": f"{src}?format=meta"},
                "history": {"href": f"{api}/filehistory/{sha}/{quote(entry.path)}"},
            },
        }

    def _resolve_branch(self, hosted: HostedRepo, name: str) -> str:
        sha = hosted.repo.branches().get(name)
        if sha is None:
            raise HttpError(404, "Commit not found")
        return sha

    # -- history and changes -------------------------------------------------------------------

    def _diffstat(self, req: Request, hosted: HostedRepo, spec: str) -> Response:
        # [D] In "A..B", A holds the changes and B is the base: the reverse of git diff.
        first, dots, second = spec.partition("..")
        new = self._resolve(hosted, first)
        repo = hosted.repo
        if dots:
            base = self._resolve(hosted, second)
            if req.arg("topic") != "false":  # [D] the default compares with the merge base
                base = repo.merge_base(new, base) or base
            old: str | None = base
        else:
            parents = repo.commit_info(new).parents
            old = parents[0] if parents else None
        changes = repo.diff(old, new, req.query.get("path", []))
        pagelen = min(req.int_arg("pagelen", _DIFFSTAT_PAGELEN, low=1), _DIFFSTAT_PAGELEN)
        api = _api(req, hosted)

        def render(change: FileChange) -> Json:
            return {
                "type": "diffstat",
                "status": change.status,
                "lines_added": change.lines_added,
                "lines_removed": change.lines_removed,
                "old": _file_ref(api, old, change.old_path),
                "new": _file_ref(api, new, change.new_path),
            }

        return self._json(req, self._page(req, changes, pagelen, render))

    def _commits(self, req: Request, hosted: HostedRepo, rev: str) -> Response:
        # [U] commits/{revision} is given the same ref rules as src/{commit}.
        sha = self._resolve(hosted, rev)
        pagelen = min(req.int_arg("pagelen", 30, low=1), _SRC_PAGELEN_MAX)
        offset = self._tokens.decode(req.arg("page"))
        shas = hosted.repo.log(sha, req.query.get("path", []), skip=offset, limit=pagelen + 1)
        # [D] iterator paging: no size and no page numbers, only next.
        payload: Json = {
            "pagelen": pagelen,
            "values": [self._commit_full(req, hosted, s) for s in shas[:pagelen]],
        }
        if len(shas) > pagelen:
            payload["next"] = req.url_with(page=self._tokens.encode(offset + pagelen))
        return self._json(req, payload)

    def _commit_full(self, req: Request, hosted: HostedRepo, sha: str) -> Json:
        info = hosted.repo.commit_info(sha)
        return {
            "type": "commit",
            "hash": sha,
            "date": datetime.fromtimestamp(info.timestamp, UTC).isoformat(),
            "author": {"type": "author", "raw": info.author},
            "message": info.message,
            "parents": [
                {"type": "commit", "hash": p, "links": self._commit_links(req, hosted, p)}
                for p in info.parents
            ],
            "links": self._commit_links(req, hosted, sha),
        }

    @staticmethod
    def _commit_links(req: Request, hosted: HostedRepo, sha: str) -> Json:
        return {
            "self": {"href": f"{_api(req, hosted)}/commit/{sha}"},
            "html": {"href": f"{_web(req, hosted)}/commits/{sha}"},
        }

    # -- response helpers ----------------------------------------------------------------------

    def _page(
        self, req: Request, items: Sequence[T], pagelen: int, render: Callable[[T], Json]
    ) -> Json:
        offset = self._tokens.decode(req.arg("page"))
        # [D] size and page are optional; leaving them out keeps clients from relying on them.
        payload: Json = {
            "pagelen": pagelen,
            "values": [render(item) for item in items[offset : offset + pagelen]],
        }
        if offset + pagelen < len(items):
            payload["next"] = req.url_with(page=self._tokens.encode(offset + pagelen))
        return payload

    @staticmethod
    def _json(req: Request, payload: Json) -> Response:
        fields = req.arg("fields")
        return json_response(payload if fields is None else apply_fields(payload, fields))


@dataclass(frozen=True, slots=True)
class _Folder:
    """A folder named by a request (the root has no tree entry of its own)."""

    path: str


def _api(req: Request, hosted: HostedRepo) -> str:
    owner, slug = quote(hosted.owner, safe=""), quote(hosted.slug, safe="")
    return f"{req.origin}/2.0/repositories/{owner}/{slug}"


def _web(req: Request, hosted: HostedRepo) -> str:
    return f"{req.origin}/{quote(hosted.owner, safe='')}/{quote(hosted.slug, safe='')}"


def _file_ref(api: str, commit: str | None, path: str | None) -> Json | None:
    if path is None or commit is None:
        return None
    href = f"{api}/src/{commit}/{quote(path)}"
    return {
        "type": "commit_file",
        "path": path,
        "escaped_path": path,
        "links": {"self": {"href": href}},
    }


def _attributes(entry: TreeEntry) -> list[str]:
    # Only what the mode tells; "binary" and "lfs" would need every blob read and are left out.
    return {"100755": ["executable"], "120000": ["link"], "160000": ["subrepository"]}.get(
        entry.mode, []
    )


def _etag(seed: str) -> str:
    return '"' + hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest() + '"'


def _not_modified(req: Request, etag: str) -> bool:
    sent = req.header("If-None-Match")
    if not sent:
        return False
    tags = {t.strip().removeprefix("W/") for t in sent.split(",")}
    return "*" in tags or etag in tags
