"""The proxy on the network: traversal ids over HTTP, webhook forgeries, team keys that try
to cross into other teams' prompts and models, and secrets in answers and logs.

Runs the real proxy (uvicorn on 127.0.0.1) with the fixtures of ``tests/proxy``; a secret
file lies next to the prompt folder, and every answer is checked not to contain it.
"""

from __future__ import annotations

import http.client
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.proxy.conftest import (
    MASTER_KEY,
    SECRETS,
    TEAM_KEY,
    WEBHOOK_SECRET,
    RunningProxy,
)
from tests.security import payloads
from tests.security.figures import count
from tests.support.bitbucket import make_push_delivery, sign
from tests.support.openai_server import OpenAIServer

OUTSIDE = "the secret beside the folder 0c4d"


@pytest.fixture
def guarded(proxy: RunningProxy, prompts_folder: Path) -> RunningProxy:
    """The proxy of ``tests/proxy``, with secrets next to and above its prompt folder."""
    for name in ("secret.prompt", "outside.prompt", "etc/passwd.prompt"):
        path = prompts_folder.parent / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"User: {OUTSIDE}")
    (prompts_folder / "support" / "leak.prompt").symlink_to(prompts_folder.parent / "secret.prompt")
    return proxy


def _raw(proxy: RunningProxy, method: str, target: str, key: str = MASTER_KEY) -> tuple[int, str]:
    """Send ``target`` byte for byte (an HTTP client would normalise ``..`` segments)."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {key}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def test_traversal_ids_in_a_request_body_are_refused(guarded: RunningProxy) -> None:
    for prompt_id in (*payloads.TRAVERSAL_IDS, "support/leak"):
        for key in (MASTER_KEY, TEAM_KEY):
            body = {"model": "any-prompt", "prompt_id": prompt_id, "prompt_variables": {"q": 1}}
            answer = guarded.chat(body, key=key)
            assert answer.status_code in (400, 403), (prompt_id, answer.text)
            assert OUTSIDE not in answer.text
            count("proxy: traversal ids refused over HTTP")
        versioned = guarded.chat(
            {"model": "any-prompt", "prompt_id": prompt_id, "prompt_version": 1}
        )
        # 404 for the link: it has no version 1 (its target is never looked at).
        assert versioned.status_code in (400, 403, 404), (prompt_id, versioned.text)
        assert OUTSIDE not in versioned.text
        count("proxy: traversal ids refused over HTTP")


_PATHS = (
    "/v1/prompts/../secret",
    "/v1/prompts/../../etc/passwd",
    "/v1/prompts/%2e%2e/secret",
    "/v1/prompts/%2e%2e%2fsecret",
    "/v1/prompts/..%2fsecret",
    "/v1/prompts/%252e%252e%252fsecret",
    "/v1/prompts/..%5csecret",
    "/v1/prompts/%2fetc%2fpasswd",
    "/v1/prompts//etc/passwd",
    "/v1/prompts/support/..%2f..%2fsecret",
    "/v1/prompts/support/leak",
    "/v1/prompts/hello%00",
    "/v1/prompts/%c0%ae%c0%ae/secret",
    "/v1/prompts/C:%5csecret",
    "/v1/prompts/hello?source=../",
    "/v1/prompts/hello?version=../1",
    "/v1/../v1/prompts/hello/../../secret",
)


@pytest.mark.parametrize("target", _PATHS)
def test_traversal_in_the_prompts_url_is_refused(guarded: RunningProxy, target: str) -> None:
    for key in (MASTER_KEY, TEAM_KEY):
        status, text = _raw(guarded, "GET", target, key)
        assert status in (400, 403, 404), (target, status, text)
        assert OUTSIDE not in text
        count("proxy: traversal ids refused over HTTP")


# -- team keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4o-plain", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "my-dotprompt-model", "prompt_variables": {"user_message": "hi"}},
        {"model": "any-prompt", "prompt_id": "hello", "prompt_variables": {"user_message": "x"}},
        {"model": "any-prompt", "prompt_id": "billing/refund", "prompt_variables": {"q": "x"}},
        {"model": "any-prompt", "prompt_id": "Support/triage", "prompt_variables": {"t": "x"}},
        {"model": "any-prompt", "prompt_id": "support/../hello"},
        {"model": "any-prompt", "prompt_id": "support"},
        {"model": "any-prompt", "prompt_id": "dotprompt/hello"},
        {"model": "dotprompt/gpt-4o"},
        {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "support-bot", "prompt_id": "hello"},
        {"model": "support-bot", "prompt_id": "billing/refund"},
        {"model": "Support-Bot", "prompt_variables": {"ticket": "x"}},
        {"model": "support-*", "prompt_variables": {"ticket": "x"}},
        {"model": "support-bot", "api_base": "http://127.0.0.1:1/v1", "prompt_variables": {}},
        {"model": "support-bot", "api_key": "sk-mine", "prompt_variables": {"ticket": "x"}},
        {"model": ["support-bot"], "prompt_variables": {"ticket": "x"}},
    ],
)
def test_a_team_key_cannot_reach_other_prompts_or_models(
    guarded: RunningProxy, upstream: OpenAIServer, body: dict[str, Any]
) -> None:
    answer = guarded.chat(body, key=TEAM_KEY)
    assert answer.status_code in (400, 403, 404), (body, answer.text)
    assert answer.json()["error"]["message"]
    assert upstream.requests == [], "the upstream was called"
    count("proxy: cross-team attempts refused")


def test_a_team_key_sees_only_its_own_models_and_prompts(guarded: RunningProxy) -> None:
    models = guarded.request("GET", "/v1/models", key=TEAM_KEY).json()
    assert sorted(model["id"] for model in models["data"]) == ["any-prompt", "support-bot"]
    prompts = guarded.request("GET", "/v1/prompts", key=TEAM_KEY).json()
    listed = json.dumps(prompts)
    assert "support/triage" in listed
    assert "billing/refund" not in listed
    assert '"hello"' not in listed
    for target in ("/v1/prompts/hello", "/v1/prompts/billing/refund", "/v1/prompts/support/leak"):
        answer = guarded.request("GET", target, key=TEAM_KEY)
        assert answer.status_code in (400, 403, 404), target
        assert OUTSIDE not in answer.text
        count("proxy: cross-team attempts refused")
    served = guarded.chat(
        {"model": "any-prompt", "prompt_id": "support/triage", "prompt_variables": {"ticket": "x"}},
        key=TEAM_KEY,
    )
    assert served.status_code == 200, served.text


# -- the webhook ----------------------------------------------------------------------------

_PUSH = ("acme", "prompts", "main", "a" * 40, "b" * 40)


def _deliver(proxy: RunningProxy, body: bytes, headers: dict[str, str]) -> requests.Response:
    return proxy.request("POST", "/webhooks/bitbucket", key=None, data=body, headers=headers)


def test_webhook_with_a_bad_or_missing_signature_is_refused(guarded: RunningProxy) -> None:
    headers, body = make_push_delivery(WEBHOOK_SECRET, *_PUSH)
    forgeries = {
        "missing": {k: v for k, v in headers.items() if k != "X-Hub-Signature"},
        "wrong secret": {**headers, "X-Hub-Signature": sign("guessed", body)},
        "empty": {**headers, "X-Hub-Signature": ""},
        "bare prefix": {**headers, "X-Hub-Signature": "sha256="},
        "truncated": {**headers, "X-Hub-Signature": headers["X-Hub-Signature"][:-2]},
        "other algorithm": {**headers, "X-Hub-Signature": "sha1=" + "0" * 40},
        "of another body": {**headers, "X-Hub-Signature": sign(WEBHOOK_SECRET, body + b" ")},
    }
    for name, forged in forgeries.items():
        answer = _deliver(guarded, body, forged)
        assert answer.status_code == 401, name
        assert answer.json()["error"]["code"] == "invalid_signature"
        count("proxy: webhook forgeries refused")
    tampered = body.replace(b"prompts", b"others", 1)
    assert _deliver(guarded, tampered, headers).status_code == 401
    count("proxy: webhook forgeries refused")


def test_a_replayed_webhook_delivery_is_ignored(guarded: RunningProxy) -> None:
    headers, body = make_push_delivery(WEBHOOK_SECRET, *_PUSH)
    first = _deliver(guarded, body, headers)
    assert first.status_code == 200, first.text
    for _ in range(3):
        again = _deliver(guarded, body, headers)
        assert again.json() == {"status": "duplicate", "delivery": headers["X-Request-UUID"]}
        count("proxy: webhook replays ignored")


def test_an_oversized_webhook_body_is_refused(guarded: RunningProxy) -> None:
    body = b'{"repository": {"full_name": "acme/prompts"}, "pad": "' + b"x" * (2 << 20) + b'"}'
    headers = {"X-Event-Key": "repo:push", "X-Hub-Signature": sign(WEBHOOK_SECRET, body)}
    answer = _deliver(guarded, body, headers)
    assert answer.status_code == 413
    count("proxy: oversized bodies refused")


def test_an_oversized_chat_body_is_refused(guarded: RunningProxy, upstream: OpenAIServer) -> None:
    body = {"model": "any-prompt", "prompt_id": "hello", "pad": "x" * (2 << 20)}
    answer = guarded.chat(body)
    assert answer.status_code == 413
    assert upstream.requests == []
    count("proxy: oversized bodies refused")


def test_a_deeply_nested_body_is_a_400(guarded: RunningProxy) -> None:
    answer = guarded.request("POST", "/v1/chat/completions", data=b"[" * 100_000 + b"]" * 100_000)
    assert answer.status_code == 400


# -- secrets --------------------------------------------------------------------------------


def test_no_secret_in_any_answer_header_or_log(
    guarded: RunningProxy, upstream: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.enqueue(status=500, times=10)
    headers, body = make_push_delivery(WEBHOOK_SECRET, *_PUSH)
    with caplog.at_level(logging.DEBUG):
        answers = [
            guarded.chat(
                {"model": "my-dotprompt-model", "prompt_variables": {"user_message": "?"}}
            ),
            guarded.chat({"model": "gpt-4o-plain", "messages": [{"role": "user", "content": "x"}]}),
            guarded.chat({"model": "support-bot", "prompt_variables": {"ticket": "?"}}, key="sk-x"),
            guarded.chat({"model": "nope"}, key=TEAM_KEY),
            guarded.chat({"model": "any-prompt", "prompt_id": "../secret"}),
            guarded.request("GET", "/v1/models"),
            guarded.request("GET", "/v1/prompts"),
            guarded.request("GET", "/v1/prompts/hello"),
            guarded.request("GET", "/v1/prompts/support/triage", key=TEAM_KEY),
            guarded.request("GET", "/health/readiness", key=None),
            guarded.request("GET", "/health/liveliness", key=None),
            _deliver(guarded, body, headers),
            _deliver(guarded, body, {**headers, "X-Hub-Signature": "sha256=00"}),
        ]
        stream = guarded.chat(
            {"model": "support-bot", "prompt_variables": {"ticket": "?"}, "stream": True},
            stream=True,
        )
        streamed = b"".join(stream.iter_content(None)).decode()
    seen = [caplog.text, streamed, *(a.text + json.dumps(dict(a.headers)) for a in answers)]
    for secret in SECRETS:
        assert all(secret not in text for text in seen)
    count("secrets: texts searched", len(seen))
