"""Fixtures for the proxy: a real uvicorn server on 127.0.0.1, in a thread, per test.

``proxy`` serves :data:`CONFIG` (prompt deployments, a pass-through model, a team key) against
the ``openai_server`` upstream; ``serve_config`` serves any config text. Both listen on an
ephemeral port and shut down gracefully at the end of the test.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

import promptdock_bitbucket
from promptdock.config import ProxyConfig, load_config
from promptdock.proxy._http_server import HttpProtocol
from promptdock.proxy.app import ProxyApp
from tests.support.bitbucket import BitbucketEmulator, GitRepo
from tests.support.openai_server import OpenAIServer

MASTER_KEY = "sk-master-test-5c1f0e9d"
TEAM_KEY = "sk-team-a-test-77a2b4c1"
UPSTREAM_KEY = "sk-upstream-test-3e8d6f20"
WEBHOOK_SECRET = "hook-secret-test-91bd04"
SECRETS = (MASTER_KEY, TEAM_KEY, UPSTREAM_KEY, WEBHOOK_SECRET)
"""Distinctive values, so tests can grep responses and logs for leaks."""

HELLO = """\
---
model: gpt-4
temperature: 0.7
max_tokens: 150
input:
  schema:
    user_message: string
---

System: You are a helpful assistant.

User: {{user_message}}
"""

TRIAGE = """\
---
model: openai/gpt-4o-mini
description: Classify a support ticket.
temperature: 0.9
input:
  schema:
    ticket: string, the customer's message
---
System: You triage support tickets.
User: {{ ticket }}
"""

BILLING = """\
---
description: Answer billing questions.
---
User: {{ question }}
"""

PROMPTS = {
    "hello.prompt": HELLO,
    "support/triage.prompt": TRIAGE,
    "billing/refund.prompt": BILLING,
}

CONFIG = """\
model_list:
  - model_name: my-dotprompt-model
    litellm_params:
      model: dotprompt/gpt-4
      prompt_id: "hello"
      api_key: {upstream_key}
      api_base: {upstream}
  - model_name: support-bot
    litellm_params:
      model: dotprompt/gpt-4o
      prompt_id: support/triage
      api_key: {upstream_key}
      api_base: {upstream}
      temperature: 0.2
      max_tokens: 64
  - model_name: any-prompt
    litellm_params:
      model: dotprompt/gpt-4o-mini
      api_key: {upstream_key}
      api_base: {upstream}
  - model_name: gpt-4o-plain
    litellm_params:
      model: openai/gpt-4o
      api_key: {upstream_key}
      api_base: {upstream}
litellm_settings:
  global_prompt_directory: ./prompts
  request_timeout: 5
general_settings:
  master_key: {master_key}
  bitbucket_webhook_secret: {webhook_secret}
keys:
  - key: {team_key}
    team: a
    models: ["support-*", any-prompt]
    prompts: ["support/*"]
"""


def write_prompts(folder: Path, files: Mapping[str, str] = PROMPTS) -> Path:
    """Write ``files`` (relative paths → text) under ``folder``; returns ``folder``."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def config_text(upstream: OpenAIServer | str, template: str = CONFIG) -> str:
    """``template`` with the test keys and the upstream's base URL filled in."""
    base = upstream if isinstance(upstream, str) else upstream.base_url
    return template.format(
        upstream=base,
        upstream_key=UPSTREAM_KEY,
        master_key=MASTER_KEY,
        team_key=TEAM_KEY,
        webhook_secret=WEBHOOK_SECRET,
    )


class RunningProxy:
    """A :class:`ProxyApp` served by uvicorn on an ephemeral 127.0.0.1 port, in a thread."""

    def __init__(self, app: ProxyApp) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            # As `promptdock serve` runs it (proxy.server.serve).
            http=HttpProtocol,
            ws="none",
            server_header=False,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self._sock]},
            name=f"proxy-{self.port}",
            daemon=True,
        )
        self.session = requests.Session()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client's ``base_url`` should be."""
        return f"{self.url}/v1"

    def start(self) -> RunningProxy:
        """Serve, and wait (bounded) until the server accepts requests."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Shut down gracefully and wait for the thread (bounded)."""
        self.session.close()
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
        assert not self._thread.is_alive(), "the proxy did not stop"

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = MASTER_KEY,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request; ``key`` goes in ``Authorization: Bearer`` (``None``: no key)."""
        sent = dict(headers or {})
        if key is not None:
            sent.setdefault("Authorization", f"Bearer {key}")
        return self.session.request(
            method,
            self.url + path,
            json=json,
            data=data,
            headers=sent,
            stream=stream,
            timeout=20,
        )

    def chat(self, body: Any, *, key: str | None = MASTER_KEY, **kwargs: Any) -> requests.Response:
        """``POST /v1/chat/completions`` with ``body`` as JSON."""
        return self.request("POST", "/v1/chat/completions", key=key, json=body, **kwargs)


ServeConfig = Callable[..., RunningProxy]


@pytest.fixture
def prompts_folder(tmp_path: Path) -> Path:
    """``tmp_path/prompts`` holding :data:`PROMPTS`."""
    return write_prompts(tmp_path / "prompts")


@pytest.fixture
def serve_config(tmp_path: Path, prompts_folder: Path) -> Iterator[ServeConfig]:
    """Serve a config: ``serve_config(text, plugins=(), **ProxyApp kwargs)`` → a started proxy.

    The text is written to ``tmp_path/config.yaml`` (next to ``prompts/``); ``plugins`` are
    ``(name, plugin)`` pairs registered in the proxy's dock. Every proxy is stopped at the end
    of the test.
    """
    started: list[RunningProxy] = []

    def serve(
        text: str,
        name: str = "config.yaml",
        plugins: Sequence[tuple[str, object]] = (),
        **kwargs: Any,
    ) -> RunningProxy:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        config = load_config(path)
        if plugins:
            kwargs["dock"] = config.make_dock(plugins=plugins)
        proxy = RunningProxy(ProxyApp(config, **kwargs)).start()
        started.append(proxy)
        return proxy

    yield serve
    for proxy in started:
        proxy.stop()


@pytest.fixture
def upstream() -> Iterator[OpenAIServer]:
    """The local OpenAI-compatible upstream, requiring :data:`UPSTREAM_KEY`."""
    with OpenAIServer(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def proxy(serve_config: ServeConfig, upstream: OpenAIServer) -> RunningProxy:
    """The proxy serving :data:`CONFIG` in front of ``upstream``."""
    return serve_config(config_text(upstream))


def loaded(text: str, folder: Path) -> ProxyConfig:
    """``text`` written to ``folder/config.yaml`` and loaded."""
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


# -- Bitbucket --------------------------------------------------------------------------------

BITBUCKET_TOKEN = "bb-token-test-4d1e77"
WORKSPACE, REPO = "acme", "prompts"


@pytest.fixture
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitRepo]:
    """An empty bare git repository; the Bitbucket plugin's caches stay in ``tmp_path``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    yield GitRepo(tmp_path / "bitbucket-repo")
    promptdock_bitbucket.close_all()


@pytest.fixture
def bitbucket(git_repo: GitRepo) -> Iterator[BitbucketEmulator]:
    """The Bitbucket emulator serving ``git_repo`` as acme/prompts to BITBUCKET_TOKEN."""
    with BitbucketEmulator() as emulator:
        emulator.add_repository(WORKSPACE, REPO, git_repo)
        emulator.add_token(BITBUCKET_TOKEN, repos=[(WORKSPACE, REPO)])
        yield emulator
        assert emulator.errors == []
