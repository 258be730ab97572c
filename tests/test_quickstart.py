"""The seed's SDK quick start, unchanged but for ``litellm`` → ``promptdock``, end to end.

The model call goes to a local OpenAI-compatible server found through ``OPENAI_BASE_URL``,
exactly as the official ``openai`` client would find it, so the quick start's code is untouched.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import pytest

from tests.support.openai_server import OpenAIServer

ROOT = Path(__file__).parent.parent

SEED_QUICK_START = """
import promptdock

promptdock.global_prompt_directory = "prompts/"

response = promptdock.completion(
    model="dotprompt/gpt-4",
    prompt_id="hello",
    prompt_variables={"user_message": "What is the capital of France?"},
)
ANSWER = response.choices[0].message.content
"""


def test_seed_sdk_quick_start_against_a_local_openai_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIServer
) -> None:
    pytest.importorskip("promptdock_filesystem")
    shutil.copytree(ROOT / "examples" / "prompts", tmp_path / "prompts")
    (tmp_path / "quick_start.py").write_text(SEED_QUICK_START)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
    import promptdock

    monkeypatch.setattr(promptdock, "global_prompt_directory", None)
    namespace = runpy.run_path(str(tmp_path / "quick_start.py"))
    assert namespace["ANSWER"] == "echo: What is the capital of France?"
    (request,) = openai_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-local-test"
    assert request.body == {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0.7,
        "max_tokens": 150,
    }
    assert namespace["response"].prompt.path == "hello.prompt"


def test_offline_quick_start_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("promptdock_filesystem")
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "support/triage" in out
    assert "user: What is the capital of France?" in out
