"""What ``promptdock serve`` costs per request, over calling the upstream directly.

Three processes on 127.0.0.1: a minimal OpenAI-compatible upstream (a raw asyncio HTTP server
answering a canned chat completion, so its own cost stays small and steady), the proxy
(``promptdock serve``, one worker, the seed's prompt), and this process as an async load
generator (aiohttp) sending a fixed number of requests at a fixed concurrency.

Reported, each as a ratio too:

- added latency per request (p50, p99) at concurrency 1 and 32: proxy minus direct;
- throughput at concurrency 16, and at 64 the error count and p99;
- the proxy's own CPU time per request (from ``/proc``);
- start-up time until ``/health/liveliness`` answers, and resident memory after the load;
- on this process: preparing a request inline versus through ``asyncio.to_thread``.

Run: ``python bench/bench_proxy.py`` (``--quick`` for a short run, ``--json PATH`` to keep
the figures). The machines here are shared and noisy: compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
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

# Targets from the proxy issue (one worker, this kind of machine).
TARGET_P50_MS = 1.0
TARGET_P99_MS = 2.0
TARGET_P99_AT_64_MS = 100.0
TARGET_START_S = 1.0
TARGET_RSS_MIB = 80.0
TARGET_CPU_US = 200.0  # the proxy's own work, on top of the floor's
TARGET_RPS = 30 * 64.0  # 30x LiteLLM's ~64 req/s at concurrency 16 (the figure)

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

    return app


def run_floor(upstream_url: str, port: int) -> None:
    """Serve :func:`floor_app` with uvicorn, configured as ``promptdock serve`` is."""
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


Started = tuple[subprocess.Popen[bytes], int, float]


def start_proxy(folder: Path, config: Path) -> Started:
    """``promptdock serve``; returns the process, its port and seconds until it was alive."""
    port = _free_port()
    command = [sys.executable, "-m", "promptdock.cli", "serve", "--config", str(config)]
    # The access log stays on (to /dev/null): it is part of every request's work.
    return _start(folder, [*command, "--port", str(port)], port)


def start_floor(folder: Path, upstream_port: int) -> Started:
    """The floor app under uvicorn; returns the process, its port and start-up seconds."""
    port = _free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    return _start(folder, [sys.executable, __file__, "--floor", upstream, str(port)], port)


def _start(folder: Path, command: list[str], port: int) -> Started:
    import urllib.request

    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = started + 30
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:4]} exited")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/health/liveliness", timeout=1
            ) as answer:
                if answer.status == 200:
                    return process, port, time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"{command[:4]} did not start")


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


# -- load ----------------------------------------------------------------------------------


class Load:
    """The latencies (seconds) and errors of a fixed number of requests."""

    def __init__(self, latencies: list[float], errors: int, elapsed: float) -> None:
        self.latencies = sorted(latencies)
        self.errors = errors
        self.elapsed = elapsed

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return self.latencies[min(len(self.latencies) - 1, int(q * len(self.latencies)))]

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed


async def load(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    count: int,
    concurrency: int,
) -> Load:
    """Send ``count`` requests, ``concurrency`` at a time."""
    data = json.dumps(body).encode()
    remaining = count
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                async with session.post(url, data=data, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Load(latencies, errors, time.perf_counter() - started)


class Target:
    """Something to load: the upstream itself, the floor app or promptdock."""

    def __init__(
        self, name: str, url: str, body: dict[str, Any], key: str, pid: int | None = None
    ) -> None:
        self.name = name
        self.url = url
        self.body = body
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        self.pid = pid


async def measure(targets: list[Target], scale: float) -> dict[str, dict[str, Any]]:
    """Every figure for every target; each scenario runs the targets one after the other."""

    def n(count: int) -> int:
        return max(50, int(count * scale))

    results: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def run(target: Target, count: int, concurrency: int) -> Load:
            return await load(session, target.url, target.body, target.headers, count, concurrency)

        for target in targets:
            await run(target, n(300), 8)  # warm connections, caches and the prompt
        for concurrency, count in ((1, 2000), (32, 4000)):
            for target in targets:
                measured = await run(target, n(count), concurrency)
                results[target.name][f"c{concurrency}"] = {
                    "p50_ms": measured.quantile(0.5) * 1e3,
                    "p99_ms": measured.quantile(0.99) * 1e3,
                    "errors": measured.errors,
                }
        for target in targets:
            cpu_before = cpu_seconds(target.pid) if target.pid else 0.0
            measured = await run(target, n(4000), 16)
            row: dict[str, Any] = {"rps": measured.rps, "errors": measured.errors}
            if target.pid:
                used = cpu_seconds(target.pid) - cpu_before
                row["cpu_us_per_request"] = used / max(1, len(measured.latencies)) * 1e6
            results[target.name]["c16"] = row
        for target in targets:
            measured = await run(target, n(4000), 64)
            results[target.name]["c64"] = {
                "rps": measured.rps,
                "p99_ms": measured.quantile(0.99) * 1e3,
                "errors": measured.errors,
            }
            if target.pid:
                results[target.name]["rss_after_load_mib"] = rss_mib(target.pid)
    return results


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


# -- report --------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    """The figures as a table: added latency is over calling the upstream directly."""
    direct, floor, proxy = results["direct"], results["floor"], results["promptdock"]
    hop = results["prepare"]

    def row(label: str, values: list[str]) -> str:
        return f"{label:34}" + "".join(f"{v:>12}" for v in values)

    def ratio(ours: float, theirs: float) -> str:
        return f"x{ours / theirs:.2f}" if theirs > 0 else "-"

    lines = [
        "promptdock serve (one worker) on 127.0.0.1, against calling the upstream directly and",
        "against the floor (raw ASGI + aiohttp: parse, render a cached template, forward)",
        "",
        row("", ["direct", "floor", "promptdock", "pd / floor", "target"]),
    ]
    for concurrency in (1, 32):
        key = f"c{concurrency}"
        for q, target in (("p50", TARGET_P50_MS), ("p99", TARGET_P99_MS)):
            base = direct[key][f"{q}_ms"]
            added_floor = floor[key][f"{q}_ms"] - base
            added = proxy[key][f"{q}_ms"] - base
            lines.append(
                row(
                    f"added {q} ms at concurrency {concurrency}",
                    [
                        f"({base:.3f})",
                        f"{added_floor:.3f}",
                        f"{added:.3f}",
                        ratio(added, added_floor),
                        f"<{target:g}" if concurrency == 1 else "",
                    ],
                )
            )
    floor_cpu = floor["c16"]["cpu_us_per_request"]
    proxy_cpu = proxy["c16"]["cpu_us_per_request"]
    lines += [
        row(
            "throughput at 16 (req/s)",
            [
                f"{direct['c16']['rps']:.0f}",
                f"{floor['c16']['rps']:.0f}",
                f"{proxy['c16']['rps']:.0f}",
                ratio(proxy["c16"]["rps"], floor["c16"]["rps"]),
                f">{TARGET_RPS:g}",
            ],
        ),
        row(
            "server CPU per request (us)",
            ["", f"{floor_cpu:.0f}", f"{proxy_cpu:.0f}", ratio(proxy_cpu, floor_cpu), ""],
        ),
        row(
            "p99 ms at 64 (errors)",
            [
                f"{direct['c64']['p99_ms']:.1f} ({direct['c64']['errors']})",
                f"{floor['c64']['p99_ms']:.1f} ({floor['c64']['errors']})",
                f"{proxy['c64']['p99_ms']:.1f} ({proxy['c64']['errors']})",
                "",
                f"<{TARGET_P99_AT_64_MS:g} (0)",
            ],
        ),
        row(
            "start-up to liveliness (s)",
            [
                "",
                f"{results['floor_startup_s']:.3f}",
                f"{results['startup_s']:.3f}",
                ratio(results["startup_s"], results["floor_startup_s"]),
                f"<{TARGET_START_S:g}",
            ],
        ),
        row(
            "resident memory after load (MiB)",
            [
                "",
                f"{floor['rss_after_load_mib']:.1f}",
                f"{proxy['rss_after_load_mib']:.1f}",
                ratio(proxy["rss_after_load_mib"], floor["rss_after_load_mib"]),
                f"<{TARGET_RSS_MIB:g}",
            ],
        ),
        "",
        f"promptdock's own CPU per request over the floor: {proxy_cpu - floor_cpu:.0f} us "
        f"(target <{TARGET_CPU_US:g})",
        f"preparing the seed request on the event loop: {hop['inline_us']:.1f} us; through "
        f"asyncio.to_thread: {hop['to_thread_us']:.1f} us "
        f"(x{hop['to_thread_us'] / hop['inline_us']:.1f})",
    ]
    errors = sum(r[k]["errors"] for r in (direct, floor, proxy) for k in ("c1", "c32", "c16"))
    lines.append(f"errors at concurrency 1, 32 and 16: {errors}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--upstream", metavar="PORT_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs=2, metavar=("URL", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
        return
    if args.floor:
        run_floor(args.floor[0], int(args.floor[1]))
        return
    scale = 0.1 if args.quick else 1.0
    with tempfile.TemporaryDirectory(prefix="promptdock-bench-") as name:
        folder = Path(name)
        upstream, upstream_port = start_upstream(folder)
        master_key = "sk-" + secrets.token_urlsafe(24)
        config = write_config(folder, upstream_port, master_key)
        servers: list[subprocess.Popen[bytes]] = []
        try:
            startups: dict[str, list[float]] = {"floor": [], "promptdock": []}
            for _ in range(3):
                process, _, seconds = start_floor(folder, upstream_port)
                stop(process)
                startups["floor"].append(seconds)
                process, _, seconds = start_proxy(folder, config)
                stop(process)
                startups["promptdock"].append(seconds)
            floor, floor_port, _ = start_floor(folder, upstream_port)
            servers.append(floor)
            proxy, proxy_port, _ = start_proxy(folder, config)
            servers.append(proxy)
            base = "http://127.0.0.1:{}/v1/chat/completions"
            targets = [
                Target("direct", base.format(upstream_port), DIRECT_BODY, "sk-bench-upstream"),
                Target("floor", base.format(floor_port), PROXY_BODY, "sk-bench", floor.pid),
                Target("promptdock", base.format(proxy_port), PROXY_BODY, master_key, proxy.pid),
            ]
            results: dict[str, Any] = _run(measure(targets, scale))
        finally:
            for server in (*servers, upstream):
                stop(server)
    results["startup_s"] = statistics.median(startups["promptdock"])
    results["floor_startup_s"] = statistics.median(startups["floor"])
    results["prepare"] = thread_hop(max(100, int(2000 * scale)))
    results["python"] = sys.version.split()[0]
    results["cpus"] = os.cpu_count()
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
