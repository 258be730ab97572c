"""Secrets: tokens and keys never show in logs, errors, reprs, tracebacks, provenance, status
reports or the disk snapshot.

Each test drives a source or the dispatcher through success and every failure it can meet,
captures everything a person or a log collector could see (log records at DEBUG, exception
messages, ``args``, causes and formatted tracebacks, reprs, status and provenance dicts,
every file written), and greps it for the secret in every form it is sent in.
"""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import promptdock_bitbucket
from promptdock import CompletionRequest, PromptDock, PromptdockError
from promptdock.dispatch import openai_http
from tests.security.conftest import TOKEN, bitbucket_dock
from tests.security.figures import count
from tests.support.bitbucket import BitbucketEmulator, GitRepo
from tests.support.openai_server import OpenAIServer

UPSTREAM_KEY = "sk-upstream-secret-4e6a9b1d"
BASIC_USER, BASIC_TOKEN = "dev@example.com", "ATATT-basic-secret-93c1f7"


def _forms(secret: str, user: str | None = None) -> list[str]:
    """Every way ``secret`` travels: as is, and inside a Basic ``Authorization`` header."""
    forms = [secret]
    if user is not None:
        forms.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return forms


class Witness:
    """Collects everything a failure or success leaves for people and log collectors."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def see(self, *values: Any) -> None:
        """Record the ``repr`` and ``str`` of each value."""
        for value in values:
            self.texts.append(repr(value))
            self.texts.append(str(value))

    def attempt(self, call: Callable[[], Any]) -> None:
        """Run ``call``; record its result, or its error with args, causes and traceback."""
        try:
            self.see(call())
        except PromptdockError as exc:
            self.see(exc, exc.args, vars(exc))
            self.texts.append("".join(traceback.format_exception(exc)))
            cause = exc.__cause__ or exc.__context__
            while cause is not None:
                self.see(cause, cause.args)
                cause = cause.__cause__ or cause.__context__

    def files(self, folder: Path) -> None:
        """Record the bytes of every file under ``folder``."""
        for path in folder.rglob("*"):
            if path.is_file():
                self.texts.append(path.read_bytes().decode("utf-8", "replace"))
                self.texts.append(str(path))

    def assert_clean(self, secrets: list[str], caplog: pytest.LogCaptureFixture) -> None:
        """No secret in anything seen, in any log record or in its traceback."""
        self.texts.extend(record.getMessage() for record in caplog.records)
        self.texts.extend(
            "".join(traceback.format_exception(*record.exc_info))
            for record in caplog.records
            if record.exc_info
        )
        seen = "\n".join(self.texts)
        for secret in secrets:
            assert secret not in seen, "a secret leaked"
        count("secrets: texts searched", len(self.texts))


@pytest.fixture
def witness(caplog: pytest.LogCaptureFixture) -> Witness:
    caplog.set_level(logging.DEBUG)
    return Witness()


@pytest.fixture
def repo(git_repo: GitRepo) -> GitRepo:
    git_repo.commit({"prompts/hello.prompt": "User: {{ q }}", "prompts/_p.prompt": "x"}, "A")
    return git_repo


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_bitbucket_credentials_never_show(
    repo: GitRepo,
    bitbucket: BitbucketEmulator,
    bitbucket_options: dict[str, Any],
    tmp_path: Path,
    witness: Witness,
    caplog: pytest.LogCaptureFixture,
    auth: str,
) -> None:
    options = dict(bitbucket_options)
    secrets = _forms(TOKEN)
    if auth == "basic":
        bitbucket.add_basic(BASIC_USER, BASIC_TOKEN, repos=[("acme", "prompts")])
        options.update(auth_method="basic", username=BASIC_USER, access_token=BASIC_TOKEN)
        secrets = _forms(BASIC_TOKEN, BASIC_USER)
    dock = bitbucket_dock(options)
    source = promptdock_bitbucket.source_for(dock.get_source("team-a"))
    witness.see(dock.get_source("team-a"), source, options.keys())
    witness.attempt(lambda: dock.render("hello", {"q": "x"}))
    witness.attempt(lambda: dock.get_prompt("hello").provenance.as_dict())  # type: ignore[union-attr]
    witness.attempt(dock.list_prompts)
    witness.attempt(lambda: dock.get_prompt("missing"))
    witness.attempt(lambda: promptdock_bitbucket.status(dock.get_source("team-a")))
    failures: list[dict[str, Any]] = [
        {"status": 401},
        {"status": 403},
        {"status": 404},
        {"status": 429, "times": 10},
        {"status": 500, "times": 10},
        {"drop_connection": True, "times": 10},
        {"truncate": True, "times": 10},
        {"status": 302, "headers": {"Location": "http://localhost:1/elsewhere"}},
    ]
    for fault in failures:
        cold = bitbucket_dock(
            {**options, "cache_dir": str(tmp_path / f"cold-{len(witness.texts)}")}
        )
        bitbucket.inject("/refs/branches/", **fault)
        witness.attempt(lambda cold=cold: cold.get_prompt("hello"))  # type: ignore[misc]
        bitbucket.clear_faults()
        count("secrets: failures driven")
    # A rejected token, and a refresh that fails: stale state and its last_error.
    repo.commit({"prompts/hello.prompt": "User: changed"}, "B")
    bitbucket.offline = True
    dock.invalidate("team-a")
    witness.attempt(lambda: dock.get_prompt("hello"))
    assert source.wait_idle(10)
    witness.attempt(lambda: promptdock_bitbucket.status(dock.get_source("team-a")))
    bitbucket.offline = False
    rejected = bitbucket_dock({**options, "access_token": "wrong-token-000000"})
    witness.attempt(lambda: rejected.get_prompt("hello"))
    witness.files(tmp_path / "snapshots")
    assert any((tmp_path / "snapshots").rglob("*")), "the snapshot was written"
    witness.assert_clean(secrets, caplog)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    waits: list[float] = []
    monkeypatch.setattr(openai_http, "_sleep", waits.append)
    yield waits
    openai_http.reset_session()


def test_the_upstream_key_never_shows(
    tmp_path: Path,
    witness: Witness,
    caplog: pytest.LogCaptureFixture,
    sleeps: list[float],
) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "hello.prompt").write_text("User: {{ q }}")
    dock = PromptDock(prompt_directory=str(folder), api_key=UPSTREAM_KEY)
    with OpenAIServer(api_key=UPSTREAM_KEY) as server:

        def ask(**kwargs: Any) -> Any:
            return dock.completion(
                model="dotprompt/gpt-4o-mini",
                prompt_id="hello",
                prompt_variables={"q": "hi"},
                api_base=server.base_url,
                max_retries=1,
                **kwargs,
            )

        witness.attempt(ask)
        witness.attempt(lambda: list(ask(stream=True)))
        for fault in (
            {"status": 401},
            {"status": 400, "body": {"error": {"message": f"bad key {UPSTREAM_KEY}"}}},
            {"status": 429, "times": 2},
            {"status": 500, "times": 2},
            {"drop_connection": True, "times": 2},
            {"truncate": True, "times": 2},
            {"status": 200, "body": "not json"},
        ):
            server.enqueue(**fault)
            witness.attempt(ask)
            count("secrets: failures driven")
        witness.attempt(lambda: ask(api_key="sk-wrong-key-00000000"))
        request = dock.prepare_request(
            model="dotprompt/gpt-4o-mini",
            prompt_id="hello",
            prompt_variables={"q": "hi"},
            api_base=server.base_url,
        )
        witness.see(request, CompletionRequest(model="m", messages=[], api_key=UPSTREAM_KEY))
    witness.attempt(ask)  # the server is gone: connection refused
    witness.assert_clean([UPSTREAM_KEY], caplog)
