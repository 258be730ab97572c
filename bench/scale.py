"""How promptdock's costs grow with the number of prompts in a folder (10 to 10,000 files).

For each folder size, fresh processes (``python -m bench.scale child ...``) measure, in order:

1. **cold first render**: a new ``PromptDock`` renders one prompt of the big folder, after
   warming the machinery (imports, plugins, Jinja2) on a one-prompt folder, so the figure is
   the cost that depends on the folder alone;
2. **cold** ``list_prompts()``: the whole walk (every file is parsed, so broken ones are
   listed with their error);
3. **warm render** of that prompt, call by call;
4. **warm render across many prompts**: cycling through up to 1,000 prompts, each rendered
   once before (a template is compiled on its first render, not when it is listed).

Expected: the cold walk grows linearly with the files, the cold first render and both warm
renders stay flat. The report fits the log-log slope between the smallest and largest sizes.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.prompts import HELLO, generated_prompt, write_prompts
from bench.settings import Settings
from bench.stats import summarize
from bench.workers import ProbeError

__all__ = ["METHOD", "make_folder", "measure_scale", "prompt_id", "slope"]

METHOD = (
    "Generated folders of N prompts (100 per subfolder). Per size, {repeats} fresh process(es), "
    "sizes interleaved: cold first render (machinery warmed on another folder first), cold "
    "list_prompts(), then {warm} warm renders of one prompt and {warm} cycling through up to "
    "1,000 prompts. Cold figures: medians over processes; warm: medians of all calls."
)
"""How the scale figures were measured, for the report."""

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the children run ``python -m bench.scale`` from it."""


def prompt_id(index: int) -> str:
    """The id of the ``index``-th generated prompt."""
    return f"g{index // 100:03d}/p{index:05d}"


def make_folder(folder: Path, count: int) -> Path:
    """Write ``count`` distinct generated prompts under ``folder`` (once; reused if present)."""
    marker = folder / ".complete"
    if not marker.exists():
        for index in range(count):
            path = folder / f"{prompt_id(index)}.prompt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(generated_prompt(index), encoding="utf-8")
        marker.write_text(str(count))
    return folder


def slope(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(size): 1 is linear, 0 is flat."""
    points = [(math.log(s), math.log(t)) for s, t in zip(sizes, seconds, strict=True) if t > 0]
    if len(points) < 2:
        return math.nan
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def _child(folder: str, warmup: str, count: int, warm_calls: int) -> dict[str, Any]:
    import promptdock

    variables = HELLO.variables
    small = promptdock.PromptDock(prompt_directory=warmup)
    small.render(HELLO.prompt_id, variables)
    small.list_prompts()
    dock = promptdock.PromptDock(prompt_directory=folder)
    target = prompt_id(count // 2)
    started = time.perf_counter()
    dock.render(target, variables)
    first = time.perf_counter() - started
    started = time.perf_counter()
    listed = dock.list_prompts()
    walk = time.perf_counter() - started
    if len(listed) != count:
        raise RuntimeError(f"listed {len(listed)} prompts, expected {count}")
    clock = time.perf_counter_ns
    same = []
    for _ in range(warm_calls):
        started_ns = clock()
        dock.render(target, variables)
        same.append(clock() - started_ns)
    ids = [prompt_id(i * count // min(count, 1000)) for i in range(min(count, 1000))]
    for name in ids:  # the first render of each compiles its template: not warm yet
        dock.render(name, variables)
    cycling = []
    for index in range(warm_calls):
        name = ids[index % len(ids)]
        started_ns = clock()
        dock.render(name, variables)
        cycling.append(clock() - started_ns)
    return {"first_render_s": first, "list_s": walk, "warm_ns": same, "cycling_ns": cycling}


def measure_scale(settings: Settings, work: Path) -> dict[str, Any]:
    """Cold and warm costs per folder size (keys: the sizes as strings) and the slopes."""
    warmup = write_prompts(work / "scale-warmup", (HELLO,))
    folders = {n: make_folder(work / f"scale-{n}", n) for n in settings.scale_sizes}
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in settings.scale_sizes}
    for _ in range(settings.scale_repeats):
        for size, folder in folders.items():
            command = [sys.executable, "-m", "bench.scale", "child", str(folder), str(warmup)]
            command += [str(size), str(settings.warm_calls)]
            try:
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    timeout=settings.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ProbeError(f"scale child for {size} prompts ran too long") from None
            if done.returncode != 0:
                raise ProbeError(f"scale child for {size} prompts failed: {done.stderr[-500:]}")
            runs[size].append(json.loads(done.stdout))
    sizes: dict[str, Any] = {}
    for size, results in runs.items():
        warm = [ns / 1e3 for r in results for ns in r["warm_ns"]]
        cycling = [ns / 1e3 for r in results for ns in r["cycling_ns"]]
        list_s = statistics.median(r["list_s"] for r in results)
        sizes[str(size)] = {
            "first_render_ms": statistics.median(r["first_render_s"] for r in results) * 1e3,
            "list_s": list_s,
            "list_per_prompt_us": list_s / size * 1e6,
            "warm_render_us": summarize(warm),
            "warm_render_cycling_us": summarize(cycling),
        }
    ordered = list(settings.scale_sizes)
    column = [sizes[str(n)] for n in ordered]
    return {
        "method": METHOD.format(repeats=settings.scale_repeats, warm=settings.warm_calls),
        "sizes": sizes,
        "slopes": {
            "list": slope(ordered, [c["list_s"] for c in column]),
            "first_render": slope(ordered, [c["first_render_ms"] for c in column]),
            "warm_render": slope(ordered, [c["warm_render_us"]["median"] for c in column]),
            "warm_render_cycling": slope(
                ordered, [c["warm_render_cycling_us"]["median"] for c in column]
            ),
        },
    }


if __name__ == "__main__":
    if sys.argv[1:2] != ["child"] or len(sys.argv) != 6:
        raise SystemExit("usage: python -m bench.scale child FOLDER WARMUP COUNT WARM_CALLS")
    print(json.dumps(_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
