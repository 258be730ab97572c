"""SDK per-call cost: promptdock, LiteLLM and the floor, each timed call by call.

Every tool runs in its own child process (``probe.py worker``) with the same prompt files.
The machine is shared, and its speed changes from one tenth of a second to the next, so the
measurement is split into many short rounds: in each round, each prompt gets one batch per
tool, back to back (the order alternates between rounds). Ratios are taken within a round,
between batches that ran a fraction of a second apart, and the report gives their median
over rounds; latencies of all rounds are pooled for the median and p95 of each tool. The CPU
time of each batch (``time.thread_time_ns``, blind to time spent descheduled) is kept as a
cross-check.

Two paths: ``mock_response=`` (no network: pure per-call overhead), and a real HTTP call to
a local OpenAI-compatible upstream on 127.0.0.1 (the floor then adds one keep-alive
``http.client`` POST).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.prompts import PROMPTS, BenchPrompt
from bench.settings import Settings
from bench.stats import quantile, ratio, summarize
from bench.workers import Worker

__all__ = ["METHOD", "Upstream", "check_same_messages", "measure_sdk"]

METHOD = (
    "Each call timed with time.perf_counter_ns in a child process per library. {rounds} "
    "rounds; in each, every prompt gets one batch per tool, back to back, order alternating "
    "between rounds: {sdk_calls} calls per batch for the floor and promptdock, "
    "{litellm_calls} for LiteLLM (plus one untimed warm-up call). Ratios: median over rounds "
    "of the ratio of the two batches' medians in that round. Latency medians and p95: all "
    "calls pooled. CPU: this thread's CPU time per call (time.thread_time_ns per batch)."
)
"""How the SDK figures were measured, for the report (formatted with the settings)."""

TOOLS = ("floor", "promptdock", "litellm")
"""The three things timed per call, in report order."""
PAIRS = (("promptdock", "floor"), ("litellm", "promptdock"), ("litellm", "floor"))
"""The ratios reported, as (numerator, denominator)."""


@dataclass(frozen=True)
class Upstream:
    """Where the HTTP path sends its calls, and what the floor sends besides the messages.

    :ivar api_base: ``http://127.0.0.1:PORT/v1``.
    :ivar fields: per prompt id, the request fields promptdock sends (model, sampling
        parameters), so the floor's request is the same size.
    """

    api_base: str
    fields: Mapping[str, Mapping[str, Any]] = field(hash=False)
    api_key: str = "sk-bench-upstream"


@dataclass
class _Samples:
    """What one (prompt, tool) collected over the rounds."""

    calls: list[float] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, reply: dict[str, Any]) -> None:
        batch = [ns / 1e3 for ns in reply["ns"]]
        self.calls.extend(batch)
        self.medians.append(statistics.median(batch))
        self.cpu.append(reply["cpu_ns"] / 1e3 / len(batch))

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = summarize(self.calls)
        described["round_medians"] = self.medians
        described["cpu_per_call"] = statistics.median(self.cpu)
        described["percentiles"] = [quantile(self.calls, q / 100) for q in range(101)]
        return described


def _request(
    tool: str, prompt: BenchPrompt, calls: int, upstream: Upstream | None
) -> dict[str, Any]:
    request: dict[str, Any] = {"variables": prompt.variables, "calls": calls}
    if upstream is not None:
        request["api_base"] = upstream.api_base
        request["api_key"] = upstream.api_key
    if tool == "floor":
        fields = dict(upstream.fields[prompt.prompt_id]) if upstream else {}
        return {**request, "op": "floor", "body": prompt.body, "fields": fields}
    return {**request, "op": "completion", "prompt_id": prompt.prompt_id}


def _paired(a: _Samples, b: _Samples) -> float:
    ratios = [ratio(x, y) for x, y in zip(a.medians, b.medians, strict=True)]
    return statistics.median(ratios) if ratios else float("nan")


def _run(
    settings: Settings,
    workers: Mapping[str, Worker],
    prompts: tuple[BenchPrompt, ...],
    upstream: Upstream | None,
) -> dict[str, Any]:
    fast = settings.http_calls if upstream else settings.sdk_calls
    calls = {"floor": fast, "promptdock": fast, "litellm": fast}
    if upstream is None:
        calls["litellm"] = settings.litellm_calls
    tools = [t for t in TOOLS if workers.get("promptdock" if t == "floor" else t)]
    samples = {(p.prompt_id, t): _Samples() for p in prompts for t in tools}
    for round_index in range(settings.rounds):
        order = tools if round_index % 2 == 0 else tools[::-1]
        for prompt in prompts:
            for tool in order:
                worker = workers["promptdock" if tool == "floor" else tool]
                request = _request(tool, prompt, calls[tool], upstream)
                samples[(prompt.prompt_id, tool)].add(worker.request(settings.timeout, **request))
    results: dict[str, Any] = {}
    for prompt in prompts:
        mine = {tool: samples[(prompt.prompt_id, tool)] for tool in tools}
        pairs = [(a, b) for a, b in PAIRS if a in mine and b in mine]
        results[prompt.prompt_id] = {
            "label": prompt.label,
            "bytes": len(prompt.text.encode()),
            "us": {tool: s.describe() for tool, s in mine.items()},
            "ratios": {f"{a}/{b}": _paired(mine[a], mine[b]) for a, b in pairs},
            "ratios_pooled": {
                f"{a}/{b}": ratio(
                    statistics.median(mine[a].calls), statistics.median(mine[b].calls)
                )
                for a, b in pairs
            },
            "ratios_cpu": {
                f"{a}/{b}": ratio(statistics.median(mine[a].cpu), statistics.median(mine[b].cpu))
                for a, b in pairs
            },
        }
    return results


def measure_sdk(
    settings: Settings, workers: Mapping[str, Worker], upstream: Upstream | None
) -> dict[str, Any]:
    """Per-call latencies of every prompt with ``mock_response`` and, when ``upstream`` is
    given, of the seed prompt through it.

    :param workers: ``{"promptdock": ..., "litellm": ...}``, set up; LiteLLM may be absent.
    """
    result: dict[str, Any] = {
        "method": METHOD.format(**vars(settings)),
        "mock": _run(settings, workers, PROMPTS, None),
    }
    result["profile"] = {
        prompt.prompt_id: workers["promptdock"].request(
            settings.timeout,
            op="profile",
            prompt_id=prompt.prompt_id,
            variables=prompt.variables,
            calls=settings.sdk_calls,
        )["top"]
        for prompt in PROMPTS
    }
    litellm = workers.get("litellm")
    if litellm is not None:
        # Cumulative order shows which of LiteLLM's steps the time goes to.
        result["profile_litellm"] = {
            prompt.prompt_id: litellm.request(
                settings.timeout,
                op="profile",
                prompt_id=prompt.prompt_id,
                variables=prompt.variables,
                calls=settings.litellm_calls,
                order="cumulative",
            )["top"]
            for prompt in PROMPTS[:1]
        }
    if upstream is not None:
        result["http"] = _run(settings, workers, PROMPTS[:1], upstream)
        result["http_method"] = (
            f"The seed prompt through the local upstream on 127.0.0.1 (raw asyncio HTTP/1.1, "
            f"keep-alive, canned answer): {settings.rounds} rounds of {settings.http_calls} "
            f"calls per tool, paired as above; the floor posts with http.client."
        )
    return result


def check_same_messages(
    workers: Mapping[str, Worker],
    api_base: str,
    recorded: Callable[[], list[Any]],
    timeout: float,
) -> dict[str, Any]:
    """Send every prompt once per library to a recording upstream and compare what arrived.

    :param recorded: returns the request bodies the upstream received so far.
    :returns: per prompt id, whether the message lists were identical (``None`` with only one
        library), and the other request fields each library sent.
    """
    sent: dict[str, dict[str, Any]] = {}
    for tool, worker in workers.items():
        for prompt in PROMPTS:
            before = len(recorded())
            worker.request(
                timeout,
                op="check",
                prompt_id=prompt.prompt_id,
                variables=prompt.variables,
                api_base=api_base,
                api_key="sk-bench-upstream",
            )
            bodies = recorded()[before:]
            sent.setdefault(prompt.prompt_id, {})[tool] = bodies[-1] if bodies else None
    checked: dict[str, Any] = {}
    for prompt_id, by_tool in sent.items():
        messages = [body["messages"] if body else None for body in by_tool.values()]
        same = all(m == messages[0] for m in messages) if len(messages) > 1 else None
        checked[prompt_id] = {
            "same_messages": same,
            "other_fields": {
                tool: {k: v for k, v in (body or {}).items() if k != "messages"}
                for tool, body in by_tool.items()
            },
        }
    return checked
