"""What users type: the LiteLLM Bitbucket quick start with ``promptdock``, end to end.

The repository holds the quick start's ``prompts/chat_assistant.prompt``; the model call goes
to a local OpenAI-compatible server, so the whole path (global config → plugin → Bitbucket
emulator → render → HTTP dispatch) runs for real.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import promptdock
from promptdock import ModelResponse, PromptDock
from tests.plugins.bitbucket.conftest import commit_prompts
from tests.support.bitbucket import BitbucketEmulator, GitRepo
from tests.support.openai_server import OpenAIServer

CHAT_ASSISTANT = """---
model: gpt-4
temperature: 0.7
max_tokens: 150
input:
  schema:
    user_message: string
    system_context?: string
---

{% if system_context %}System: {{system_context}}

{% endif %}User: {{user_message}}
"""


@pytest.fixture
def global_config() -> Iterator[None]:
    """Leave the module-level default dock without a Bitbucket source afterwards."""
    yield
    promptdock.set_global_bitbucket_config(None)


def test_the_quick_start_runs_end_to_end(
    git_repo: GitRepo,
    bitbucket: BitbucketEmulator,
    options: dict[str, Any],
    openai_server: OpenAIServer,
    global_config: None,
) -> None:
    sha = commit_prompts(git_repo, {"chat_assistant.prompt": CHAT_ASSISTANT})
    promptdock.set_global_bitbucket_config(
        {
            "workspace": "acme",
            "repository": "prompts",
            "access_token": options["access_token"],
            "branch": "main",
            "base_url": options["base_url"],  # honoured (LiteLLM ignores it)
            "cache_dir": options["cache_dir"],
        }
    )
    response = promptdock.completion(
        model="bitbucket/gpt-4",
        prompt_id="chat_assistant",  # LiteLLM: "prompts/chat_assistant"
        prompt_variables={
            "user_message": "What is machine learning?",
            "system_context": "You are a helpful AI tutor.",
        },
        messages=[{"role": "user", "content": "Please explain it simply."}],
        append_messages=True,  # LiteLLM appends the caller's messages after the prompt's
        api_base=openai_server.base_url,
        api_key="sk-test",
    )
    assert isinstance(response, ModelResponse)
    assert response.choices[0].message.content == "echo: Please explain it simply."
    sent = openai_server.requests[-1].body
    assert sent["model"] == "gpt-4"
    assert sent["temperature"] == 0.7
    assert sent["max_tokens"] == 150
    assert sent["messages"] == [
        {"role": "system", "content": "You are a helpful AI tutor."},
        {"role": "user", "content": "What is machine learning?"},
        {"role": "user", "content": "Please explain it simply."},
    ]
    assert response.prompt is not None
    assert (response.prompt.source, response.prompt.sha) == ("bitbucket", sha)
    assert response.prompt.path == "prompts/chat_assistant.prompt"


def test_a_per_call_bitbucket_config_needs_no_global(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, options: dict[str, Any]
) -> None:
    sha = commit_prompts(git_repo, {"support/triage.prompt": "User: triage {{ ticket }}"})
    dock = PromptDock(load_entrypoints=True)
    assert dock.source_names == []
    for _ in range(2):
        response = dock.completion(
            model="bitbucket/gpt-4",
            prompt_id="support/triage",
            prompt_variables={"ticket": "#42"},
            bitbucket_config=options,
            mock_response="ok",
        )
    assert isinstance(response, ModelResponse)
    assert response.prompt is not None
    assert (response.prompt.prompt_id, response.prompt.sha) == ("support/triage", sha)
    assert bitbucket.request_count() == 2  # resolved and fetched once for both calls


def test_the_module_level_call_reads_os_environ_references(
    git_repo: GitRepo,
    bitbucket: BitbucketEmulator,
    options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    global_config: None,
) -> None:
    commit_prompts(git_repo, {"hello.prompt": "User: hi {{ name }}"})
    monkeypatch.setenv("BITBUCKET_TOKEN", options["access_token"])
    promptdock.set_global_bitbucket_config(
        {**options, "access_token": "os.environ/BITBUCKET_TOKEN"}
    )
    response = promptdock.completion(
        model="bitbucket/mock/echo", prompt_id="hello", prompt_variables={"name": "Ada"}
    )
    assert isinstance(response, ModelResponse)
    assert response.choices[0].message.content is not None
    assert "hi Ada" in response.choices[0].message.content
