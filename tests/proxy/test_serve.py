"""``promptdock serve`` as users run it: a subprocess, the seed's config and curl command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.proxy.conftest import (
    BITBUCKET_TOKEN,
    HELLO,
    MASTER_KEY,
    REPO,
    WEBHOOK_SECRET,
    WORKSPACE,
)
from tests.proxy.test_webhook import BITBUCKET_CONFIG, PROMPT_V1, PROMPT_V2
from tests.support.bitbucket import BitbucketEmulator, GitRepo, make_push_delivery
from tests.support.openai_server import OpenAIServer
from tests.support.seed import SEED_CONFIG

SEED_CURL = """\
curl -X POST http://127.0.0.1:4000/v1/chat/completions -H 'Authorization: Bearer sk-1234' \\
  -H 'Content-Type: application/json' \\
  -d '{"model": "my-dotprompt-model", "messages": [{"role": "user", "content": "IGNORED"}],
       "prompt_variables": {"user_message": "What is the capital of France?"}}'"""
"""The seed's curl command (its port is replaced by the test's)."""

_START_TIMEOUT = 30.0

SERVE = (sys.executable, "-m", "promptdock.cli", "serve")
"""The command line of ``promptdock serve`` with this interpreter."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A ``promptdock serve`` subprocess, its output in files."""

    def __init__(self, folder: Path, args: list[str], env: dict[str, str]) -> None:
        self.folder = folder
        self.stdout_path = folder / "stdout.txt"
        self.stderr_path = folder / "stderr.txt"
        self.port = _free_port()
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [*SERVE, "--port", str(self.port), *args],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=err,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_alive(self) -> float:
        """Poll ``/health/liveliness`` until it answers; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < _START_TIMEOUT:
            if self.process.poll() is not None:
                pytest.fail(f"promptdock serve exited {self.process.returncode}: {self.stderr}")
            try:
                if requests.get(self.url + "/health/liveliness", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        pytest.fail(f"promptdock serve did not start: {self.stderr}")

    def stop(self) -> int:
        """SIGTERM, then wait (bounded); returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail("promptdock serve did not stop on SIGTERM")


@pytest.fixture
def seed_folder(tmp_path: Path) -> Path:
    """The seed's layout: config.yaml (verbatim) and prompts/hello.prompt."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "hello.prompt").write_text(HELLO)
    (tmp_path / "config.yaml").write_text(SEED_CONFIG)
    return tmp_path


@pytest.fixture
def env(tmp_path: Path, openai_server: OpenAIServer) -> dict[str, str]:
    """The environment of the server: the seed's OPENAI_API_KEY, upstream on 127.0.0.1."""
    return {
        **os.environ,
        "OPENAI_API_KEY": "sk-seed-upstream-0123",
        "OPENAI_BASE_URL": openai_server.base_url,
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "NO_PROXY": "127.0.0.1,localhost",
    }


@pytest.fixture
def serve(seed_folder: Path, env: dict[str, str]) -> Iterator[list[Served]]:
    """Started servers, stopped at the end of the test."""
    started: list[Served] = []
    yield started
    for served in started:
        served.stop()


def test_seed_config_and_curl_command(
    seed_folder: Path, env: dict[str, str], serve: list[Served], openai_server: OpenAIServer
) -> None:
    served = Served(seed_folder, ["--config", "config.yaml"], env)
    serve.append(served)
    served.wait_alive()
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    command = SEED_CURL.replace(":4000/", f":{served.port}/")

    result = subprocess.run(
        ["sh", "-c", command + " --silent --show-error --include"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200 OK")
    assert "x-promptdock-prompt-id: hello" in result.stdout
    answer = json.loads(result.stdout.split("\n\n", 1)[1])  # the body, after the head
    assert answer["choices"][0]["message"]["content"] == "echo: What is the capital of France?"
    assert openai_server.requests[0].body["messages"][1]["content"] == (
        "What is the capital of France?"
    )
    status = served.stop()
    assert status in (0, -signal.SIGTERM)
    warnings = [line for line in served.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: config.yaml: general_settings.master_key is sk-1234, a publicly known key: "
        "anyone who can reach this machine's loopback address can use the proxy. Fine for a "
        "demo; set a real key before listening on any other address"
    ]
    access = served.stdout.splitlines()
    assert any(
        line.startswith("method=POST path=/v1/chat/completions status=200 model=my-dotprompt-model")
        for line in access
    )


def test_shutdown_lets_an_in_flight_request_finish(
    seed_folder: Path, env: dict[str, str], serve: list[Served], openai_server: OpenAIServer
) -> None:
    served = Served(seed_folder, ["--config", "config.yaml"], env)
    serve.append(served)
    served.wait_alive()
    openai_server.enqueue(delay=1.0)
    answers: list[requests.Response] = []

    def ask() -> None:
        answers.append(
            requests.post(
                served.url + "/v1/chat/completions",
                json={"model": "my-dotprompt-model", "prompt_variables": {"user_message": "hi"}},
                headers={"Authorization": "Bearer sk-1234"},
                timeout=20,
            )
        )

    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 10
    while not openai_server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    status = served.stop()
    asker.join(timeout=20)

    assert status in (0, -signal.SIGTERM)
    assert len(answers) == 1
    assert answers[0].status_code == 200
    assert answers[0].json()["choices"][0]["message"]["content"] == "echo: hi"


def test_public_key_on_a_public_address_is_refused(seed_folder: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [*SERVE, "--config", "config.yaml", "--host", "0.0.0.0", "--port", str(_free_port())],
        cwd=seed_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: config.yaml:17: general_settings.master_key: sk-1234 is a publicly known key, "
        "so the proxy will not listen on 0.0.0.0 with it"
    )


def test_config_errors_name_key_and_line(seed_folder: Path, env: dict[str, str]) -> None:
    del env["OPENAI_API_KEY"]

    result = subprocess.run(
        [*SERVE, "--config", "config.yaml"],
        cwd=seed_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr == (
        "error: config.yaml:6: model_list[0].litellm_params.api_key: environment variable "
        "OPENAI_API_KEY is not set. Export it before starting promptdock, or write the value in "
        "the config\n"
    )


def test_workers_share_the_port_and_unused_keys_are_warned_once(
    seed_folder: Path, env: dict[str, str], serve: list[Served]
) -> None:
    config = seed_folder / "config.yaml"
    config.write_text(SEED_CONFIG + "router_settings:\n  routing_strategy: simple-shuffle\n")
    served = Served(seed_folder, ["--config", "config.yaml", "--workers", "2"], env)
    serve.append(served)
    served.wait_alive()

    answers = [
        requests.post(
            served.url + "/v1/chat/completions",
            json={"model": "my-dotprompt-model", "prompt_variables": {"user_message": "hi"}},
            headers={"Authorization": "Bearer sk-1234"},
            timeout=20,
        ).status_code
        for _ in range(4)
    ]

    assert answers == [200] * 4
    assert served.stop() in (0, -signal.SIGTERM)
    unused = [line for line in served.stderr.splitlines() if "ignores these keys" in line]
    assert unused == [
        "warning: config.yaml: promptdock ignores these keys: router_settings (LiteLLM settings "
        "it does not implement; harmless)"
    ]


def test_a_push_reaches_every_worker(
    tmp_path: Path,
    env: dict[str, str],
    serve: list[Served],
    openai_server: OpenAIServer,
    bitbucket: BitbucketEmulator,
    git_repo: GitRepo,
) -> None:
    (tmp_path / "config.yaml").write_text(
        BITBUCKET_CONFIG.format(
            upstream=openai_server.base_url,
            upstream_key="sk-any",
            workspace=WORKSPACE,
            repo=REPO,
            token=BITBUCKET_TOKEN,
            base_url=bitbucket.base_url,
            cache_dir=tmp_path / "snapshots",
            master_key=MASTER_KEY,
            secret=WEBHOOK_SECRET,
        )
    )
    first = git_repo.commit({"prompts/hello.prompt": PROMPT_V1}, "v1")
    served = Served(tmp_path, ["--config", "config.yaml", "--workers", "2"], env)
    serve.append(served)
    served.wait_alive()

    def shas(count: int) -> set[str]:
        # A new connection each time, so both workers get some of the requests.
        found = set()
        for _ in range(count):
            response = requests.post(
                served.url + "/v1/chat/completions",
                json={"model": "team-hello", "prompt_variables": {"q": "?"}},
                headers={"Authorization": f"Bearer {MASTER_KEY}", "Connection": "close"},
                timeout=20,
            )
            assert response.status_code == 200, response.text
            found.add(response.headers["x-promptdock-sha"])
        return found

    assert shas(6) == {first}
    second = git_repo.commit({"prompts/hello.prompt": PROMPT_V2}, "v2")
    headers, body = make_push_delivery(WEBHOOK_SECRET, WORKSPACE, REPO, "main", second, first)
    delivered = requests.post(
        served.url + "/webhooks/bitbucket", data=body, headers=headers, timeout=20
    )

    assert delivered.json()["status"] == "invalidated"
    assert shas(8) == {second}
