"""``/v1/models``, ``/v1/prompts`` and ``/health/*``: filtered per key, never a secret."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from promptdock.proxy.errors import ApiError
from tests.proxy.conftest import (
    MASTER_KEY,
    SECRETS,
    TEAM_KEY,
    RunningProxy,
    ServeConfig,
    config_text,
)
from tests.support.openai_server import OpenAIServer
from tests.support.seed import SEED_CONFIG


def test_models_lists_what_the_key_may_use(proxy: RunningProxy) -> None:
    master = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER_KEY, max_retries=0)
    team = openai.OpenAI(base_url=proxy.base_url, api_key=TEAM_KEY, max_retries=0)

    assert [m.id for m in master.models.list()] == [
        "my-dotprompt-model",
        "support-bot",
        "any-prompt",
        "gpt-4o-plain",
    ]
    assert [m.id for m in team.models.list()] == ["support-bot", "any-prompt"]
    assert proxy.request("GET", "/models").json()["data"][0]["owned_by"] == "promptdock"


def test_models_needs_a_key(proxy: RunningProxy) -> None:
    assert proxy.request("GET", "/v1/models", key=None).status_code == 401


def test_prompts_lists_the_sources_of_the_keys_models(proxy: RunningProxy) -> None:
    master = proxy.request("GET", "/v1/prompts").json()
    team = proxy.request("GET", "/v1/prompts", key=TEAM_KEY).json()

    assert [p["id"] for p in master["data"]] == ["billing/refund", "hello", "support/triage"]
    triage = master["data"][2]
    assert triage == {
        "id": "support/triage",
        "object": "prompt",
        "source": "dotprompt",
        "versions": [],
        "has_unversioned": True,
        "description": "Classify a support ticket.",
        "models": ["my-dotprompt-model", "support-bot", "any-prompt"],
    }
    assert [p["id"] for p in team["data"]] == ["support/triage"]
    assert team["data"][0]["models"] == ["support-bot", "any-prompt"]
    assert "errors" not in master


def test_prompt_details_show_metadata_and_input_schema(proxy: RunningProxy) -> None:
    response = proxy.request("GET", "/v1/prompts/support/triage", key=TEAM_KEY)

    assert response.status_code == 200
    details = response.json()
    assert details["id"] == "support/triage"
    assert details["model"] == "openai/gpt-4o-mini"
    assert details["params"] == {"temperature": 0.9}
    assert details["input_schema"]["properties"]["ticket"] == {
        "type": "string",
        "description": "the customer's message",
    }
    assert details["provenance"]["path"] == "support/triage.prompt"
    assert details["models"] == ["support-bot", "any-prompt"]


def test_prompt_details_refuse_and_explain(proxy: RunningProxy) -> None:
    forbidden = proxy.request("GET", "/v1/prompts/billing/refund", key=TEAM_KEY)
    missing = proxy.request("GET", "/v1/prompts/nope")
    bad_version = proxy.request("GET", "/v1/prompts/hello?version=two")
    bad_source = proxy.request("GET", "/v1/prompts/hello?source=elsewhere")

    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["message"] == (
        "the key of team 'a' may not use prompt 'billing/refund'"
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "prompt_not_found"
    assert bad_version.status_code == 400
    assert bad_version.json()["error"]["param"] == "version"
    assert bad_source.status_code == 404
    assert bad_source.json()["error"]["message"] == (
        "no source 'elsewhere' among the sources of your models (dotprompt)"
    )


def test_prompt_details_mask_secret_looking_frontmatter(
    proxy: RunningProxy, prompts_folder: Path
) -> None:
    (prompts_folder / "leaky.v3.prompt").write_text(
        "---\nmetadata:\n  owner: ana\n  api_token: tok-abc\n---\nHi\n"
    )

    details = proxy.request("GET", "/v1/prompts/leaky?version=3").json()

    assert details["version"] == 3
    assert details["metadata"] == {"owner": "ana", "api_token": "***"}


def test_liveliness_needs_no_key(proxy: RunningProxy) -> None:
    response = proxy.request("GET", "/health/liveliness", key=None)

    assert response.status_code == 200
    assert response.json() == "I'm alive!"


def test_readiness_loads_each_local_deployment_prompt(proxy: RunningProxy) -> None:
    response = proxy.request("GET", "/health/readiness", key=None)

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "sources": {
            "dotprompt": {
                "kind": "filesystem",
                "ready": True,
                "state": "ok",
                "prompts": {"hello": "ok", "support/triage": "ok"},
            }
        },
    }


def test_readiness_is_503_when_a_deployment_prompt_is_broken(
    proxy: RunningProxy, prompts_folder: Path
) -> None:
    (prompts_folder / "hello.prompt").write_text("---\nmodel: [x\n---\nHi\n")

    response = proxy.request("GET", "/health/readiness", key=None)

    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "not ready"
    source = report["sources"]["dotprompt"]
    assert source["ready"] is False
    assert source["state"] == "broken prompts"
    assert source["prompts"]["support/triage"] == "ok"
    assert "hello.prompt:2" in source["prompts"]["hello"]


def test_seed_config_starts_without_reaching_bitbucket(
    serve_config: ServeConfig,
    openai_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-seed-upstream-0123")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    proxy = serve_config(SEED_CONFIG)

    readiness = proxy.request("GET", "/health/readiness", key=None)
    answer = proxy.chat(
        {
            "model": "my-dotprompt-model",
            "messages": [{"role": "user", "content": "IGNORED"}],
            "prompt_variables": {"user_message": "What is the capital of France?"},
        },
        key="sk-1234",
    )

    assert readiness.status_code == 200
    report = readiness.json()
    assert report["status"] == "unknown"
    assert report["sources"]["dotprompt"]["ready"] is True
    bitbucket = report["sources"]["bitbucket"]
    assert (bitbucket["kind"], bitbucket["ready"], bitbucket["state"]) == (
        "bitbucket",
        None,
        "cold",
    )
    assert "your-access-token" not in readiness.text
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == (
        "echo: What is the capital of France?"
    )
    assert openai_server.requests[0].headers["authorization"] == "Bearer sk-seed-upstream-0123"
    assert any("sk-1234, a publicly known key" in w for w in proxy.app.warnings)


def test_readiness_reports_a_missing_folder(
    serve_config: ServeConfig, upstream: OpenAIServer, tmp_path: Path
) -> None:
    text = config_text(upstream).replace("./prompts", "./absent")
    proxy = serve_config(text)

    response = proxy.request("GET", "/health/readiness", key=None)

    assert response.status_code == 503
    source = response.json()["sources"]["dotprompt"]
    assert source["state"] == "missing"
    assert (
        source["error"]
        == f"prompt folder {tmp_path / 'absent'} of source 'dotprompt' does not exist"
    )
    for secret in SECRETS:
        assert secret not in response.text


def test_listing_a_failing_source_is_the_error_when_it_is_the_only_one(
    serve_config: ServeConfig, upstream: OpenAIServer
) -> None:
    proxy = serve_config(config_text(upstream).replace("./prompts", "./absent"))

    response = proxy.request("GET", "/v1/prompts")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "config_error"
    assert "absent" in response.json()["error"]["message"]


def test_api_error_shape() -> None:
    error = ApiError(404, "gone", param="model", code="model_not_found")

    assert error.as_dict() == {
        "error": {
            "message": "gone",
            "type": "not_found_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
