"""The parts of the proxy benchmark (:mod:`bench.proxies`) that run in their own processes.

- the upstream: a raw asyncio HTTP/1.1 server answering a canned chat completion on
  127.0.0.1, so its own cost stays small and steady (``--upstream PORT_FILE``);
- the floor: the least a prompt proxy can do, a raw ASGI app under uvicorn that parses the
  body, renders a cached template and forwards with a pooled aiohttp session
  (``--floor URL PORT``);
- process helpers (spawn, stop, resident memory, CPU time) and :func:`thread_hop`, which
  times preparing a request inline against through ``asyncio.to_thread``.

``nox -s bench`` (``python -m bench --only proxy``) measures with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp

HELLO = """---
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

PROXY_BODY = {
    "model": "my-dotprompt-model",
    "messages": [{"role": "user", "content": "IGNORED"}],
    "prompt_variables": {"user_message": "What is the capital of France?"},
}
DIRECT_BODY = {
    "model": "gpt-4",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.7,
    "max_tokens": 150,
}
SYSTEM_MESSAGE = {"role": "system", "content": "You are a helpful assistant."}
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The capital of France is Paris."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
}

# -- the upstream: raw asyncio HTTP/1.1, keep-alive, one canned answer ---------------------


class _Upstream(asyncio.Protocol):
    """Answers every complete request on the connection with the canned completion."""

    answer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances, but they write the same.
        self.transport = cast(asyncio.Transport, transport)
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while True:
            end = self.pending.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.pending[:end].lower() + b"\r\n"
            at = head.find(b"content-length:")
            length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
            total = end + 4 + length
            if len(self.pending) < total:
                return
            self.pending = self.pending[total:]
            self.transport.write(self.answer)


def run_upstream(port_file: str) -> None:
    """Serve the upstream forever, writing the chosen port to ``port_file``."""
    body = json.dumps(COMPLETION).encode()
    _Upstream.answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        Path(port_file).write_text(str(port))
        await server.serve_forever()

    _run(serve())


def _run(coroutine: Awaitable[Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    return uvloop.run(coroutine)  # type: ignore[arg-type]


# -- the floor: the least a prompt proxy can do -------------------------------------------


def floor_app(upstream_url: str) -> Callable[..., Awaitable[None]]:
    """A raw ASGI app doing only the essential work: parse the body, render the cached
    template, POST upstream with a pooled aiohttp session, return the upstream's bytes."""
    import jinja2

    template = jinja2.Environment(autoescape=False).from_string("{{ user_message }}")
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-upstream"}
    pool: list[aiohttp.ClientSession] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    pool.append(aiohttp.ClientSession())
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await pool[0].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/health/liveliness":
            answer = b'"ok"'
        else:
            body = b""
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            data = json.loads(body)
            text = template.render(data["prompt_variables"])
            payload = {
                **DIRECT_BODY,
                "messages": [SYSTEM_MESSAGE, {"role": "user", "content": text}],
            }
            async with pool[0].post(
                upstream_url, data=json.dumps(payload).encode(), headers=headers
            ) as response:
                answer = await response.read()
        await send_answer(send, answer)

    return app


async def send_answer(send: Callable[[dict[str, Any]], Awaitable[None]], answer: bytes) -> None:
    """Answer 200 with the JSON bytes ``answer`` on an ASGI ``send``."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(answer)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer})


def run_floor(upstream_url: str, port: int) -> None:
    """Serve :func:`floor_app` with uvicorn's own httptools protocol, the issue's reference
    stack (``promptdock serve`` runs promptdock's leaner protocol under the same uvicorn)."""
    import uvicorn

    uvicorn.run(
        floor_app(upstream_url),
        port=port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        ws="none",
    )


# -- processes -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_upstream(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The upstream in its own process; returns it and its port."""
    port_file = folder / "upstream.port"
    process = subprocess.Popen([sys.executable, __file__, "--upstream", str(port_file)])
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("the upstream did not start")
        time.sleep(0.01)
    return process, int(port_file.read_text())


def write_config(folder: Path, upstream_port: int, master_key: str) -> Path:
    """The seed's prompt and a config serving it from the upstream."""
    (folder / "prompts").mkdir(exist_ok=True)
    (folder / "prompts" / "hello.prompt").write_text(HELLO)
    config = folder / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: my-dotprompt-model\n"
        "    litellm_params:\n"
        "      model: dotprompt/gpt-4\n"
        "      prompt_id: hello\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-bench-upstream\n"
        "litellm_settings:\n"
        "  global_prompt_directory: ./prompts\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    return config


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait (bounded)."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


# -- preparing a request: inline or in a worker thread ---------------------------------


def thread_hop(repeats: int) -> dict[str, float]:
    """Microseconds to prepare the seed request inline and through ``asyncio.to_thread``."""
    from promptdock import PromptDock

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "hello.prompt").write_text(HELLO)
        dock = PromptDock(prompt_directory=folder)
        arguments: dict[str, Any] = {
            "prompt_id": "hello",
            "prompt_variables": {"user_message": "What is the capital of France?"},
        }

        def prepare() -> object:
            return dock.prepare_request("dotprompt/gpt-4", None, **arguments)

        async def timed(call: Callable[[], Awaitable[object]]) -> float:
            for _ in range(200):
                await call()
            samples = []
            for _ in range(7):
                started = time.perf_counter()
                for _ in range(repeats):
                    await call()
                samples.append((time.perf_counter() - started) / repeats)
            return statistics.median(samples) * 1e6

        async def inline() -> object:
            return prepare()

        async def threaded() -> object:
            return await asyncio.to_thread(prepare)

        async def both() -> dict[str, float]:
            return {"inline_us": await timed(inline), "to_thread_us": await timed(threaded)}

        result: dict[str, float] = _run(both())
        return result


def main() -> None:
    """Run one of the benchmark's processes: ``--upstream PORT_FILE`` or ``--floor URL PORT``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--upstream", metavar="PORT_FILE", help="serve the canned upstream")
    where.add_argument("--floor", nargs=2, metavar=("URL", "PORT"), help="serve the floor app")
    args = parser.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
    else:
        run_floor(args.floor[0], int(args.floor[1]))


if __name__ == "__main__":
    main()
