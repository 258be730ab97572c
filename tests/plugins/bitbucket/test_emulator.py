"""The local Bitbucket emulator behaves like the REST API the Bitbucket source plugin talks to.

Every test drives it with ``requests`` exactly as a client would; the expected behaviour comes from
``/work/shared/reference/githosts-api.md`` (§1, §2 and the checklist in §4.3).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.support.bitbucket import BitbucketEmulator, GitRepo, make_push_delivery

TOKEN = "repo-token"
EMAIL, API_TOKEN = "dev@example.com", "api-token-1"
FILES = {
    "prompts/hello.prompt": "---\nmodel: gpt-4\n---\nHello {{ name }}\n",
    "prompts/support/triage.prompt": "Triage: {{ ticket }}\n",
    "README.md": "# demo\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    """A repository with one commit on ``main`` and a ``feature/x`` branch one commit ahead."""
    git = GitRepo(tmp_path / "repo")
    git.commit(FILES, "Initial prompts")
    git.branch("feature/x")
    git.commit({"prompts/hello.prompt": "Hi from feature\n"}, "Feature", branch="feature/x")
    return git


@pytest.fixture
def emu(repo: GitRepo) -> Iterator[BitbucketEmulator]:
    """An emulator serving ``repo`` as ``ws/prompts`` (Cloud) and ``PRJ/prompts`` (Data Center)."""
    with BitbucketEmulator() as server:
        server.add_repository("ws", "prompts", repo)
        server.add_dc_repository("PRJ", "prompts", repo)
        server.add_token(TOKEN)
        server.add_basic(EMAIL, API_TOKEN)
        yield server
        assert server.errors == []


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A client session authenticated with the repository access token."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def api(emu: BitbucketEmulator, tail: str = "") -> str:
    return emu.repository_url("ws", "prompts") + tail


def dc(emu: BitbucketEmulator, tail: str) -> str:
    return f"{emu.dc_base_url}/projects/PRJ/repos/prompts{tail}"


def error_message(resp: requests.Response) -> str:
    body = resp.json()
    assert body["type"] == "error"
    message: str = body["error"]["message"]
    return message


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def follow(session: requests.Session, url: str) -> list[dict[str, Any]]:
    """Every page of a Cloud listing, following ``next`` verbatim."""
    pages = []
    next_url: str | None = url
    while next_url:
        resp = session.get(next_url)
        assert resp.status_code == 200, resp.text
        pages.append(resp.json())
        next_url = pages[-1].get("next")
    return pages


def summary(diffstat: dict[str, Any]) -> set[tuple[str, str | None, str | None]]:
    """(status, old path, new path) of every diffstat entry."""
    return {
        (v["status"], (v["old"] or {}).get("path"), (v["new"] or {}).get("path"))
        for v in diffstat["values"]
    }


# -- repository and refs ----------------------------------------------------------------------


def test_repository_names_its_main_branch(emu: BitbucketEmulator, http: requests.Session) -> None:
    body = http.get(api(emu), params={"fields": "mainbranch.name"}).json()
    assert body == {"mainbranch": {"name": "main"}}


@pytest.mark.parametrize("name", ["main", "feature%2Fx", "feature/x"])
def test_branch_resolves_to_its_full_sha(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo, name: str
) -> None:
    resp = http.get(api(emu, f"/refs/branches/{name}"))
    assert resp.status_code == 200
    body = resp.json()
    expected = repo.resolve(name.replace("%2F", "/"))
    assert body["type"] == "branch"
    assert body["name"] == name.replace("%2F", "/")
    assert body["target"]["hash"] == expected
    assert re.fullmatch(r"[0-9a-f]{40}", expected)


def test_unknown_branch_is_404(emu: BitbucketEmulator, http: requests.Session) -> None:
    resp = http.get(api(emu, "/refs/branches/nope"))
    assert resp.status_code == 404
    assert error_message(resp) == "No branch named 'nope' in ws/prompts."


def test_branch_etag_answers_304_until_the_branch_moves(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    first = http.get(api(emu, "/refs/branches/main"))
    etag = first.headers["ETag"]
    again = http.get(api(emu, "/refs/branches/main"), headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    repo.commit({"prompts/new.prompt": "new"}, "Push")
    moved = http.get(api(emu, "/refs/branches/main"), headers={"If-None-Match": etag})
    assert moved.status_code == 200
    assert moved.json()["target"]["hash"] == repo.resolve("main")


def test_tag_resolves_to_the_tagged_commit(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    repo.tag("v1", message="First release")
    repo.tag("light", at="feature/x")
    assert http.get(api(emu, "/refs/tags/v1")).json()["target"]["hash"] == repo.resolve("main")
    light = http.get(api(emu, "/refs/tags/light")).json()
    assert (light["type"], light["target"]["hash"]) == ("tag", repo.resolve("feature/x"))
    assert http.get(api(emu, "/refs/tags/v2")).status_code == 404


def test_branch_list_filters_by_exact_name(emu: BitbucketEmulator, http: requests.Session) -> None:
    body = http.get(api(emu, "/refs/branches"), params={"q": 'name="feature/x"'}).json()
    assert [v["name"] for v in body["values"]] == ["feature/x"]


# -- src: files --------------------------------------------------------------------------------


def test_file_at_sha_is_raw_bytes_with_content_headers(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    sha = repo.resolve("main")
    resp = http.get(api(emu, f"/src/{sha}/prompts/hello.prompt"))
    assert resp.status_code == 200
    assert resp.content == FILES["prompts/hello.prompt"].encode()
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == "attachment"
    readme = http.get(api(emu, f"/src/{sha}/README.md"))
    assert readme.headers["Content-Type"] == "text/markdown"  # from the extension, no charset


def test_src_accepts_short_sha_and_plain_branch(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    short = repo.resolve("main")[:7]
    assert http.get(api(emu, f"/src/{short}/README.md")).text == "# demo\n"
    assert http.get(api(emu, "/src/main/README.md")).text == "# demo\n"


@pytest.mark.parametrize("commit", ["feature/x", "feature%2Fx", "nope", "0000000"])
def test_src_rejects_slashed_branches_and_unknown_commits(
    emu: BitbucketEmulator, http: requests.Session, commit: str
) -> None:
    resp = http.get(api(emu, f"/src/{commit}/prompts/hello.prompt"))
    assert resp.status_code == 404
    assert error_message(resp) == "Commit not found"


def test_missing_path_is_404_naming_the_path(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    resp = http.get(api(emu, f"/src/{repo.resolve('main')}/prompts/missing.prompt"))
    assert resp.status_code == 404
    assert resp.json() == {
        "type": "error",
        "error": {"message": "No such file or directory: prompts/missing.prompt"},
    }


def test_etag_depends_on_content_only_and_answers_304(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    old = repo.resolve("main")
    new = repo.commit({"copy/hello.prompt": FILES["prompts/hello.prompt"]}, "Copy")
    etag = http.get(api(emu, f"/src/{old}/prompts/hello.prompt")).headers["ETag"]
    assert http.get(api(emu, f"/src/{new}/copy/hello.prompt")).headers["ETag"] == etag
    cached = http.get(api(emu, f"/src/{new}/prompts/hello.prompt"), headers={"If-None-Match": etag})
    assert (cached.status_code, cached.content, cached.headers["ETag"]) == (304, b"", etag)
    other = http.get(api(emu, f"/src/{new}/README.md"), headers={"If-None-Match": etag})
    assert other.status_code == 200
    assert other.headers["ETag"] != etag


def test_head_reports_a_file_without_a_body(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    resp = http.head(api(emu, f"/src/{repo.resolve('main')}/README.md"))
    assert (resp.status_code, resp.content, resp.headers["Content-Length"]) == (200, b"", "7")


def test_format_meta_describes_a_file(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    sha = repo.resolve("main")
    meta = http.get(api(emu, f"/src/{sha}/prompts/hello.prompt"), params={"format": "meta"}).json()
    assert meta["type"] == "commit_file"
    assert meta["path"] == "prompts/hello.prompt"
    assert meta["size"] == len(FILES["prompts/hello.prompt"])
    assert meta["commit"]["hash"] == sha
    assert meta["attributes"] == []
    run = repo.commit({"bin/run.sh": "#!/bin/sh\n"}, "Script", executable=["bin/run.sh"])
    script = http.get(api(emu, f"/src/{run}/bin/run.sh"), params={"format": "meta"}).json()
    assert script["attributes"] == ["executable"]
    folder = http.get(api(emu, f"/src/{sha}/prompts/"), params={"format": "meta"}).json()
    assert (folder["type"], folder["path"]) == ("commit_directory", "prompts")


# -- src: folders ------------------------------------------------------------------------------


def test_listing_pages_follow_next_with_an_opaque_token(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    sha = repo.commit({f"many/f{i:02}.prompt": str(i) for i in range(23)}, "Many")
    pages = follow(http, api(emu, f"/src/{sha}/many/?fields=-values.links"))
    assert [len(p["values"]) for p in pages] == [10, 10, 3]  # pagelen defaults to 10
    assert "next" not in pages[-1]
    paths = [v["path"] for p in pages for v in p["values"]]
    assert paths == [f"many/f{i:02}.prompt" for i in range(23)]
    assert {v["commit"]["hash"] for p in pages for v in p["values"]} == {sha}
    nexts = [urlsplit(p["next"]) for p in pages[:-1]]
    tokens = [parse_qs(n.query)["page"][0] for n in nexts]
    assert all(not t.isdigit() for t in tokens)
    assert len(set(tokens)) == 2
    assert all(parse_qs(n.query)["fields"] == ["-values.links"] for n in nexts)
    assert all(n.path == urlsplit(api(emu, f"/src/{sha}/many/")).path for n in nexts)


def test_forged_page_token_is_refused(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    resp = http.get(api(emu, f"/src/{repo.resolve('main')}/"), params={"page": "2"})
    assert resp.status_code == 400
    assert error_message(resp) == "Invalid page: '2'. Follow the 'next' link of the previous page."


def test_pagelen_is_capped_at_100(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    sha = repo.commit({f"big/{i:03}.txt": "x" for i in range(120)}, "Big")
    first = http.get(api(emu, f"/src/{sha}/big/"), params={"pagelen": "500"}).json()
    assert (first["pagelen"], len(first["values"])) == (100, 100)
    assert parse_qs(urlsplit(first["next"]).query)["pagelen"] == ["500"]


def test_folder_entries_have_no_size(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    root = http.get(api(emu, f"/src/{repo.resolve('main')}/")).json()["values"]
    by_path = {v["path"]: v for v in root}
    assert by_path["prompts"]["type"] == "commit_directory"
    assert "size" not in by_path["prompts"]
    assert by_path["prompts"]["links"]["self"]["href"].endswith("/prompts/")
    assert by_path["README.md"]["size"] == len("# demo\n")


def test_max_depth_lists_breadth_first(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    sha = repo.commit({"d/a.txt": "", "d/x/b.txt": "", "d/x/y/c.txt": "", "d/z.txt": ""}, "Nest")
    shallow = follow(http, api(emu, f"/src/{sha}/d/"))
    assert [v["path"] for p in shallow for v in p["values"]] == ["d/a.txt", "d/x", "d/z.txt"]
    deep = follow(http, api(emu, f"/src/{sha}/d/?max_depth=3&pagelen=2"))
    assert [v["path"] for p in deep for v in p["values"]] == [
        "d/a.txt",
        "d/x",
        "d/z.txt",
        "d/x/b.txt",
        "d/x/y",
        "d/x/y/c.txt",
    ]


def test_max_depth_over_the_limit_is_555(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    emu.settings.max_depth_limit = 3
    url = api(emu, f"/src/{repo.resolve('main')}/")
    assert http.get(url, params={"max_depth": "3"}).status_code == 200
    resp = http.get(url, params={"max_depth": "4"})
    assert resp.status_code == 555
    assert error_message(resp) == (
        "The request timed out. List with a smaller max_depth or fewer folders."
    )


def test_too_large_listing_is_555(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    emu.settings.max_listing_entries = 4
    url = api(emu, f"/src/{repo.resolve('main')}/")
    assert http.get(url, params={"max_depth": "2"}).status_code == 200  # 4 entries
    assert http.get(url, params={"max_depth": "3"}).status_code == 555  # 5 entries


def test_fields_whitelist_drops_next_unless_asked(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    url = api(emu, f"/src/{repo.resolve('main')}/?max_depth=3&pagelen=1")
    bare = http.get(url, params={"fields": "values.path"}).json()
    assert bare == {"values": [{"path": "README.md"}]}
    kept = http.get(url, params={"fields": "values.path,next"}).json()
    assert set(kept) == {"values", "next"}


def test_src_without_commit_redirects_to_the_main_branch(
    emu: BitbucketEmulator, http: requests.Session
) -> None:
    resp = http.get(api(emu, "/src"), allow_redirects=False)
    assert resp.status_code == 302
    assert resp.headers["Location"] == api(emu, "/src/main/")
    assert http.get(api(emu, "/src")).json()["values"][0]["path"] == "README.md"


def test_thousand_files_listed_in_an_exact_number_of_requests(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    # 10 folders x 10 subfolders x 10 files: 1,000 files and 110 folders, one git commit.
    files = {
        f"bulk/g{a}/s{b}/p{c}.prompt": f"{a}{b}{c}"
        for a in range(10)
        for b in range(10)
        for c in range(10)
    }
    repo.commit(files, "A thousand prompts")
    emu.reset_counts()
    sha = http.get(api(emu, "/refs/branches/main")).json()["target"]["hash"]
    pages = follow(http, api(emu, f"/src/{sha}/bulk/?max_depth=3&pagelen=100"))
    entries = [v for p in pages for v in p["values"]]
    assert len(entries) == 1110
    assert {v["path"] for v in entries if v["type"] == "commit_file"} == set(files)
    assert emu.request_count() == 1 + 12  # the branch, then ceil(1110 / 100) pages
    assert emu.request_count("/src/") == 12


# -- diffstat ----------------------------------------------------------------------------------


def test_diffstat_after_a_push_lists_each_change(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    old = repo.resolve("main")
    new = repo.commit(
        {
            "prompts/hello.prompt": "changed\n",
            "prompts/added.prompt": "new\n",
            "README.md": None,
            "prompts/support/triage.prompt": None,
            "prompts/support/renamed.prompt": FILES["prompts/support/triage.prompt"],
        },
        "Push",
    )
    # Bitbucket's order: the commit with the changes first, the base second.
    body = http.get(api(emu, f"/diffstat/{new}..{old}"), params={"topic": "false"}).json()
    changes = summary(body)
    assert changes == {
        ("modified", "prompts/hello.prompt", "prompts/hello.prompt"),
        ("added", None, "prompts/added.prompt"),
        ("removed", "README.md", None),
        ("renamed", "prompts/support/triage.prompt", "prompts/support/renamed.prompt"),
    }
    added = next(v for v in body["values"] if v["status"] == "added")
    assert (added["lines_added"], added["lines_removed"]) == (1, 0)
    only_prompts = http.get(api(emu, f"/diffstat/{new}..{old}"), params={"path": "prompts"})
    assert summary(only_prompts.json()) == changes - {("removed", "README.md", None)}
    # The git-diff order by mistake: every change reads backwards.
    swapped = http.get(api(emu, f"/diffstat/{old}..{new}"), params={"topic": "false"}).json()
    assert summary(swapped) == {
        ("modified", "prompts/hello.prompt", "prompts/hello.prompt"),
        ("removed", "prompts/added.prompt", None),
        ("added", None, "README.md"),
        ("renamed", "prompts/support/renamed.prompt", "prompts/support/triage.prompt"),
    }


def test_commits_lists_history_newest_first(
    emu: BitbucketEmulator, http: requests.Session, repo: GitRepo
) -> None:
    first = repo.resolve("main")
    second = repo.commit({"a.txt": "a"}, "Second")
    body = http.get(api(emu, f"/commits/{second}"), params={"pagelen": "1"}).json()
    assert [c["hash"] for c in body["values"]] == [second]
    rest = http.get(body["next"]).json()
    assert [c["hash"] for c in rest["values"]] == [first]
    assert "next" not in rest


# -- authentication ----------------------------------------------------------------------------


def test_bearer_and_basic_credentials_both_read(emu: BitbucketEmulator, repo: GitRepo) -> None:
    url = api(emu, "/src/main/README.md")
    assert requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).text == "# demo\n"
    assert requests.get(url, auth=(EMAIL, API_TOKEN)).text == "# demo\n"
    assert [r.auth for r in emu.requests] == ["bearer", "basic"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            None,
            "Authentication required. Send a Bearer access token or Basic "
            "email:API-token credentials.",
        ),
        ("Bearer wrong", "Token is invalid, expired, or not supported for this endpoint."),
        (
            basic("dev-username", API_TOKEN),
            "Invalid credentials. Basic auth takes your Atlassian email and an API token.",
        ),
        (
            "Basic !!!",
            "Invalid credentials. Basic auth takes your Atlassian email and an API token.",
        ),
    ],
)
def test_missing_or_bad_credentials_get_401(
    emu: BitbucketEmulator, header: str | None, message: str
) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = requests.get(api(emu, "/src/main/README.md"), headers=headers)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="Bitbucket.org HTTP"'
    assert resp.json() == {"type": "error", "error": {"message": message}}


def test_token_without_the_scope_gets_403_with_detail(emu: BitbucketEmulator) -> None:
    emu.add_token("pr-only", scopes={"pullrequest"})
    emu.add_basic(EMAIL, "write-only", scopes={"write:repository:bitbucket"})
    bearer = requests.get(api(emu), headers={"Authorization": "Bearer pr-only"})
    assert bearer.status_code == 403
    assert bearer.json()["error"] == {
        "message": "Your credentials lack one or more required privilege scopes.",
        "detail": {"required": ["repository"], "granted": ["pullrequest"]},
    }
    api_token = requests.get(api(emu), auth=(EMAIL, "write-only"))
    assert api_token.status_code == 403
    assert api_token.json()["error"]["detail"] == {
        "required": ["read:repository:bitbucket"],
        "granted": ["write:repository:bitbucket"],
    }


def test_repository_token_cannot_read_another_repository(
    emu: BitbucketEmulator, repo: GitRepo, tmp_path: Path
) -> None:
    other = GitRepo(tmp_path / "other")
    other.commit({"secret.prompt": "no"}, "Other")
    emu.add_repository("ws", "other", other)
    emu.add_token("only-prompts", repos=[("ws", "prompts")])
    headers = {"Authorization": "Bearer only-prompts"}
    assert requests.get(api(emu, "/src/main/README.md"), headers=headers).status_code == 200
    for slug in ("other", "does-not-exist"):
        resp = requests.get(emu.repository_url("ws", slug) + "/src/main/", headers=headers)
        assert resp.status_code == 403
        assert error_message(resp) == f"Access denied: these credentials cannot read ws/{slug}."
    wildcard = requests.get(
        emu.repository_url("ws", "nope"), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert (wildcard.status_code, error_message(wildcard)) == (404, "Repository ws/nope not found")


# -- rate limits and faults --------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [None, 7])
def test_rate_limit_answers_429_after_the_budget(
    emu: BitbucketEmulator, http: requests.Session, retry_after: int | None
) -> None:
    emu.set_rate_limit(TOKEN, 2, retry_after=retry_after)
    assert [http.get(api(emu)).status_code for _ in range(2)] == [200, 200]
    resp = http.get(api(emu))
    assert resp.status_code == 429
    assert error_message(resp) == "Rate limit for this resource has been exceeded."
    assert resp.headers.get("Retry-After") == (None if retry_after is None else str(retry_after))
    assert resp.headers["X-RateLimit-Limit"] == "2"
    assert resp.headers["X-RateLimit-NearLimit"] == "true"
    emu.set_rate_limit(TOKEN, None)
    assert http.get(api(emu)).status_code == 200


def test_rate_limit_headers_go_to_access_tokens_only(emu: BitbucketEmulator) -> None:
    emu.set_rate_limit(API_TOKEN, 10)
    resp = requests.get(api(emu), auth=(EMAIL, API_TOKEN))
    assert resp.status_code == 200
    assert "X-RateLimit-Limit" not in resp.headers


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "Something went wrong on the server. Try again later."),
        (503, "Service unavailable. Try again later."),
        (555, "The request timed out. List with a smaller max_depth or fewer folders."),
        (429, "Rate limit for this resource has been exceeded."),
    ],
)
def test_injected_status_fires_the_given_number_of_times(
    emu: BitbucketEmulator, http: requests.Session, status: int, message: str
) -> None:
    fault = emu.inject("/src/", status=status, headers={"Retry-After": "1"}, times=2)
    url = api(emu, "/src/main/README.md")
    assert http.get(api(emu)).status_code == 200  # the route does not match
    for _ in range(2):
        resp = http.get(url)
        assert (resp.status_code, error_message(resp)) == (status, message)
        assert resp.headers["Retry-After"] == "1"
    assert fault.remaining == 0
    assert http.get(url).status_code == 200


def test_injected_status_on_data_center_uses_its_error_body(emu: BitbucketEmulator) -> None:
    emu.inject(status=503)
    resp = requests.get(dc(emu, "/raw/README.md"), auth=(EMAIL, API_TOKEN))
    assert resp.status_code == 503
    assert resp.json()["errors"][0]["message"] == "Service unavailable. Try again later."


def test_injected_headers_ride_on_the_real_answer(
    emu: BitbucketEmulator, http: requests.Session
) -> None:
    emu.inject(headers={"X-Test": "yes"})
    resp = http.get(api(emu, "/src/main/README.md"))
    assert (resp.status_code, resp.text, resp.headers["X-Test"]) == (200, "# demo\n", "yes")


def test_injected_delay_trips_a_client_timeout(
    emu: BitbucketEmulator, http: requests.Session
) -> None:
    emu.inject(delay=5)
    with pytest.raises(requests.ReadTimeout):
        http.get(api(emu), timeout=0.2)


def test_dropped_connection_and_truncated_body(
    emu: BitbucketEmulator, http: requests.Session
) -> None:
    url = api(emu, "/src/main/prompts/hello.prompt")
    emu.inject(drop_connection=True)
    with pytest.raises(requests.ConnectionError):
        http.get(url)
    emu.inject(truncate=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(url)
    assert http.get(url).text == FILES["prompts/hello.prompt"]
    assert [r.status for r in emu.requests] == [None, 200, 200]


def test_offline_refuses_connections_then_recovers_on_the_same_port(
    emu: BitbucketEmulator, http: requests.Session
) -> None:
    assert http.get(api(emu)).status_code == 200  # leaves a keep-alive connection open
    port = emu.port
    emu.offline = True
    with pytest.raises(requests.ConnectionError):
        http.get(api(emu))
    emu.offline = False
    assert emu.port == port
    assert http.get(api(emu)).status_code == 200


def test_inject_rejects_unbounded_faults(emu: BitbucketEmulator) -> None:
    with pytest.raises(
        ValueError, match=re.escape("delay must be between 0 and 30.0 seconds, got 31")
    ):
        emu.inject(delay=31)
    with pytest.raises(ValueError, match="times must be between 1 and 10000, got 0"):
        emu.inject(times=0)


# -- observability and lifecycle ---------------------------------------------------------------


def test_an_emulator_failure_is_a_visible_500(tmp_path: Path) -> None:
    broken = GitRepo(tmp_path / "broken")
    broken.commit({"a.txt": "a"}, "One")
    with BitbucketEmulator() as emu:
        emu.add_repository("ws", "broken", broken)
        emu.add_token(TOKEN)
        shutil.rmtree(broken.path)  # every git call now fails inside the server
        resp = requests.get(
            emu.repository_url("ws", "broken") + "/src/main/a.txt",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert resp.status_code == 500
        assert error_message(resp).startswith(
            f"Emulator error: RuntimeError: git for-each-ref failed in {broken.path}: "
        )
        assert [type(e) for e in emu.errors] == [RuntimeError]


def test_request_log_records_each_request(emu: BitbucketEmulator, http: requests.Session) -> None:
    http.get(api(emu, "/src/main/"), params={"max_depth": "2", "pagelen": "5"})
    requests.get(api(emu))
    first, second = emu.requests
    assert (first.method, first.path, first.auth, first.status) == (
        "GET",
        "/2.0/repositories/ws/prompts/src/main/",
        "bearer",
        200,
    )
    assert first.query == {"max_depth": "2", "pagelen": "5"}
    assert (second.auth, second.status) == ("none", 401)
    assert emu.request_count("/src/") == 1
    emu.reset_counts()
    assert emu.request_count() == 0


def test_close_stops_every_thread(repo: GitRepo) -> None:
    emu = BitbucketEmulator()
    emu.add_repository("ws", "prompts", repo)
    emu.add_token(TOKEN)
    with requests.Session() as session:
        session.get(api(emu), headers={"Authorization": f"Bearer {TOKEN}"})
        emu.close()
        emu.close()
        names = [t.name for t in threading.enumerate()]
        assert not [n for n in names if n.startswith(f"bitbucket-emulator-{emu.port}")]
        with pytest.raises(requests.ConnectionError):
            session.get(api(emu))
    with pytest.raises(RuntimeError, match="this BitbucketEmulator is closed; create a new one"):
        emu.offline = False


# -- Data Center -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (None, FILES["prompts/hello.prompt"]),
        ("refs/heads/feature/x", "Hi from feature\n"),
        ("feature/x", "Hi from feature\n"),
    ],
)
def test_data_center_raw_reads_at_a_ref(
    emu: BitbucketEmulator, at: str | None, expected: str
) -> None:
    params = {} if at is None else {"at": at}
    resp = requests.get(
        dc(emu, "/raw/prompts/hello.prompt"), params=params, auth=(EMAIL, API_TOKEN)
    )
    assert (resp.status_code, resp.text) == (200, expected)


def test_data_center_raw_at_a_sha_and_missing_path(emu: BitbucketEmulator, repo: GitRepo) -> None:
    sha = repo.resolve("main")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ok = requests.get(dc(emu, "/raw/README.md"), params={"at": sha[:8]}, headers=headers)
    assert ok.text == "# demo\n"
    missing = requests.get(dc(emu, "/raw/nope.prompt"), params={"at": sha}, headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {
        "errors": [
            {
                "context": None,
                "message": f"The path 'nope.prompt' does not exist at revision '{sha}'.",
                "exceptionName": "com.atlassian.bitbucket.content.NoSuchPathException",
            }
        ]
    }


def test_data_center_files_pages_relative_paths(emu: BitbucketEmulator, repo: GitRepo) -> None:
    repo.commit({f"prompts/more/m{i}.prompt": "m" for i in range(3)}, "More")
    seen: list[str] = []
    start, pages = 0, 0
    while True:
        body = requests.get(
            dc(emu, "/files/prompts"),
            params={"at": "refs/heads/main", "start": str(start), "limit": "2"},
            auth=(EMAIL, API_TOKEN),
        ).json()
        seen += body["values"]
        pages += 1
        if body["isLastPage"]:
            assert "nextPageStart" not in body
            break
        start = body["nextPageStart"]
    assert pages == 3
    assert sorted(seen) == [
        "hello.prompt",
        "more/m0.prompt",
        "more/m1.prompt",
        "more/m2.prompt",
        "support/triage.prompt",
    ]


def test_data_center_files_rejects_a_file_and_a_missing_folder(emu: BitbucketEmulator) -> None:
    auth = (EMAIL, API_TOKEN)
    on_file = requests.get(dc(emu, "/files/README.md"), auth=auth)
    assert on_file.status_code == 400
    assert on_file.json()["errors"][0]["message"].startswith("'README.md' is a file at ")
    missing = requests.get(dc(emu, "/files/nope"), auth=auth)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["message"].startswith("The path 'nope' does not exist at")


def test_data_center_resolves_branches(emu: BitbucketEmulator, repo: GitRepo) -> None:
    auth = (EMAIL, API_TOKEN)
    default = requests.get(dc(emu, "/branches/default"), auth=auth).json()
    assert (default["displayId"], default["latestCommit"]) == ("main", repo.resolve("main"))
    found = requests.get(dc(emu, "/branches"), params={"filterText": "x"}, auth=auth).json()
    exact = [v for v in found["values"] if v["displayId"] == "feature/x"]
    assert exact[0]["latestCommit"] == repo.resolve("feature/x")
    commit = requests.get(dc(emu, f"/commits/{repo.resolve('main')}"), auth=auth).json()
    assert commit["id"] == repo.resolve("main")
    by_name = requests.get(dc(emu, "/commits/main"), auth=auth)
    assert by_name.status_code == 404  # commits/{id} takes a SHA only


def test_data_center_answers_401_for_a_repository_out_of_reach(
    emu: BitbucketEmulator,
) -> None:
    emu.add_token("elsewhere", repos=[("OTHER", "repo")])
    resp = requests.get(dc(emu, "/raw/README.md"), headers={"Authorization": "Bearer elsewhere"})
    assert resp.status_code == 401
    assert resp.json()["errors"][0]["message"] == (
        "You are not permitted to access repository PRJ/prompts. Ask its admin for read access "
        "or use a token created for it."
    )
    token_as_basic = requests.get(dc(emu, "/raw/README.md"), auth=("x-token-auth", TOKEN))
    assert token_as_basic.status_code == 401  # repository tokens work only as Bearer


# -- webhooks ----------------------------------------------------------------------------------


def test_push_delivery_is_signed_with_hmac_sha256() -> None:
    headers, body = make_push_delivery("s3cret", "ws", "prompts", "main", "b" * 40, "a" * 40)
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hub-Signature"], f"sha256={expected}")
    assert headers["X-Event-Key"] == "repo:push"
    assert headers["User-Agent"] == "Bitbucket-Webhooks/2.0"
    assert headers["X-Attempt-Number"] == "1"
    change = json.loads(body)["push"]["changes"][0]
    assert (change["new"]["name"], change["new"]["type"]) == ("main", "branch")
    assert (change["new"]["target"]["hash"], change["old"]["target"]["hash"]) == (
        "b" * 40,
        "a" * 40,
    )
    assert json.loads(body)["repository"]["full_name"] == "ws/prompts"


def test_each_delivery_has_its_own_request_uuid_and_deletes_have_no_new() -> None:
    first, _ = make_push_delivery("s", "ws", "prompts", "main", "b" * 40, "a" * 40)
    second, body = make_push_delivery("s", "ws", "prompts", "old", None, "a" * 40)
    assert first["X-Request-UUID"] != second["X-Request-UUID"]
    assert first["X-Hook-UUID"] == second["X-Hook-UUID"]
    change = json.loads(body)["push"]["changes"][0]
    assert (change["new"], change["closed"]) == (None, True)
    unsigned, _ = make_push_delivery(None, "ws", "prompts", "main", "b" * 40, None)
    assert "X-Hub-Signature" not in unsigned


# -- GitRepo -----------------------------------------------------------------------------------


def test_git_repo_commits_deletes_and_resolves(repo: GitRepo) -> None:
    before = repo.resolve("main")
    sha = repo.commit({"README.md": None}, "Drop readme")
    assert "README.md" not in repo.tree(sha)
    assert repo.commit_info(sha).parents == (before,)
    assert repo.commit_info(sha).message == "Drop readme"
    assert repo.read(before, "README.md") == b"# demo\n"
    with pytest.raises(LookupError, match="no commit 'nope' in the test repository"):
        repo.resolve("nope")
    with pytest.raises(ValueError, match=r"cannot commit '\.\./x': use a relative path"):
        repo.commit({"../x": "no"})
