"""The proxy app's own work per request, without sockets: what the issue budgets at ~200 µs.

Both apps get the seed request through fake ASGI ``receive``/``send`` callables, in this
process, on one event loop, in alternating batches:

- promptdock's :class:`~promptdock.proxy.app.ProxyApp` on the bench config, with its access
  log on (to a discarded stream, as ``promptdock serve`` writes it) and the upstream replaced
  by a dispatcher that decodes the canned answer as the real one does (so routing, auth, the
  prompt load and render, the upstream body, the answer's checks and provenance all run);
- the floor's work: parse the body, render a cached template, encode the upstream body,
  answer the canned bytes.

The HTTP server and client layers are measured separately (server CPU per request under load).
"""

from __future__ import annotations

import io
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import bench_proxy as base

__all__ = ["measure_proxy_work"]

ROUNDS = 7
"""Alternating batches per app; the medians of their per-request times are reported."""

_KEY = "sk-bench-own-work-0123456789"


def measure_proxy_work(repeats: int) -> dict[str, float]:
    """Median µs per request (wall and CPU) of ProxyApp and of the floor's work.

    :param repeats: requests per batch.
    """
    with tempfile.TemporaryDirectory() as folder:
        figures: dict[str, float] = base._run(_measure(Path(folder), repeats))
        return figures


async def _measure(folder: Path, repeats: int) -> dict[str, float]:
    proxy = _proxy_app(folder)
    floor = _floor_work()
    body = json.dumps(base.PROXY_BODY).encode()
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {_KEY}".encode()),
        (b"content-length", b"%d" % len(body)),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4000),
        "scheme": "http",
        "http_version": "1.1",
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def batch(app: Callable[..., Awaitable[None]]) -> tuple[float, float]:
        statuses.clear()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(repeats):
            await app(dict(scope), receive, send)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        if set(statuses) != {200}:
            raise RuntimeError(f"the in-process proxy answered {sorted(set(statuses))}, not 200")
        return wall / repeats * 1e6, cpu / repeats * 1e6

    for app in (proxy, floor):  # warm: prompt loaded and compiled, caches filled
        await batch(app)
    samples: dict[str, list[tuple[float, float]]] = {"promptdock": [], "floor": []}
    for round_number in range(ROUNDS):
        order = [("promptdock", proxy), ("floor", floor)]
        for name, app in order[:: 1 if round_number % 2 else -1]:
            samples[name].append(await batch(app))
    return {
        f"{name}_{kind}_us": statistics.median(sample[index] for sample in runs)
        for name, runs in samples.items()
        for index, kind in ((0, "wall"), (1, "cpu"))
    }


def _proxy_app(folder: Path) -> Callable[..., Awaitable[None]]:
    import promptdock
    from promptdock.config import load_config
    from promptdock.dispatch._openai_wire import Call
    from promptdock.proxy.access_log import ACCESS_LOGGER, AccessLineHandler
    from promptdock.proxy.app import ProxyApp

    raw = json.dumps(base.COMPLETION).encode()

    class CannedUpstream:
        """Answers every proxied request with the canned completion, decoded as on the wire."""

        @promptdock.hookimpl(tryfirst=True)
        def adispatch(self, request: promptdock.CompletionRequest) -> Awaitable[Any]:
            async def answer() -> Any:
                return Call.build(request).completion(raw, 200)

            return answer()

    config = base.write_config(folder, 9, _KEY)  # port 9: never called, the hook answers
    handler = AccessLineHandler(io.StringIO())
    ACCESS_LOGGER.handlers[:] = [handler]
    ACCESS_LOGGER.setLevel(logging.INFO)
    ACCESS_LOGGER.propagate = False
    previous = os.getcwd()
    os.chdir(folder)  # the config's prompt folder is relative to it
    try:
        app = ProxyApp(load_config(str(config)))
    finally:
        os.chdir(previous)
    app.dock.plugin_host.register(CannedUpstream(), "bench-canned-upstream")
    stream = handler.stream

    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        if stream.tell() > 1 << 20:  # the discarded access lines
            stream.seek(0)
            stream.truncate()

    return serve


def _floor_work() -> Callable[..., Awaitable[None]]:
    import jinja2

    template = jinja2.Environment(autoescape=False).from_string("{{ user_message }}")
    answer = json.dumps(base.COMPLETION).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        data = json.loads(message["body"])
        text = template.render(data["prompt_variables"])
        payload = {
            **base.DIRECT_BODY,
            "messages": [base.SYSTEM_MESSAGE, {"role": "user", "content": text}],
        }
        json.dumps(payload).encode()
        await base.send_answer(send, answer)

    return app


if __name__ == "__main__":
    print(json.dumps(measure_proxy_work(2000), indent=1))
