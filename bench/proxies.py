"""Proxy throughput, latency, start-up and memory: promptdock, LiteLLM, the floor and the
upstream alone, on 127.0.0.1.

Processes: the upstream (``bench_proxy.py``'s raw asyncio server answering a canned
completion), ``promptdock serve`` and ``litellm --config`` on the same config file and prompt
folder, the floor app of ``bench_proxy.py`` (parse, render a cached template, forward with
aiohttp, under uvicorn), and this process as the load generator (:mod:`bench.loadgen`). Both
proxies run one worker with their default logging (access lines go to a discarded stdout).

Each round runs every client concurrency against every target in turn (interleaved), with
a fixed number of requests; throughput is the median over rounds, latencies are pooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
import signal
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import bench_proxy as base
from bench import loadgen
from bench.proxy_work import measure_proxy_work
from bench.settings import Settings
from bench.stats import added_latency, quantile, ratio, summarize
from bench.workers import Interpreter, ProbeError

__all__ = ["CHAT", "METHOD", "Server", "Target", "measure_proxy", "start_server"]

CHAT = "/v1/chat/completions"
"""The route every target is loaded on."""

DIRECT = "upstream alone"
"""The target that calls the upstream directly: the baseline of the added latency."""

METHOD = (
    "Fixed request counts per round and concurrency: {requests} against the upstream, the "
    "floor and promptdock, {litellm} against LiteLLM (at least one per connection); "
    "{rounds} round(s), each split in {batches} batches per concurrency with the servers "
    "taking turns batch by batch (the order alternating), so the machine's moments of noise "
    "fall on all of them alike; the servers not being measured are paused (SIGSTOP), so "
    "their timers and background jobs take no CPU from the one that is, and this process's "
    "garbage collector is off during each batch. Load: a lean "
    "raw-asyncio HTTP/1.1 client (bench/loadgen.py: "
    "one request in flight per connection, tens of µs of CPU per request) in this process, "
    "keeping its keep-alive connections open between batches as a pooled client does (and "
    "opening any the server closed meanwhile before the batch, untimed, then making one "
    "untimed request on each, since a server's first answer after its pause pays for caches "
    "the other servers made cold); every "
    "server is first warmed at the highest concurrency (prompt loaded, upstream connections "
    "pooled). Throughput: median over batches; p50/p99: all requests pooled; added latency: "
    "a proxy's p50 (p99) minus the upstream alone's p50 (p99) at the same concurrency. "
    "Start-up: process spawn until /health/liveliness answers 200, polled every 10 ms, "
    "{startups} cold start(s) each, median. Memory: VmRSS of the server process after the "
    "load."
)
"""How the proxy figures were measured, for the report."""


@dataclass
class Server:
    """A server process under test and how long it took to come up."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    startup_s: float


@dataclass
class Target:
    """Something to load: its port and request, and the server process if it is ours."""

    name: str
    port: int
    body: dict[str, Any]
    key: str
    pid: int | None = None
    requests: int = 0
    latencies: dict[int, list[float]] = field(default_factory=dict)
    rps: dict[int, list[float]] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    cpu_s: dict[int, float] = field(default_factory=dict)
    connections: list[Any] = field(default_factory=list)  # the load's keep-alive connections

    @property
    def request(self) -> bytes:
        """The bytes of one chat completion request to this target."""
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"}
        body = json.dumps(self.body).encode()
        return loadgen.http_request("127.0.0.1", self.port, CHAT, body, headers)


def start_server(
    name: str,
    command: list[str],
    cwd: Path,
    port: int,
    env: dict[str, str],
    timeout: float,
    stderr: Path | None = None,
) -> Server:
    """Spawn ``command`` and poll ``/health/liveliness`` until it answers 200.

    :param stderr: where the server's stderr goes (default: discarded, as its stdout).
    """
    started = time.perf_counter()
    with stderr.open("wb") if stderr else contextlib.nullcontext() as sink:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink if sink is not None else subprocess.DEVNULL,
            start_new_session=True,  # its own process group: paused and resumed as one
        )
    deadline = started + timeout
    url = f"http://127.0.0.1:{port}/health/liveliness"
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise ProbeError(f"{name} exited with code {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return Server(name, process, port, time.perf_counter() - started)
        except OSError:
            time.sleep(0.01)
    base.stop(process)
    raise ProbeError(f"{name} did not answer {url} within {timeout:.0f} s")


def _promptdock(
    folder: Path, config: Path, timeout: float, importtime: Path | None = None
) -> Server:
    ours = Interpreter.promptdock()
    port = base._free_port()
    command = [ours.python, *(["-X", "importtime"] if importtime else [])]
    command += ["-m", "promptdock.cli", "serve", "--config", str(config), "--port", str(port)]
    return start_server("promptdock", command, folder, port, ours.environ(), timeout, importtime)


def _startup_imports(folder: Path, config: Path, timeout: float) -> dict[str, float]:
    """The top-level imports of ``promptdock serve`` that take longest, in milliseconds."""
    log = folder / "serve-importtime.txt"
    server = _promptdock(folder, config, timeout, importtime=log)
    base.stop(server.process)
    found: dict[str, float] = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            name = parts[2].strip()
            if parts[1].strip().isdigit():
                found[name] = found.get(name, 0.0) + int(parts[1]) / 1e3
    top = sorted(found.items(), key=lambda item: item[1], reverse=True)[:10]
    return dict(top)


def _litellm(folder: Path, config: Path, interpreter: Interpreter, timeout: float) -> Server:
    port = base._free_port()
    script = str(Path(interpreter.python).with_name("litellm"))
    command = [script, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    return start_server("litellm", command, folder, port, interpreter.environ(), timeout)


def _floor(folder: Path, upstream_port: int, timeout: float) -> Server:
    ours = Interpreter.promptdock()
    port = base._free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    command = [ours.python, str(Path(base.__file__)), "--floor", upstream, str(port)]
    return start_server("floor", command, folder, port, ours.environ(), timeout)


BATCHES = 5
"""Batches per round and concurrency: the servers take turns batch by batch, so a moment of
noise on the shared machine falls on all of them alike rather than on one server's whole
share (which decides a p99 at concurrency 1)."""


async def _measure(settings: Settings, targets: list[Target]) -> None:
    top = max(settings.proxy_levels)
    try:
        for target in targets:
            # Warm the prompt, the caches and the pools at the highest concurrency, as a
            # proxy that has been serving is: the first burst of 64 requests would otherwise
            # open dozens of connections inside the timed load. The load keeps its
            # connections open between batches, as a client with a connection pool does.
            await loadgen.run(
                "127.0.0.1",
                target.port,
                target.request,
                max(2 * top, target.requests // 10),
                top,
                60,
                keep=target.connections,
            )
        for round_number in range(settings.proxy_rounds):
            for level in settings.proxy_levels:
                for batch in range(BATCHES):
                    # Alternate the order, so no server always runs first.
                    flip = (round_number + batch) % 2
                    for target in targets[::-1] if flip else targets:
                        _pause_all_but(targets, target)
                        # Let a resumed server run its overdue timers (closing keep-alive
                        # connections idle too long) before the load reuses them.
                        await asyncio.sleep(0.05)
                        await _batch(target, level)
    finally:
        _pause_all_but(targets, None)
        for target in targets:
            loadgen.close_all(target.connections)


def _pause_all_but(targets: list[Target], running: Target | None) -> None:
    """Stop (SIGSTOP) every server but ``running`` and continue (SIGCONT) that one; with
    ``None``, continue them all. A server idling between its batches still runs timers and
    background jobs (LiteLLM's proxy has several), which would take CPU from the one being
    measured on a 2-core machine."""
    for target in targets:
        if target.pid is None:
            continue  # the upstream: every target needs it
        signal_number = signal.SIGCONT if running in (None, target) else signal.SIGSTOP
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(target.pid), signal_number)


async def _batch(target: Target, level: int) -> None:
    count = max(level, target.requests // BATCHES)
    cpu = base.cpu_seconds(target.pid) if target.pid else 0.0
    await loadgen.open_connections("127.0.0.1", target.port, target.connections, level)
    # One untimed request per connection: the first answer after a pause pays for the caches
    # the other servers' batches made cold, which only this benchmark's pausing causes.
    await loadgen.run(
        "127.0.0.1", target.port, target.request, level, level, 60, keep=target.connections
    )
    # This process holds every latency measured so far: a collection of its heap in the
    # middle of a batch would be counted as the server's latency (timeit turns it off too).
    gc.collect()
    gc.disable()
    try:
        result = await loadgen.run(
            "127.0.0.1", target.port, target.request, count, level, 120, keep=target.connections
        )
    finally:
        gc.enable()
    if target.pid:
        used = base.cpu_seconds(target.pid) - cpu
        target.cpu_s[level] = target.cpu_s.get(level, 0.0) + used
    target.latencies.setdefault(level, []).extend(result.latencies)
    target.rps.setdefault(level, []).append(len(result.latencies) / result.elapsed)
    target.errors[level] = target.errors.get(level, 0) + result.errors


def _figures(target: Target) -> dict[str, Any]:
    levels: dict[str, Any] = {}
    for level, latencies in target.latencies.items():
        ms = [s * 1e3 for s in latencies]
        row: dict[str, Any] = {
            "rps": statistics.median(target.rps[level]),
            "rps_rounds": target.rps[level],
            "latency_ms": summarize(ms),
            "percentiles_ms": [quantile(ms, q / 100) for q in range(101)],
            "errors": target.errors[level],
        }
        if level in target.cpu_s and latencies:
            row["server_cpu_us_per_request"] = target.cpu_s[level] / len(latencies) * 1e6
        levels[str(level)] = row
    return levels


def measure_proxy(settings: Settings, work: Path, litellm: Interpreter | None) -> dict[str, Any]:
    """Every proxy figure; LiteLLM's only when ``litellm`` is given."""
    folder = work / "proxy"
    folder.mkdir(parents=True, exist_ok=True)
    upstream, upstream_port = base.start_upstream(folder)
    key = "sk-bench-" + secrets.token_urlsafe(16)  # LiteLLM refuses the well-known sk-1234
    config = base.write_config(folder, upstream_port, key)
    servers: list[Server] = []
    startups: dict[str, list[float]] = {}
    idle_rss: dict[str, float] = {}
    try:
        for run in range(settings.startup_runs):
            starters: list[Callable[[], Server]] = [
                lambda: _floor(folder, upstream_port, settings.timeout),
                lambda: _promptdock(folder, config, settings.timeout),
            ]
            if litellm is not None:
                starters.append(lambda: _litellm(folder, config, litellm, settings.timeout))
            for start in starters:
                server = start()
                startups.setdefault(server.name, []).append(server.startup_s)
                if run == settings.startup_runs - 1:
                    servers.append(server)  # the last start serves the load
                    idle_rss[server.name] = base.rss_mib(server.process.pid)
                else:
                    base.stop(server.process)
        startup_imports = _startup_imports(folder, config, settings.timeout)
        by_name = {s.name: s for s in servers}
        targets = [
            Target(
                DIRECT,
                upstream_port,
                base.DIRECT_BODY,
                "sk-bench-upstream",
                requests=settings.proxy_requests,
            )
        ]
        for name in ("floor", "promptdock", "litellm"):
            running = by_name.get(name)
            if running is None:
                continue
            slow = name == "litellm"
            count = settings.litellm_proxy_requests if slow else settings.proxy_requests
            pid = running.process.pid
            targets.append(Target(name, running.port, base.PROXY_BODY, key, pid, count))
        base._run(_measure(settings, targets))
        after_rss = {t.name: base.rss_mib(t.pid) for t in targets if t.pid}
    finally:
        for server in servers:
            base.stop(server.process)
        base.stop(upstream)
    results: dict[str, Any] = {
        "method": METHOD.format(
            requests=settings.proxy_requests,
            litellm=settings.litellm_proxy_requests,
            rounds=settings.proxy_rounds,
            batches=BATCHES,
            startups=settings.startup_runs,
        ),
        "levels": list(settings.proxy_levels),
        "targets": {t.name: _figures(t) for t in targets},
        "startup_s": {name: statistics.median(v) for name, v in startups.items()},
        "startup_runs_s": startups,
        "startup_imports_ms": startup_imports,
        "rss_idle_mib": idle_rss,
        "rss_after_load_mib": after_rss,
    }
    results["prepare_us"] = base.thread_hop(max(100, settings.proxy_requests // 2))
    results["own_work_us"] = measure_proxy_work(max(200, settings.proxy_requests))
    results["ratios"] = _ratios(results)
    results["added_ms"] = added_latency(results["targets"], DIRECT)
    return results


def _ratios(results: dict[str, Any]) -> dict[str, float]:
    targets = results["targets"]
    ours, theirs = targets.get("promptdock", {}), targets.get("litellm", {})
    found: dict[str, float] = {}
    for level in results["levels"]:
        key = str(level)
        if key in ours and key in theirs:
            found[f"rps promptdock/litellm at {level}"] = ratio(
                ours[key]["rps"], theirs[key]["rps"]
            )
            found[f"p99 litellm/promptdock at {level}"] = ratio(
                theirs[key]["latency_ms"]["p99"], ours[key]["latency_ms"]["p99"]
            )
    return found
