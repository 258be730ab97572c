"""``REPORT.md`` from ``results.json``: the targets with met / not met, then one section per
benchmark with its tables, how it was measured, and its plots.

Everything here reads the results only, so ``python -m bench --report-only`` redraws the
report from a saved run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bench.stats import added_latency

__all__ = ["render", "targets"]

TOOLS = ("floor", "promptdock", "litellm")
"""The SDK columns, in table order."""


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _time(us: Any) -> str:
    """Microseconds as a short human figure."""
    value = _num(us)
    if math.isnan(value):
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f} s"
    if value >= 1e3:
        return f"{value / 1e3:.2f} ms"
    return f"{value:.1f} µs"


def _x(value: Any, digits: int = 1) -> str:
    number = _num(value)
    return "-" if math.isnan(number) else f"{number:.{digits}f}x"


def _n(value: Any, digits: int = 0) -> str:
    number = _num(value)
    return "-" if math.isnan(number) else f"{number:,.{digits}f}"


def _verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[met]


# -- targets ---------------------------------------------------------------------------------


def _target(name: str, figure: str, met: bool | None, value: float = math.nan) -> dict[str, Any]:
    return {"target": name, "figure": figure, "met": met, "value": value}


def _all(values: list[float], test: Callable[[float], bool]) -> bool | None:
    if not values or any(math.isnan(v) for v in values):
        return None
    return all(test(v) for v in values)


def _added(proxy: dict[str, Any]) -> dict[str, Any]:
    """The proxy section's added latencies (computed when the results predate them)."""
    if "added_ms" in proxy:
        return proxy["added_ms"]  # type: ignore[no-any-return]
    targets = proxy.get("targets")
    return added_latency(targets, "upstream alone") if targets else {}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure that decides it and whether it is met
    (``None``: not measured in this run)."""
    found = []
    mock = _get(results, "sdk", "mock") or {}
    floor = {k: _num(_get(v, "ratios", "promptdock/floor")) for k, v in mock.items()}
    found.append(
        _target(
            "SDK per-call overhead at most 3x the floor (median, mock_response)",
            ", ".join(f"{k} {_x(v, 2)}" for k, v in floor.items()) or "-",
            _all(list(floor.values()), lambda v: v <= 3),
            max(floor.values(), default=math.nan),
        )
    )
    lite = {k: _num(_get(v, "ratios", "litellm/promptdock")) for k, v in mock.items()}
    found.append(
        _target(
            "SDK per call at least 50x lower than LiteLLM's (median, mock_response)",
            ", ".join(f"{k} {_x(v, 0)}" for k, v in lite.items()) or "-",
            _all(list(lite.values()), lambda v: v >= 50),
            min(lite.values(), default=math.nan),
        )
    )
    imports = _num(_get(results, "imports", "ratios", "import litellm/promptdock"))
    found.append(
        _target(
            "import at least 20x faster than import litellm",
            f"{_x(imports, 0)} ({_n(_get(results, 'imports', 'promptdock', 'importtime_ms'))} ms "
            f"vs {_n(_get(results, 'imports', 'litellm', 'importtime_ms'))} ms)",
            None if math.isnan(imports) else imports >= 20,
            imports,
        )
    )
    proxy = _get(results, "proxy") or {}
    rps = _num(_get(proxy, "ratios", "rps promptdock/litellm at 16"))
    ours_16 = _get(proxy, "targets", "promptdock", "16") or {}
    theirs_16 = _get(proxy, "targets", "litellm", "16") or {}
    found.append(
        _target(
            "proxy throughput at least 30x LiteLLM's at concurrency 16 (stretch: 45x)",
            f"{_x(rps, 0)} ({_n(ours_16.get('rps'))} vs {_n(theirs_16.get('rps'), 1)} req/s"
            f"{'; stretch met' if rps >= 45 else ''})",
            None if math.isnan(rps) else rps >= 30,
            rps,
        )
    )
    added_1 = _get(_added(proxy), "promptdock", "1") or {}
    added_p50, added_p99 = _num(added_1.get("median")), _num(added_1.get("p99"))
    found.append(
        _target(
            "proxy adds under 1 ms at p50, concurrency 1 (over the upstream alone)",
            f"{_n(added_p50, 2)} ms",
            None if math.isnan(added_p50) else added_p50 < 1,
            added_p50,
        )
    )
    found.append(
        _target(
            "proxy adds under 2 ms at p99, concurrency 1 (over the upstream alone)",
            f"{_n(added_p99, 2)} ms",
            None if math.isnan(added_p99) else added_p99 < 2,
            added_p99,
        )
    )
    own = _num(_get(proxy, "own_work_us", "promptdock_cpu_us"))
    floor_work = _n(_get(proxy, "own_work_us", "floor_cpu_us"), 0)
    found.append(
        _target(
            "proxy's own work per request within ~200 µs of CPU (in-process, no sockets)",
            f"{_n(own, 0)} µs (the floor's work {floor_work} µs)",
            None if math.isnan(own) else own <= 200,
            own,
        )
    )
    ours_64 = _get(proxy, "targets", "promptdock", "64") or {}
    p99_64 = _num(_get(ours_64, "latency_ms", "p99"))
    errors_64 = ours_64.get("errors")
    found.append(
        _target(
            "proxy holds concurrency 64: zero errors, p99 under 100 ms",
            f"{errors_64 if errors_64 is not None else '-'} errors, p99 {_n(p99_64, 1)} ms",
            None if math.isnan(p99_64) or errors_64 is None else errors_64 == 0 and p99_64 < 100,
            p99_64,
        )
    )
    p99 = _num(_get(ours_16, "latency_ms", "p99")), _num(_get(theirs_16, "latency_ms", "p99"))
    found.append(
        _target(
            "proxy p99 lower than LiteLLM's at concurrency 16",
            f"{_n(p99[0], 1)} ms vs {_n(p99[1], 1)} ms",
            None if math.isnan(p99[0] + p99[1]) else p99[0] < p99[1],
            p99[0],
        )
    )
    start = _num(_get(proxy, "startup_s", "promptdock"))
    found.append(
        _target(
            "proxy start-up under 1 s (spawn to /health/liveliness)",
            f"{_n(start, 2)} s (LiteLLM {_n(_get(proxy, 'startup_s', 'litellm'), 1)} s)",
            None if math.isnan(start) else start < 1,
            start,
        )
    )
    rss = _num(_get(proxy, "rss_after_load_mib", "promptdock"))
    found.append(
        _target(
            "proxy under 80 MiB resident after the load",
            f"{_n(rss, 1)} MiB (LiteLLM {_n(_get(proxy, 'rss_after_load_mib', 'litellm'), 0)} MiB)",
            None if math.isnan(rss) else rss < 80,
            rss,
        )
    )
    found.append(_flat_target(results))
    requests = _get(results, "bitbucket", "warm", "warm_http_requests")
    found.append(
        _target(
            "Bitbucket warm calls make no request",
            f"{requests} requests" if requests is not None else "-",
            None if requests is None else requests == 0,
            _num(requests),
        )
    )
    return found


FLAT_SLOPE = 0.1
"""Warm renders count as flat when the log-log slope of their median against the number of
prompts is at most this: over the 1,000x from 10 to 10,000 prompts, 0.1 would be 2x growth.
The slope uses every size, so one noisy process moves it less than a ratio of two sizes."""


def _flat_target(results: dict[str, Any]) -> dict[str, Any]:
    sizes = _get(results, "scale", "sizes") or {}
    slopes = _get(results, "scale", "slopes") or {}
    if len(sizes) < 2:
        return _target("warm renders flat from 10 to 10,000 prompts", "-", None)
    keys = sorted(sizes, key=int)
    small, large = sizes[keys[0]], sizes[keys[-1]]
    names = {"warm_render": "warm_render_us", "warm_render_cycling": "warm_render_cycling_us"}
    slope = [_num(slopes.get(name)) for name in names]
    growth = [_num(large[k]["median"]) / _num(small[k]["median"]) for k in names.values()]
    label = f"warm renders flat from {int(keys[0]):,} to {int(keys[-1]):,} prompts"
    if int(keys[-1]) < 10_000:
        label += " (this run stopped below 10,000)"
    figure = (
        f"log-log slope {_n(slope[0], 2)} for one prompt, {_n(slope[1], 2)} cycling through "
        f"prompts (flat: within ±{FLAT_SLOPE}); largest / smallest folder "
        f"{_x(growth[0], 2)} and {_x(growth[1], 2)}"
    )
    return _target(label, figure, _all(slope, lambda v: abs(v) <= FLAT_SLOPE), max(slope))


# -- sections --------------------------------------------------------------------------------


def _header(results: dict[str, Any]) -> list[str]:
    env = results.get("environment", {})
    versions = env.get("versions", {})
    ours = _get(versions, "promptdock", "promptdock") or "?"
    lite = results.get("litellm", {})
    theirs = lite.get("version") or _get(versions, "litellm", "litellm")
    start, end = env.get("load_average_start") or [], env.get("load_average_end") or []
    lines = [
        "# promptdock benchmarks: side by side with LiteLLM and the floor",
        "",
        "Generated by `nox -s bench` (`python -m bench`); every figure below comes from "
        "`results.json` of the same run. Regenerate the report from it with "
        "`python -m bench --report-only`.",
        "",
        f"- run: {env.get('date_utc', '?')}, preset `{env.get('preset', '?')}`, "
        f"{_n(env.get('seconds'))} s, commit {env.get('git_commit') or '?'}",
        f"- machine: {env.get('cpus', '?')} CPUs, {env.get('platform', '?')}, Python "
        f"{env.get('python', '?')}; load average {_n(start[0] if start else None, 2)} at the "
        f"start, {_n(end[0] if end else None, 2)} at the end",
        f"- promptdock {ours}; LiteLLM {theirs or 'not measured'}; jinja2 "
        f"{_get(versions, 'promptdock', 'jinja2') or '?'}; bytecode: {env.get('bytecode', '?')}",
        "",
        "**How to read it.** This machine is shared and has 2 cores, so absolute times "
        "wander from run to run; the ratios are what carry over, because every comparison "
        "was measured in the same run, interleaved (each tool takes its turn in every "
        "round). The SDK's *floor* is the least any library could do: a precompiled "
        "`jinja2.Template.render` of the same prompt body plus building the message list by "
        "hand (and, through HTTP, one keep-alive `http.client` POST). The proxy's floor is "
        "the proxy issue's reference: a raw ASGI app under the same uvicorn that parses the "
        "body, renders a cached template and forwards with a pooled aiohttp session. Both "
        "libraries read the same `.prompt` files and call the same upstream on 127.0.0.1.",
    ]
    if not lite.get("available"):
        lines += [
            "",
            f"> **LiteLLM was not measured in this run:** {lite.get('error')}. Its columns are "
            "empty and the targets that compare with it say *not measured*.",
        ]
    if lite.get("note"):
        lines += ["", f"> Note on LiteLLM's install: {lite['note']}"]
    return lines


def _targets_table(results: dict[str, Any]) -> list[str]:
    lines = ["", "## Targets", "", "| target | figure in this run | verdict |", "|---|---|---|"]
    for row in results.get("targets") or targets(results):
        lines.append(f"| {row['target']} | {row['figure']} | {_verdict(row['met'])} |")
    return lines


def _failed(section: dict[str, Any] | None) -> list[str]:
    if section is None:
        return ["", "Not run."]
    if "error" in section:
        return ["", f"**This section failed:** `{section['error']}`"]
    return []


def _sdk(results: dict[str, Any], pictures: list[str]) -> list[str]:
    section = results.get("sdk")
    lines = ["", "## 1. SDK per-call overhead", ""]
    lines.append(
        '`completion(model="dotprompt/gpt-4", prompt_id=..., prompt_variables=..., '
        "mock_response=...)`: everything a call costs except the network."
    )
    failed = _failed(section)
    if failed or section is None:
        return lines + failed
    lines += ["", f"*How:* {section['method']}", ""]
    lines += [
        "| prompt | floor median / p95 | promptdock median / p95 | LiteLLM median / p95 "
        "| promptdock / floor (CPU) | LiteLLM / promptdock (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for prompt_id, row in section["mock"].items():
        cells = [
            f"{_time(_get(row, 'us', tool, 'median'))} / {_time(_get(row, 'us', tool, 'p95'))}"
            for tool in TOOLS
        ]
        lines.append(
            f"| `{prompt_id}` ({row['label']}, {_n(row['bytes'])} B) | "
            + " | ".join(cells)
            + f" | {_pair(row, 'promptdock/floor', 2)} | {_pair(row, 'litellm/promptdock', 0)} |"
        )
    http = section.get("http")
    if http:
        lines += ["", "Through the local upstream (a real HTTP round trip per call):", ""]
        lines += [f"*How:* {section['http_method']}", ""]
        lines += [
            "| prompt | floor (http.client) | promptdock | LiteLLM | promptdock / floor (CPU) "
            "| LiteLLM / promptdock (CPU) |",
            "|---|---|---|---|---|---|",
        ]
        for prompt_id, row in http.items():
            cells = [
                f"{_time(_get(row, 'us', tool, 'median'))} / {_time(_get(row, 'us', tool, 'p95'))}"
                for tool in TOOLS
            ]
            lines.append(
                f"| `{prompt_id}` | "
                + " | ".join(cells)
                + f" | {_pair(row, 'promptdock/floor', 2)}"
                + f" | {_pair(row, 'litellm/promptdock', 0)} |"
            )
    same = section.get("same_request") or {}
    if same:
        words = {True: "identical", False: "DIFFERENT", None: "not compared (one library)"}
        verdicts = ", ".join(f"`{k}` {words[v['same_messages']]}" for k, v in same.items())
        lines += [
            "",
            "Same prompt, same messages: each library sent each prompt once to a recording "
            f"OpenAI-compatible server; the message lists were: {verdicts}.",
        ]
        other = {k: v["other_fields"] for k, v in same.items()}
        lines += ["Other request fields each library sent:", ""]
        for prompt_id, by_tool in other.items():
            shown = "; ".join(f"{tool}: `{fields}`" for tool, fields in by_tool.items())
            lines.append(f"- `{prompt_id}`: {shown}")
    spread = []
    for prompt_id, row in section["mock"].items():
        for tool in TOOLS:
            rounds = _get(row, "us", tool, "round_medians")
            if rounds:
                spread.append(f"{prompt_id}/{tool} {_time(min(rounds))}-{_time(max(rounds))}")
    if spread:
        lines += ["", "Noise: the per-round medians ranged " + ", ".join(spread) + "."]
    lines += _pictures(pictures, "sdk_", "Per-call latency distributions")
    return lines


def _pair(row: dict[str, Any], key: str, digits: int) -> str:
    """A paired ratio with the CPU-time ratio beside it."""
    paired = _get(row, "ratios", key)
    if paired is None:
        return "-"
    return f"{_x(paired, digits)} ({_x(_get(row, 'ratios_cpu', key), digits)})"


def _imports(results: dict[str, Any]) -> list[str]:
    section = results.get("imports")
    lines = ["", "## 2. Import time and 3. memory"]
    failed = _failed(section)
    if failed or section is None:
        return lines + failed
    lines += ["", f"*How:* {section['method']}", ""]
    lines += [
        "| | import (-X importtime) | first completion after import | resident after "
        "import | resident after serving one prompt |",
        "|---|---|---|---|---|",
    ]
    for name in ("python", "promptdock", "litellm"):
        row = section.get(name)
        if row is None:
            continue
        label = "bare interpreter (baseline)" if name == "python" else f"`import {name}`"
        lines.append(
            f"| {label} | {_n(row['importtime_ms'], 0) if name != 'python' else '-'} ms | "
            f"{_n(row['first_call_ms'], 0) if name != 'python' else '-'} ms | "
            f"{_n(row['rss_after_import_mib'], 1)} MiB | {_n(row['rss_after_serve_mib'], 1)} MiB |"
        )
    ratios = section.get("ratios")
    if ratios:
        lines += [
            "",
            f"LiteLLM / promptdock: import {_x(ratios['import litellm/promptdock'], 0)}, "
            f"resident memory after serving {_x(ratios['rss litellm/promptdock'], 1)}, "
            f"first call {_x(ratios['first call litellm/promptdock'], 1)}.",
        ]
    lines += [
        "",
        "promptdock's first call includes loading its plugins from entry points and the "
        "parser (ruamel.yaml) and compiling the prompt; `import promptdock` itself defers them.",
    ]
    return lines


def _proxy(results: dict[str, Any], pictures: list[str]) -> list[str]:
    section = results.get("proxy")
    lines = ["", "## 4. Proxy: throughput, latency, start-up, memory"]
    failed = _failed(section)
    if failed or section is None:
        return lines + failed
    lines += ["", f"*How:* {section['method']}", ""]
    names = list(section["targets"])
    lines += [
        "| concurrency | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for level in section["levels"]:
        cells = []
        for name in names:
            row = _get(section, "targets", name, str(level))
            if row is None:
                cells.append("-")
                continue
            errors = f", {row['errors']} errors" if row["errors"] else ""
            cells.append(
                f"{_n(row['rps'])} req/s, p50 {_n(row['latency_ms']['median'], 2)} ms, "
                f"p99 {_n(row['latency_ms']['p99'], 2)} ms{errors}"
            )
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    added = _added(section)
    if added:
        levels = [str(level) for level in section["levels"]]
        lines += [
            "",
            "Latency added over calling the upstream alone (a server's p50 and p99 minus the "
            "upstream's at the same concurrency):",
            "",
            "| concurrency | " + " | ".join(added) + " |",
            "|---|" + "---|" * len(added),
        ]
        for level in levels:
            cells = [
                f"p50 {_n(row['median'], 2)} ms, p99 {_n(row['p99'], 2)} ms"
                if (row := added[name].get(level)) is not None
                else "-"
                for name in added
            ]
            lines.append(f"| {level} | " + " | ".join(cells) + " |")
    cpu = []
    for name in names:
        row = _get(section, "targets", name, "16")
        if row and "server_cpu_us_per_request" in row:
            cpu.append(f"{name} {_time(row['server_cpu_us_per_request'])}")
    if cpu:
        lines += ["", "Server CPU time per request at concurrency 16: " + ", ".join(cpu) + "."]
    ours = _get(section, "targets", "promptdock", "16", "server_cpu_us_per_request")
    theirs = _get(section, "targets", "litellm", "16", "server_cpu_us_per_request")
    if ours and theirs:
        lines += [
            "",
            f"Per request, LiteLLM's server used {_x(_num(theirs) / _num(ours), 0)} the CPU "
            "time of promptdock's: the capacity ratio on a machine where the server had the "
            "cores to itself (here the load generator, the upstream and other work share 2).",
        ]
    ratios = section.get("ratios") or {}
    if ratios:
        lines += [
            "",
            "promptdock against LiteLLM: "
            + ", ".join(f"{k} {_x(v, 1)}" for k, v in ratios.items())
            + ".",
        ]
    own = section.get("own_work_us")
    if own:
        lines += [
            "",
            f"The proxy app's own work per request, in-process with the upstream answered by a "
            f"hook (bench/proxy_work.py: routing, auth, load, render, upstream body, decoding and "
            f"checking the answer, provenance, access line): {_time(own['promptdock_cpu_us'])} of "
            f"CPU; the floor's work (parse, render, encode) {_time(own['floor_cpu_us'])}.",
        ]
    prepare = section.get("prepare_us")
    if prepare:
        lines += [
            "",
            f"Preparing the seed request (load, render, build) on the event loop took "
            f"{_time(prepare['inline_us'])}, through `asyncio.to_thread` "
            f"{_time(prepare['to_thread_us'])}: why the proxy prepares requests for a local "
            "folder inline and only sends other sources' requests to a worker thread.",
        ]
    lines += ["", "| | start-up to liveliness (median) | resident idle | resident after load |"]
    lines += ["|---|---|---|---|"]
    for name, seconds in section["startup_s"].items():
        lines.append(
            f"| {name} | {_n(seconds, 2)} s | {_n(_get(section, 'rss_idle_mib', name), 1)} MiB "
            f"| {_n(_get(section, 'rss_after_load_mib', name), 1)} MiB |"
        )
    lines += _pictures(pictures, "proxy_", "Proxy plots")
    return lines


def _scale(results: dict[str, Any], pictures: list[str]) -> list[str]:
    section = results.get("scale")
    lines = ["", "## 5. Scale: 10 to 10,000 prompts in a folder"]
    failed = _failed(section)
    if failed or section is None:
        return lines + failed
    lines += ["", f"*How:* {section['method']}", ""]
    lines += [
        "| prompts | cold list_prompts() | per prompt | cold first render | warm render "
        "(median / p99) | warm, cycling prompts |",
        "|---|---|---|---|---|---|",
    ]
    for size, row in sorted(section["sizes"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| {int(size):,} | {_time(row['list_s'] * 1e6)} | {_time(row['list_per_prompt_us'])} "
            f"| {_time(row['first_render_ms'] * 1e3)} | {_time(row['warm_render_us']['median'])} "
            f"/ {_time(row['warm_render_us']['p99'])} "
            f"| {_time(row['warm_render_cycling_us']['median'])} |"
        )
    slopes = section["slopes"]
    lines += [
        "",
        "Growth, as the slope of log(time) against log(prompts) (1 = linear, 0 = flat): "
        f"cold listing {_n(slopes['list'], 2)}, cold first render "
        f"{_n(slopes['first_render'], 2)}, warm render {_n(slopes['warm_render'], 2)}, warm "
        f"render cycling through many prompts {_n(slopes['warm_render_cycling'], 2)}.",
        "",
        "The cold listing parses every file (so a broken prompt is listed with its error): "
        "linear in files, and its per-file cost is the YAML frontmatter parse. A warm render "
        "is two `stat` calls and a dictionary lookup before rendering, whatever the folder "
        "holds.",
    ]
    lines += _pictures(pictures, "scale", "Scale curves (log-log)")
    return lines


def _bitbucket(results: dict[str, Any]) -> list[str]:
    section = results.get("bitbucket")
    lines = ["", "## 6. Bitbucket source (local emulator)"]
    failed = _failed(section)
    if failed or section is None:
        return lines + failed
    lines += ["", f"*How:* {section['method']}", ""]
    lines += ["| cold start | prompts | seconds | requests | ref | listing pages | files |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for label, row in section["cold_start"].items():
        lines.append(
            f"| {label} | {row['prompts']} | {_n(row['seconds'], 2)} | {row['requests']} "
            f"| {row['ref']} | {row['listing pages']} | {row['files']} |"
        )
    warm = section["warm"]
    per_call = warm["seconds_per_call"]
    lines += [
        "",
        f"Warm calls: {warm['warm_http_requests']} HTTP requests in all; "
        + ", ".join(f"{k} {_time(v * 1e6)}" for k, v in per_call.items())
        + f" (Bitbucket / local folder: render {_x(warm['render_ratio'], 2)}, completion "
        f"{_x(warm['completion_ratio'], 2)}).",
        "",
        "| refresh after a push (webhook) | requests | ref | diffstat | files | seconds "
        "| new text served | requests for another prompt afterwards |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in ("no change", "one file changed"):
        row = section["push"][label]
        lines.append(
            f"| {label} | {row['requests']} | {row['ref']} | {row['diffstat']} | {row['files']} "
            f"| {_n(row['seconds'], 3)} | {'yes' if row['sees_the_edit'] else 'no'} "
            f"| {row['requests for an unchanged prompt afterwards']} |"
        )
    return lines


def _where(results: dict[str, Any]) -> list[str]:
    lines = ["", "## Where the time goes"]
    profile = _get(results, "sdk", "profile") or {}
    if profile:
        lines += [
            "",
            "promptdock's per-call path under cProfile, by own time (the profiler adds ~1 µs "
            "to every Python call, so small functions look bigger than they are):",
        ]
        for prompt_id, rows in profile.items():
            lines += _profile_table(f"promptdock, <code>{prompt_id}</code>", rows)
    theirs = _get(results, "sdk", "profile_litellm") or {}
    if theirs:
        lines += ["", "LiteLLM's per-call path under cProfile, by cumulative time:"]
        for prompt_id, rows in theirs.items():
            lines += _profile_table(f"LiteLLM, <code>{prompt_id}</code>", rows)
    imports = _get(results, "proxy", "startup_imports_ms") or {}
    if imports:
        lines += [
            "",
            "The slowest top-level imports of `promptdock serve` (one extra start under "
            "`python -X importtime`, cumulative): "
            + ", ".join(f"`{name}` {_n(ms)} ms" for name, ms in imports.items())
            + ".",
        ]
    notes = results.get("analysis") or FINDINGS
    lines += ["", "Findings from profiling while building this harness:", ""]
    lines += [f"- {note}" for note in notes]
    return lines


def _profile_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        f"<details><summary>{title}</summary>",
        "",
        "| function | calls per call | own µs per call | cumulative µs per call |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{row['function']}` | {_n(row['calls_per_call'], 1)} "
        f"| {_n(row['own_us_per_call'], 1)} | {_n(row['cumulative_us_per_call'], 1)} |"
        for row in rows
    ]
    return [*lines, "", "</details>"]


FINDINGS = [
    "Per call, promptdock does work the floor does not: it finds the prompt through the source "
    "plugin and checks that the file did not change (one `stat`, ~5 µs here, about a third of "
    "the remaining ratio), validates the variables against the input schema, renders in "
    "Jinja2's sandbox with every printed value checked for role-line injection, and builds "
    "an OpenAI-shaped response; each of the three hooks (load, render, dispatch) is a plugin "
    "call. The earlier profile (3.2-4.8x the floor) led to: marking a value only when its "
    "first characters could continue a role line (exhaustively compared with always marking), "
    "one-pass validation of string schemas, the render budget in a ContextVar, no extra copy "
    "of the variables, positional internal calls, a mock usage count by characters instead "
    "of words, and role splitting anchored on a literal newline.",
    "Through HTTP, promptdock's synchronous dispatcher uses `requests`, which scanned the "
    "whole environment twice per request for proxy settings "
    "(`Session.merge_environment_settings`, a quarter of its CPU per call); promptdock now "
    "asks `requests` once per URL and value of the proxy and CA variables (~1,030 -> ~870 µs "
    "of CPU per call here). `requests` + `urllib3` still cost several times `http.client`.",
    "LiteLLM, per `completion(model='dotprompt/...')` (cProfile, the table above): the prompt "
    "manager's `get_chat_completion_prompt` builds the template again on every call (Python's "
    "`compile` runs per call), and response metadata and cost calculation take more time "
    "than the prompt. Its import loads the `openai` SDK's pydantic models.",
    "The proxy, per request (py-spy of `promptdock serve` under load): the upstream call "
    "dominated, and most of it was aiohttp's client (~300 µs of CPU per POST and answer "
    "here, against ~60 µs for the same bytes on a bare asyncio protocol). promptdock now "
    "calls upstreams through its own pooled HTTP/1.1 client on httptools "
    "(`promptdock.dispatch._async_http`), which is why it can beat the floor, whose forward "
    "still goes through aiohttp. Then come uvicorn's two socket writes per answer, loading "
    "and rendering through the hooks, parsing the upstream's JSON (checked: an error body "
    "or a non-completion becomes a clear 502) and encoding it again, the access line (now "
    "batched: one write per 50 ms) and parsing the request. Start-up is mostly imports "
    "(`uvicorn`, `ruamel.yaml`, `click`).",
]
"""What profiling showed while this harness was written (kept as text: not re-measured)."""


def _pictures(pictures: list[str], prefix: str, title: str) -> list[str]:
    chosen = [p for p in pictures if p.startswith(prefix)]
    if not chosen:
        return []
    return ["", f"{title}:", ""] + [f"![{p}]({p})" for p in chosen]


def render(results: dict[str, Any], pictures: list[str], plot_note: str | None) -> str:
    """The whole report as Markdown."""
    lines = _header(results)
    lines += _targets_table(results)
    lines += _sdk(results, pictures)
    lines += _imports(results)
    lines += _proxy(results, pictures)
    lines += _scale(results, pictures)
    lines += _bitbucket(results)
    lines += _where(results)
    if plot_note:
        lines += ["", f"> Plots: {plot_note}"]
    return "\n".join(lines) + "\n"
