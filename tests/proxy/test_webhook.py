"""The Bitbucket webhook: signatures, duplicates, payloads, and push → next answer's new SHA.

The flow tests run the real ``promptdock-bitbucket`` source against the local Bitbucket
emulator (a git repository served over the Cloud REST API).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from promptdock import PromptDock, SourceConfig
from promptdock.proxy.errors import ApiError, Redactor
from promptdock.proxy.events import SharedEvents
from promptdock.proxy.webhook import BitbucketWebhook, Push, parse_push
from tests.proxy.conftest import (
    BITBUCKET_TOKEN,
    MASTER_KEY,
    REPO,
    UPSTREAM_KEY,
    WEBHOOK_SECRET,
    WORKSPACE,
    RunningProxy,
    ServeConfig,
)
from tests.support.bitbucket import BitbucketEmulator, GitRepo, make_push_delivery, sign
from tests.support.openai_server import OpenAIServer


def _hook(secret: str | None = WEBHOOK_SECRET) -> BitbucketWebhook:
    sources = {
        "team-a": SourceConfig(
            "team-a", "bitbucket", {"workspace": "ACME", "repository": "Prompts"}
        ),
        "dc": SourceConfig("dc", "bitbucket", {"project_key": "OPS", "repository": "prompts"}),
        "local": SourceConfig("local", "filesystem", {"path": "/srv/prompts"}),
    }
    return BitbucketWebhook(secret, sources, PromptDock(load_entrypoints=False), Redactor(()))


# -- unit: signature, duplicates, payloads ------------------------------------------------


def test_signature_is_verified_against_the_secret() -> None:
    hook = _hook()
    body = b'{"x": 1}'

    hook.verify(sign(WEBHOOK_SECRET, body).encode(), body)
    hook.verify(sign(WEBHOOK_SECRET, body).upper().encode(), body)  # hex case does not matter
    for signature, message in [
        (None, "the delivery has no X-Hub-Signature header"),
        (sign("other-secret", body).encode(), "the X-Hub-Signature does not match the body"),
        (b"sha256=", "the X-Hub-Signature does not match the body"),
    ]:
        with pytest.raises(ApiError) as caught:
            hook.verify(signature, body)
        assert (caught.value.status, caught.value.code) == (401, "invalid_signature")
        assert caught.value.message.startswith(message)
        assert WEBHOOK_SECRET not in caught.value.message


def test_without_a_secret_every_delivery_is_refused() -> None:
    body = b"{}"

    with pytest.raises(ApiError) as caught:
        _hook(None).verify(sign("anything", body).encode(), body)

    assert caught.value.status == 403
    assert caught.value.message.startswith(
        "this proxy has no webhook secret: set general_settings.bitbucket_webhook_secret"
    )


def test_deliveries_are_deduplicated_by_request_uuid() -> None:
    hook = _hook()

    assert hook.first_time("a")
    assert not hook.first_time("a")
    assert hook.first_time("b")
    assert hook.first_time(None)  # no id: cannot tell, so it is applied
    assert hook.first_time(None)


def test_cloud_push_payload() -> None:
    _, body = make_push_delivery(WEBHOOK_SECRET, "acme", "prompts", "main", "b" * 40, "a" * 40)

    assert parse_push(body) == Push("acme", "prompts", ("main",))


def test_deleted_branch_names_the_old_ref() -> None:
    _, body = make_push_delivery(WEBHOOK_SECRET, "acme", "prompts", "old", None, "a" * 40)

    assert parse_push(body).refs == ("old",)


def test_data_center_refs_changed_payload() -> None:
    body = json.dumps(
        {
            "eventKey": "repo:refs_changed",
            "repository": {"slug": "prompts", "project": {"key": "OPS"}},
            "changes": [
                {"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"}},
                {"ref": {"id": "refs/tags/v1", "displayId": "v1", "type": "TAG"}},
            ],
        }
    ).encode()

    assert parse_push(body) == Push("OPS", "prompts", ("main", "v1"))


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"repository": {"slug": 1}}'])
def test_a_body_that_is_no_push_is_400(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_push(body)

    assert caught.value.status == 400
    assert caught.value.code == "invalid_webhook"


def test_sources_are_matched_by_repository_case_insensitively() -> None:
    hook = _hook()

    assert hook.sources_for(Push("acme", "prompts", ("main",))) == ["team-a"]
    assert hook.sources_for(Push("ops", "PROMPTS", ())) == ["dc"]
    assert hook.sources_for(Push("acme", "other", ())) == []


def test_pings_and_other_events_are_acknowledged_without_effect() -> None:
    body = b"{}"
    signature = sign(WEBHOOK_SECRET, body).encode()
    hook = _hook()

    async def run() -> list[dict[str, object]]:
        return [
            await hook.handle("diagnostics:ping", "1", signature, body),
            await hook.handle("pullrequest:created", "2", signature, body),
        ]

    assert asyncio.run(run()) == [
        {"status": "ok"},
        {"status": "ignored", "reason": "event 'pullrequest:created' is not a push"},
    ]


# -- flow: push → webhook → the next answer shows the new commit -------------------------

PROMPT_V1 = "---\nmodel: gpt-4o-mini\n---\nUser: first {{ q }}\n"
PROMPT_V2 = "---\nmodel: gpt-4o-mini\n---\nUser: second {{ q }}\n"

BITBUCKET_CONFIG = """\
model_list:
  - model_name: team-hello
    litellm_params:
      model: team-a/gpt-4o-mini
      prompt_id: hello
      api_base: {upstream}
      api_key: {upstream_key}
sources:
  team-a:
    kind: bitbucket
    workspace: {workspace}
    repository: {repo}
    access_token: {token}
    branch: main
    base_url: {base_url}
    cache_dir: {cache_dir}
    cache_ttl: 3600
    retry_backoff: 0.001
    max_retries: 1
    timeout: 5
general_settings:
  master_key: {master_key}
  bitbucket_webhook_secret: {secret}
"""


@pytest.fixture
def team_proxy(
    serve_config: ServeConfig,
    upstream: OpenAIServer,
    bitbucket: BitbucketEmulator,
    tmp_path: Path,
) -> RunningProxy:
    text = BITBUCKET_CONFIG.format(
        upstream=upstream.base_url,
        upstream_key=UPSTREAM_KEY,
        workspace=WORKSPACE,
        repo=REPO,
        token=BITBUCKET_TOKEN,
        base_url=bitbucket.base_url,
        cache_dir=tmp_path / "snapshots",
        master_key=MASTER_KEY,
        secret=WEBHOOK_SECRET,
    )
    return serve_config(text)


def _ask(proxy: RunningProxy) -> tuple[str, str]:
    response = proxy.chat({"model": "team-hello", "prompt_variables": {"q": "?"}})
    assert response.status_code == 200, response.text
    return response.headers["x-promptdock-sha"], response.json()["choices"][0]["message"]["content"]


def test_push_webhook_makes_the_next_answer_use_the_new_commit(
    team_proxy: RunningProxy, git_repo: GitRepo
) -> None:
    first = git_repo.commit({"prompts/hello.prompt": PROMPT_V1}, "v1")
    assert _ask(team_proxy) == (first, "echo: first ?")
    second = git_repo.commit({"prompts/hello.prompt": PROMPT_V2}, "v2")
    assert _ask(team_proxy) == (first, "echo: first ?")  # cached: the ref is not re-resolved yet

    headers, body = make_push_delivery(WEBHOOK_SECRET, WORKSPACE, REPO, "main", second, first)
    delivered = team_proxy.request(
        "POST", "/webhooks/bitbucket", key=None, data=body, headers=headers
    )

    assert delivered.status_code == 200, delivered.text
    assert delivered.json() == {
        "status": "invalidated",
        "repository": "acme/prompts",
        "refs": ["main"],
        "sources": ["team-a"],
    }
    assert _ask(team_proxy) == (second, "echo: second ?")
    again = team_proxy.request("POST", "/webhooks/bitbucket", key=None, data=body, headers=headers)
    assert again.json() == {"status": "duplicate", "delivery": headers["X-Request-UUID"]}


def test_forged_delivery_is_401_and_changes_nothing(
    team_proxy: RunningProxy, git_repo: GitRepo
) -> None:
    first = git_repo.commit({"prompts/hello.prompt": PROMPT_V1}, "v1")
    _ask(team_proxy)
    second = git_repo.commit({"prompts/hello.prompt": PROMPT_V2}, "v2")
    headers, body = make_push_delivery("guessed-secret", WORKSPACE, REPO, "main", second, first)

    response = team_proxy.request(
        "POST", "/webhooks/bitbucket", key=None, data=body, headers=headers
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert _ask(team_proxy)[0] == first


def test_provenance_and_readiness_of_a_bitbucket_prompt(
    team_proxy: RunningProxy, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"prompts/hello.prompt": PROMPT_V1}, "v1")
    cold = team_proxy.request("GET", "/health/readiness", key=None).json()

    response = team_proxy.chat({"model": "team-hello", "prompt_variables": {"q": "?"}})
    warm = team_proxy.request("GET", "/health/readiness", key=None).json()

    assert cold["sources"]["team-a"]["state"] == "cold"
    assert response.headers["x-promptdock-source"] == "team-a"
    assert response.headers["x-promptdock-ref"] == "main"
    assert response.headers["x-promptdock-sha"] == sha
    assert response.headers["x-promptdock-stale"] == "false"
    assert warm["status"] == "ready"
    assert warm["sources"]["team-a"]["ready"] is True
    assert warm["sources"]["team-a"]["sha"] == sha
    assert BITBUCKET_TOKEN not in json.dumps(warm)


def test_unreachable_bitbucket_without_a_cached_copy_is_503(
    team_proxy: RunningProxy, bitbucket: BitbucketEmulator
) -> None:
    bitbucket.offline = True

    response = team_proxy.chat({"model": "team-hello", "prompt_variables": {"q": "?"}})

    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "source_unavailable"
    assert error["type"] == "service_unavailable_error"
    assert BITBUCKET_TOKEN not in response.text


# -- several workers: a push reaches all of them ------------------------------------------


def test_shared_events_reach_the_other_workers_once(tmp_path: Path) -> None:
    applied: dict[str, list[tuple[list[str], list[str]]]] = {"a": [], "b": []}
    folder = str(tmp_path / "events")
    first = SharedEvents(folder, lambda s, r: applied["a"].append((list(s), list(r))))
    second = SharedEvents(folder, lambda s, r: applied["b"].append((list(s), list(r))))

    assert first.claim("delivery-1")
    assert not second.claim("delivery-1")  # a retry reaching another worker
    first.publish(["team-a"], ["main"])

    assert second.catch_up() == 1
    assert second.catch_up() == 0
    assert first.catch_up() == 0  # its own event was applied when it was received
    assert applied == {"a": [], "b": [(["team-a"], ["main"])]}


def test_a_new_worker_ignores_older_events(tmp_path: Path) -> None:
    folder = str(tmp_path / "events")
    SharedEvents(folder, lambda s, r: None).publish(["team-a"], ["main"])
    late: list[object] = []

    assert SharedEvents(folder, lambda s, r: late.append(s)).catch_up() == 0
    assert late == []


def test_push_to_one_worker_reaches_another(
    serve_config: ServeConfig,
    upstream: OpenAIServer,
    bitbucket: BitbucketEmulator,
    git_repo: GitRepo,
    tmp_path: Path,
) -> None:
    def worker(name: str) -> RunningProxy:
        # Distinct cache folders make distinct source objects, as separate processes have.
        text = BITBUCKET_CONFIG.format(
            upstream=upstream.base_url,
            upstream_key=UPSTREAM_KEY,
            workspace=WORKSPACE,
            repo=REPO,
            token=BITBUCKET_TOKEN,
            base_url=bitbucket.base_url,
            cache_dir=tmp_path / f"snapshots-{name}",
            master_key=MASTER_KEY,
            secret=WEBHOOK_SECRET,
        )
        return serve_config(text, name=f"{name}.yaml", events_folder=str(tmp_path / "shared"))

    first_worker, second_worker = worker("one"), worker("two")
    first = git_repo.commit({"prompts/hello.prompt": PROMPT_V1}, "v1")
    assert _ask(first_worker)[0] == _ask(second_worker)[0] == first
    second = git_repo.commit({"prompts/hello.prompt": PROMPT_V2}, "v2")
    headers, body = make_push_delivery(WEBHOOK_SECRET, WORKSPACE, REPO, "main", second, first)

    delivered = first_worker.request(
        "POST", "/webhooks/bitbucket", key=None, data=body, headers=headers
    )
    retried = second_worker.request(
        "POST", "/webhooks/bitbucket", key=None, data=body, headers=headers
    )

    assert delivered.json()["status"] == "invalidated"
    assert retried.json()["status"] == "duplicate"
    assert _ask(second_worker) == (second, "echo: second ?")
    assert _ask(first_worker) == (second, "echo: second ?")
