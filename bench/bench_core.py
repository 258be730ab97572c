"""Per-call cost of promptdock against the physical floor, as ratios measured in one run.

The floor is what a hand-written app does with no framework: a precompiled
``jinja2.Template.render`` of the same body plus building the message list by hand. Each
figure is the median of several repeats of a timed loop; machines here are shared and noisy,
so compare ratios, not absolute numbers. Run: ``nox -s bench`` (or ``python bench/bench_core.py``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

import jinja2

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
REPEATS = 7
FLOOR = "floor: precompiled jinja2 render of the body + messages by hand"


def per_call(fn: Callable[[], object], number: int) -> float:
    """Median seconds per call over REPEATS timed loops of ``number`` calls."""
    fn()  # warm caches
    times = timeit.repeat(fn, number=number, repeat=REPEATS)
    return statistics.median(times) / number


def floor_fn() -> Callable[[], object]:
    """Render the same body with a precompiled plain Jinja2 template; split it by hand."""
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True)
    template = env.from_string(HELLO.split("---\n", 2)[2].strip())

    def floor() -> object:
        text = template.render(VARIABLES)
        system, _, user = text.partition("\n\nUser: ")
        return [
            {"role": "system", "content": system.removeprefix("System: ")},
            {"role": "user", "content": user},
        ]

    return floor


def import_time(module: str, runs: int = 9) -> float:
    """Median wall time of ``python -c 'import module'`` minus an empty interpreter start."""

    def run(code: str) -> float:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t=time.perf_counter(); {code}; print(time.perf_counter()-t)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout)

    return statistics.median(run(f"import {module}") for _ in range(runs))


def main() -> None:
    import promptdock

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "hello.prompt").write_text(HELLO)
        prompt = promptdock.parse_prompt(HELLO, name="hello")
        dock = promptdock.PromptDock(prompt_directory=folder)
        promptdock.global_prompt_directory = folder
        n = 20_000
        results[FLOOR] = per_call(floor_fn(), n)
        results["PromptFile.render (validate + render + roles)"] = per_call(
            lambda: prompt.render(VARIABLES), n
        )
        results["PromptDock.render (load via plugin + render hook)"] = per_call(
            lambda: dock.render("hello", VARIABLES), n
        )
        results["PromptDock.completion(mock_response=...)"] = per_call(
            lambda: dock.completion(
                model="dotprompt/gpt-4",
                prompt_id="hello",
                prompt_variables=VARIABLES,
                mock_response="Paris",
            ),
            n,
        )
        results["promptdock.completion(mock_response=...) (globals)"] = per_call(
            lambda: promptdock.completion(
                model="dotprompt/gpt-4",
                prompt_id="hello",
                prompt_variables=VARIABLES,
                mock_response="Paris",
            ),
            n,
        )
    floor = results[FLOOR]
    print(f"{'measurement':58} {'µs/call':>9} {'x floor':>8}")
    for name, seconds in results.items():
        print(f"{name:58} {seconds * 1e6:9.2f} {seconds / floor:8.2f}")
    baseline = import_time("sys")
    imports = {m: import_time(m) for m in ("jinja2", "promptdock")}
    print(f"\nimport time (median of 9 fresh processes; 'import sys' = {baseline * 1e3:.1f} ms):")
    for module, seconds in imports.items():
        print(f"  import {module:12} {seconds * 1e3:7.1f} ms")
    target = results["PromptDock.completion(mock_response=...)"] / floor
    print(
        f"\ncompletion(mock) / floor = {target:.2f}x (target <= 3x): "
        f"{'met' if target <= 3 else 'NOT met'}"
    )
    print(
        f"import promptdock = {imports['promptdock'] * 1e3:.0f} ms (target <= 150 ms): "
        f"{'met' if imports['promptdock'] <= 0.150 else 'NOT met'}"
    )
    out = Path(__file__).parent / "results-core.json"
    out.write_text(
        json.dumps(
            {
                "per_call_seconds": results,
                "ratios_to_floor": {k: v / floor for k, v in results.items()},
                "import_seconds": imports,
                "python": sys.version,
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
