"""A bounded load test of ``promptdock serve`` on loopback, with a push in the middle.

Processes on 127.0.0.1: a minimal OpenAI-compatible upstream that echoes the system message
it was sent (so every answer shows which prompt text was rendered), the proxy (one worker)
serving prompts from the local Bitbucket emulator (run in this process), and this process as
an asyncio load generator. The request mix: a fixed prompt, a prompt chosen per request, a
pinned prompt version, and streamed answers.

A third of the way through, the prompts are changed in a new commit and the signed ``repo:push``
webhook is delivered to the proxy. Every answer is then checked:

- it succeeded (status 200; a stream ends with ``[DONE]``);
- its ``x-promptdock-sha`` is one of the two commits, and the echoed text is that commit's
  (no answer mixes one commit's header with another's prompt);
- an answer that finished before the webhook was sent came from the old commit, one that
  started after the webhook was answered from the new commit.

Reported: requests, failures, mismatches, latency percentiles, throughput, and the proxy's
resident memory after warm-up and at the end. Every loop is bounded by a request count and
the whole run by a deadline.

Run: ``python bench/load_proxy.py`` (50,000 requests at concurrency 64; ``--requests``,
``--concurrency``, ``--json PATH``); ``nox -s load`` runs it. The exit status is 1 when any
request failed or mismatched, or memory grew by more than ``--max-growth-mib``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the Bitbucket emulator lives in the test tree

from tests.support.bitbucket import BitbucketEmulator, GitRepo, make_push_delivery  # noqa: E402

# Throwaway credentials of this run's own servers.
MASTER_KEY = "sk-load-master-6f1e2d"
UPSTREAM_KEY = "sk-load-upstream-0b7a"
TOKEN = "load-bitbucket-token-55c9"  # noqa: S105
WEBHOOK_SECRET = "load-webhook-secret-a3d0"  # noqa: S105
WORKSPACE, REPO = "acme", "prompts"
WARM_UP = 500
"""Requests sent before the first memory reading (caches, pools and JIT-free Python settle)."""


def _prompts(label: str) -> dict[str, str]:
    """The repository's prompt files at commit ``label``; each system line names the label."""
    return {
        "prompts/hello.prompt": (
            "---\nmodel: gpt-4o-mini\ninput:\n  schema:\n    q: string\n---\n"
            f"System: hello rev={label}\nUser: {{{{ q }}}}\n"
        ),
        "prompts/support/triage.prompt": (
            f"---\nmodel: gpt-4o-mini\n---\nSystem: triage rev={label}\nUser: {{{{ q }}}}\n"
        ),
        "prompts/summarize.v1.prompt": f"System: summarize v1 rev={label}\nUser: {{{{ q }}}}\n",
        "prompts/summarize.v2.prompt": f"System: summarize v2 rev={label}\nUser: {{{{ q }}}}\n",
    }


# -- the upstream: a small asyncio HTTP server --------------------------------------------------


class _Upstream(asyncio.Protocol):
    """Answers every POST with a chat completion (or its stream) echoing the system message."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip() == "content-length":
                    length = int(value)
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            self._answer(body)

    def _answer(self, body: bytes) -> None:
        assert self.transport is not None
        request = json.loads(body or b"{}")
        system = next(
            (
                m.get("content", "")
                for m in request.get("messages", [])
                if m.get("role") == "system"
            ),
            "",
        )
        text = f"echo: {system}"
        if request.get("stream"):
            chunk = {
                "id": "chatcmpl-load",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
            }
            events = b"data: " + json.dumps(chunk).encode() + b"\n\n" + b"data: [DONE]\n\n"
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            self.transport.write(head + b"content-length: %d\r\n\r\n" % len(events) + events)
            return
        answer = json.dumps(
            {
                "id": "chatcmpl-load",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        self.transport.write(head + b"content-length: %d\r\n\r\n" % len(answer) + answer)


def run_upstream(port_file: str) -> None:
    """Serve the upstream until killed; write the port to ``port_file`` once listening."""

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, "127.0.0.1", 0)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# -- processes --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(condition: Any, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds:g} s")
        time.sleep(0.05)


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (from ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _config(folder: Path, upstream: int, emulator: BitbucketEmulator) -> Path:
    base = f"http://127.0.0.1:{upstream}/v1"
    text = f"""\
model_list:
  - model_name: greet
    litellm_params:
      model: team-a/gpt-4o-mini
      prompt_id: hello
      api_base: {base}
      api_key: {UPSTREAM_KEY}
  - model_name: any-prompt
    litellm_params:
      model: team-a/gpt-4o-mini
      api_base: {base}
      api_key: {UPSTREAM_KEY}
sources:
  team-a:
    kind: bitbucket
    workspace: {WORKSPACE}
    repository: {REPO}
    access_token: {TOKEN}
    branch: main
    base_url: {emulator.base_url}
    cache_dir: {folder / "snapshots"}
    cache_ttl: 3600
    retry_backoff: 0.01
    max_retries: 2
    timeout: 5
general_settings:
  master_key: {MASTER_KEY}
  bitbucket_webhook_secret: {WEBHOOK_SECRET}
"""
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- the load -----------------------------------------------------------------------------------

_MIX: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("greet", {"model": "greet", "prompt_variables": {"q": "hi"}}, "hello"),
    (
        "triage",
        {"model": "any-prompt", "prompt_id": "support/triage", "prompt_variables": {"q": "x"}},
        "triage",
    ),
    (
        "pinned version",
        {"model": "any-prompt", "prompt_id": "summarize", "prompt_version": 1},
        "summarize v1",
    ),
    ("latest version", {"model": "any-prompt", "prompt_id": "summarize"}, "summarize v2"),
    ("stream", {"model": "greet", "prompt_variables": {"q": "hi"}, "stream": True}, "hello"),
)
_WEIGHTS = (35, 15, 10, 15, 25)


@dataclass
class Record:
    """One request as the load generator saw it."""

    kind: str
    started: float
    finished: float = 0.0
    status: int = 0
    sha: str | None = None
    text: str = ""
    error: str | None = None


@dataclass
class Run:
    """Everything measured in one run."""

    records: list[Record] = field(default_factory=list)
    push_sent: float = 0.0
    push_answered: float = 0.0
    push_status: int = 0
    rss_warm: float = 0.0
    rss_end: float = 0.0


async def _one(session: aiohttp.ClientSession, url: str, kind: str, body: dict[str, Any]) -> Record:
    record = Record(kind, time.monotonic())
    try:
        async with session.post(url, json=body) as response:
            record.status = response.status
            record.sha = response.headers.get("x-promptdock-sha")
            raw = await response.read()
        if body.get("stream"):
            events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
            if not events or events[-1] != "[DONE]":
                record.error = "the stream did not end with [DONE]"
            record.text = "".join(
                json.loads(event)["choices"][0]["delta"].get("content") or ""
                for event in events[:-1]
            )
        elif record.status == 200:
            record.text = json.loads(raw)["choices"][0]["message"]["content"]
        else:
            record.error = raw.decode("utf-8", "replace")[:300]
    except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.finished = time.monotonic()
    return record


async def _drive(
    proxy_url: str,
    proxy_pid: int,
    repo: GitRepo,
    requests: int,
    concurrency: int,
    old_sha: str,
) -> Run:
    run = Run()
    rng = random.Random(7)  # noqa: S311 - a repeatable request mix, not a secret
    plan = rng.choices(range(len(_MIX)), weights=_WEIGHTS, k=requests)
    url = f"{proxy_url}/v1/chat/completions"
    next_index = 0
    done = 0
    push_at = requests // 3  # early enough that many requests start after the answer
    push_task: asyncio.Task[None] | None = None

    async def push() -> None:
        new_sha = await asyncio.to_thread(repo.commit, _prompts("B"), "B")
        headers, body = make_push_delivery(
            WEBHOOK_SECRET, WORKSPACE, REPO, "main", new_sha, old_sha
        )
        # A session of its own: the load's connection pool is always full.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as hook:
            run.push_sent = time.monotonic()
            async with hook.post(
                f"{proxy_url}/webhooks/bitbucket", data=body, headers=headers
            ) as r:
                run.push_status = r.status
                await r.read()
            run.push_answered = time.monotonic()

    async def worker() -> None:
        nonlocal next_index, done, push_task
        while next_index < requests:
            index = next_index
            next_index += 1
            kind, body, _ = _MIX[plan[index]]
            run.records.append(await _one(session, url, kind, body))
            done += 1
            if done == min(WARM_UP, requests):
                run.rss_warm = rss_mib(proxy_pid)
            if done == push_at and push_task is None:
                push_task = asyncio.create_task(push())

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if push_task is not None:
            await push_task
    run.rss_end = rss_mib(proxy_pid)
    return run


def _check(run: Run, shas: dict[str, str]) -> dict[str, Any]:
    """Failures and mismatches, by the rules in the module notes."""
    failures: list[str] = []
    mismatches: list[str] = []
    expected_text = {kind: marker for kind, _, marker in _MIX}
    by_commit = {"A": 0, "B": 0}
    for record in run.records:
        if record.error or record.status != 200:
            failures.append(f"{record.kind}: {record.status} {record.error}")
            continue
        label = shas.get(record.sha or "")
        if label is None:
            mismatches.append(f"{record.kind}: unknown sha {record.sha}")
            continue
        by_commit[label] += 1
        if record.text != f"echo: {expected_text[record.kind]} rev={label}":
            mismatches.append(f"{record.kind}: sha of {label} but text {record.text!r}")
        if record.finished < run.push_sent and label != "A":
            mismatches.append(f"{record.kind}: the new commit before the push")
        if run.push_answered and record.started > run.push_answered and label != "B":
            mismatches.append(f"{record.kind}: the old commit after the webhook was answered")
    latencies = sorted(r.finished - r.started for r in run.records)

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "failures": len(failures),
        "failure_examples": failures[:5],
        "mismatches": len(mismatches),
        "mismatch_examples": mismatches[:5],
        "served_by_commit": by_commit,
        "latency_ms": {"p50": quantile(0.50), "p90": quantile(0.90), "p99": quantile(0.99)},
    }


def run_load(
    requests: int = 50_000, concurrency: int = 64, deadline: float = 1800.0
) -> dict[str, Any]:
    """Run the whole test and return its figures (see the module notes)."""
    with tempfile.TemporaryDirectory() as scratch, BitbucketEmulator() as emulator:
        folder = Path(scratch)
        repo = GitRepo(folder / "repo")
        old_sha = repo.commit(_prompts("A"), "A")
        emulator.add_repository(WORKSPACE, REPO, repo)
        emulator.add_token(TOKEN, repos=[(WORKSPACE, REPO)])
        port_file = folder / "upstream.port"
        upstream = subprocess.Popen(
            [sys.executable, __file__, "--upstream", str(port_file)], cwd=ROOT
        )
        proxy: subprocess.Popen[bytes] | None = None
        try:
            _wait_for(lambda: port_file.exists() and port_file.read_text(), "the upstream start")
            config = _config(folder, int(port_file.read_text()), emulator)
            port = _free_port()
            command = [str(Path(sys.executable).parent / "promptdock"), "serve"]
            command += ["--config", str(config), "--port", str(port), "--log-level", "warning"]
            proxy = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL)
            proxy_url = f"http://127.0.0.1:{port}"
            _wait_for(lambda: _answers(f"{proxy_url}/health/liveliness"), "the proxy start")
            started = time.monotonic()
            run = asyncio.run(
                asyncio.wait_for(
                    _drive(proxy_url, proxy.pid, repo, requests, concurrency, old_sha), deadline
                )
            )
            elapsed = time.monotonic() - started
            new_sha = repo.resolve("main")
        finally:
            if proxy is not None:
                _stop(proxy)
            _stop(upstream)
        figures = _check(run, {old_sha: "A", new_sha: "B"})
        figures.update(
            requests=len(run.records),
            concurrency=concurrency,
            seconds=round(elapsed, 2),
            requests_per_second=round(len(run.records) / elapsed, 1),
            webhook_status=run.push_status,
            webhook_answered_ms=round((run.push_answered - run.push_sent) * 1000, 1),
            rss_mib={
                "after_warm_up": round(run.rss_warm, 1),
                "end": round(run.rss_end, 1),
                "growth": round(run.rss_end - run.rss_warm, 1),
            },
            bitbucket_requests=emulator.request_count(),
            mix={kind: weight for (kind, _, _), weight in zip(_MIX, _WEIGHTS, strict=True)},
        )
        figures["latency_ms"] = {k: round(v, 1) for k, v in figures["latency_ms"].items()}
        return figures


def _answers(url: str) -> bool:
    import urllib.request

    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
        return bool(response.status == 200)
    return False


def main() -> None:
    """Parse the command line and run (or serve the upstream, for the child process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds for the run")
    parser.add_argument("--max-growth-mib", type=float, default=25.0)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
        return
    figures = run_load(args.requests, args.concurrency, args.deadline)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    bad = figures["failures"] or figures["mismatches"]
    if bad or figures["rss_mib"]["growth"] > args.max_growth_mib:
        sys.exit(1)


if __name__ == "__main__":
    main()
