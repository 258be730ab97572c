"""The Bitbucket source against the local emulator, in one run: warm cost, cold start, refreshes.

1. **Warm calls**: ``PromptDock.render`` and ``completion(mock_response=...)`` from a
   Bitbucket source vs the same prompt from a filesystem source, as a ratio (target: within
   1.5x), and the HTTP requests the warm calls made (target: zero).
2. **Cold start** of ``--prompts`` prompts in nested folders: the requests a first
   ``list_prompts()`` makes and how long it takes; then a restart served from the disk
   snapshot, online and offline.
3. **Calls during background refreshes**: the latency percentiles of ``render`` while the branch
   keeps moving and every refresh answers slowly (target: no call waits on the network, so the
   p99 stays in microseconds).

The emulator runs in this process (a real HTTP server on 127.0.0.1 over a real git repository),
so absolute times include its work; compare the ratios. Machines here are shared and noisy.
Run: ``python bench/bench_bitbucket.py`` (or ``nox -s bench``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the emulator lives in the test tree

import promptdock  # noqa: E402
import promptdock_bitbucket  # noqa: E402
from tests.support.bitbucket import BitbucketEmulator, GitRepo  # noqa: E402

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
VARIABLES = {"user_message": "What is the capital of France?"}
TOKEN = "bench-token"  # noqa: S105 - the emulator's test credential
REPEATS = 7


def per_call(fn: Callable[[], object], number: int) -> float:
    """Median seconds per call over REPEATS timed loops of ``number`` calls."""
    fn()
    return statistics.median(timeit.repeat(fn, number=number, repeat=REPEATS)) / number


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bitbucket_options(emu: BitbucketEmulator, cache_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "bitbucket",
        "workspace": "acme",
        "repository": "prompts",
        "access_token": TOKEN,
        "branch": "main",
        "base_url": emu.base_url,
        "cache_dir": str(cache_dir),
        **extra,
    }


def warm_calls(emu: BitbucketEmulator, folder: Path, tmp: Path, n: int) -> dict[str, Any]:
    fs = promptdock.PromptDock(prompt_directory=str(folder))
    bb = promptdock.PromptDock(
        sources={"bitbucket": bitbucket_options(emu, tmp / "warm-cache", cache_ttl=3600)}
    )

    def completion(dock: promptdock.PromptDock, source: str) -> Callable[[], object]:
        return lambda: dock.completion(
            model=f"{source}/gpt-4",
            prompt_id="hello",
            prompt_variables=VARIABLES,
            mock_response="Paris",
        )

    bb.render("hello", VARIABLES)  # cold load, outside the measurement
    emu.reset_counts()
    times = {
        "render, filesystem": per_call(lambda: fs.render("hello", VARIABLES), n),
        "render, bitbucket": per_call(lambda: bb.render("hello", VARIABLES), n),
        "completion(mock), filesystem": per_call(completion(fs, "dotprompt"), n),
        "completion(mock), bitbucket": per_call(completion(bb, "bitbucket"), n),
    }
    return {
        "seconds_per_call": times,
        "render_ratio": times["render, bitbucket"] / times["render, filesystem"],
        "completion_ratio": times["completion(mock), bitbucket"]
        / times["completion(mock), filesystem"],
        "warm_http_requests": emu.request_count(),
    }


def cold_start(emu: BitbucketEmulator, tmp: Path, count: int) -> dict[str, Any]:
    options = bitbucket_options(emu, tmp / "cold-cache")
    results: dict[str, Any] = {}
    for label in ("empty cache", "restart, snapshot on disk", "restart offline, snapshot"):
        promptdock_bitbucket.close_all()
        emu.offline = label.startswith("restart offline")
        emu.reset_counts()
        dock = promptdock.PromptDock(sources={"bitbucket": options})
        start = time.perf_counter()
        listed = dock.list_prompts()
        seconds = time.perf_counter() - start
        requests = emu.requests
        results[label] = {
            "prompts": len(listed),
            "seconds": seconds,
            "requests": len(requests),
            "ref": sum("/refs/" in r.path for r in requests),
            "listing pages": sum(r.path.endswith("/") for r in requests),
            "files": sum("/src/" in r.path and not r.path.endswith("/") for r in requests),
        }
    emu.offline = False
    return results


def during_refreshes(
    emu: BitbucketEmulator, repo: GitRepo, folder: Path, tmp: Path, seconds: float
) -> dict[str, Any]:
    promptdock_bitbucket.close_all()
    bb = promptdock.PromptDock(
        sources={"bitbucket": bitbucket_options(emu, tmp / "swr-cache", cache_ttl=0.05)}
    )
    fs = promptdock.PromptDock(prompt_directory=str(folder))
    bb.render("hello", VARIABLES)
    # Every ref resolution and file read now takes 200 ms: a caller that waited would show it.
    emu.inject("/refs/", delay=0.2, times=10_000)
    emu.inject("/diffstat/", delay=0.2, times=10_000)
    emu.inject("/src/", delay=0.2, times=10_000)
    stop = threading.Event()
    pushes = 0

    def pusher() -> None:
        nonlocal pushes
        while not stop.wait(0.3):
            pushes += 1
            text = HELLO.replace("helpful", f"helpful (edit {pushes})")
            repo.commit({"prompts/hello.prompt": text}, f"edit {pushes}")

    def measure(dock: promptdock.PromptDock) -> tuple[list[float], set[str]]:
        latencies: list[float] = []
        shas: set[str] = set()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            rendered = dock.render("hello", VARIABLES)
            latencies.append(time.perf_counter() - start)
            provenance = rendered.prompt.provenance
            if provenance is not None and provenance.sha:
                shas.add(provenance.sha)
        return latencies, shas

    baseline, _ = measure(fs)
    thread = threading.Thread(target=pusher, daemon=True)
    thread.start()
    latencies, shas = measure(bb)
    stop.set()
    thread.join()
    emu.clear_faults()
    source = promptdock_bitbucket.source_for(bb.get_source("bitbucket"))
    source.wait_idle(10)

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "calls": len(values),
            "p50_us": percentile(values, 0.50) * 1e6,
            "p99_us": percentile(values, 0.99) * 1e6,
            "max_us": max(values) * 1e6,
        }

    return {
        "filesystem": summary(baseline),
        "bitbucket": summary(latencies),
        "pushes": pushes,
        "commits_served": len(shas),
        "refreshes": source.status()["refreshes"],
        "calls_over_100ms": sum(v > 0.1 for v in latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000, help="prompts for the cold start")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the refresh run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folder = tmp / "fs"
        folder.mkdir()
        (folder / "hello.prompt").write_text(HELLO, encoding="utf-8")
        repo = GitRepo(tmp / "repo")
        side = max(1, round(args.prompts ** (1 / 3)))
        files = {
            f"prompts/team{i}/area{j}/p{k}.prompt": HELLO
            for i in range(side)
            for j in range(side)
            for k in range(args.prompts // (side * side))
        }
        repo.commit({"prompts/hello.prompt": HELLO, **files}, "prompts")
        with BitbucketEmulator() as emu:
            emu.add_repository("acme", "prompts", repo)
            emu.add_token(TOKEN)
            results["warm"] = warm_calls(emu, folder, tmp, 20_000)
            results["cold_start"] = cold_start(emu, tmp, args.prompts)
            results["during_refreshes"] = during_refreshes(emu, repo, folder, tmp, args.seconds)
            promptdock_bitbucket.close_all()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


def report(results: dict[str, Any]) -> None:
    warm = results["warm"]
    print("1. warm calls (median µs/call)")
    for name, seconds in warm["seconds_per_call"].items():
        print(f"   {name:32} {seconds * 1e6:8.2f}")
    for label, key in (("render", "render_ratio"), ("completion(mock)", "completion_ratio")):
        ratio = warm[key]
        verdict = "met" if ratio <= 1.5 else "NOT met"
        print(f"   {label} bitbucket / filesystem = {ratio:.2f}x (target <= 1.5x): {verdict}")
    requests = warm["warm_http_requests"]
    print(f"   HTTP requests during the warm calls: {requests} (target 0)")
    print("\n2. cold start")
    for label, row in results["cold_start"].items():
        print(
            f"   {label:28} {row['prompts']} prompts in {row['seconds']:.2f} s, "
            f"{row['requests']} requests (ref {row['ref']}, listing pages "
            f"{row['listing pages']}, files {row['files']})"
        )
    swr = results["during_refreshes"]
    fs, bb = swr["filesystem"], swr["bitbucket"]
    print("\n3. render while the branch moves and every Bitbucket answer takes 200 ms")
    for label, row in (("filesystem", fs), ("bitbucket", bb)):
        print(
            f"   {label:10} {row['calls']:8} calls  p50 {row['p50_us']:7.1f} µs  "
            f"p99 {row['p99_us']:7.1f} µs  max {row['max_us'] / 1000:7.2f} ms"
        )
    print(
        f"   {swr['pushes']} pushes, {swr['refreshes']} background refreshes, "
        f"{swr['commits_served']} commits served; p99 bitbucket / filesystem = "
        f"{bb['p99_us'] / fs['p99_us']:.2f}x; calls over 100 ms: {swr['calls_over_100ms']} "
        f"(target 0: no call waits on the network)"
    )


if __name__ == "__main__":
    main()
