"""Import time and resident memory of promptdock and LiteLLM, in fresh processes.

Each run is a new ``python -X importtime probe.py once MODULE ...``: it imports the library
first, serves the seed prompt once with ``mock_response``, and reports its resident memory.
Runs alternate between the libraries (and a bare interpreter, the baseline), so both see
the same machine; the report gives medians.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.prompts import HELLO
from bench.settings import Settings
from bench.stats import ratio
from bench.workers import Interpreter, run_once

__all__ = ["METHOD", "cumulative_import_us", "measure_imports"]

METHOD = (
    "{runs} fresh processes per library, alternating: `python -X importtime probe.py once` "
    "imports the library first (import time = the library's cumulative line), then serves "
    "the seed prompt once with mock_response; resident memory (VmRSS) is read from "
    "/proc/self/status after the import and after that call. Medians."
)
"""How the import and memory figures were measured, for the report."""


def cumulative_import_us(importtime: str, module: str) -> float:
    """The cumulative microseconds of the top-level ``import module`` in ``-X importtime``
    output; NaN when the module was not imported at top level."""
    for line in importtime.splitlines():
        parts = line.split("|")
        # "import time: self [us] | cumulative | imported package"; nesting adds spaces.
        if len(parts) == 3 and parts[2].rstrip() == f" {module}":
            return float(parts[1])
    return float("nan")


def _median(runs: list[dict[str, Any]], key: str) -> float:
    values = [float(run[key]) for run in runs if key in run]
    return statistics.median(values) if values else float("nan")


def measure_imports(
    settings: Settings, interpreters: list[Interpreter], prompt_dir: Path, work: Path
) -> dict[str, Any]:
    """Import time, first-call time and memory per library (keys: the module names), plus
    ``"python"`` for the bare interpreter and ``ratios``."""
    per_tool: dict[str, list[dict[str, Any]]] = {}
    variables = json.dumps(HELLO.variables)
    baseline = Interpreter("-", interpreters[0].python)
    for _ in range(settings.import_runs):
        for interpreter in [baseline, *interpreters]:
            args = [interpreter.module, str(prompt_dir), HELLO.prompt_id, variables]
            result, stderr = run_once(interpreter, args, work, settings.timeout)
            if interpreter.module != "-":
                result["importtime_us"] = cumulative_import_us(stderr, interpreter.module)
            per_tool.setdefault(interpreter.module, []).append(result)
    results: dict[str, Any] = {"method": METHOD.format(runs=settings.import_runs)}
    for module, runs in per_tool.items():
        name = "python" if module == "-" else module
        results[name] = {
            "runs": len(runs),
            "importtime_ms": _median(runs, "importtime_us") / 1e3,
            "import_wall_ms": _median(runs, "import_s") * 1e3,
            "first_call_ms": _median(runs, "first_call_s") * 1e3,
            "rss_after_import_mib": _median(runs, "rss_import_kib") / 1024,
            "rss_after_serve_mib": _median(runs, "rss_kib") / 1024,
            "peak_rss_mib": _median(runs, "hwm_kib") / 1024,
            "answer": runs[-1].get("content"),
        }
    if "litellm" in results and "promptdock" in results:
        ours, theirs = results["promptdock"], results["litellm"]
        results["ratios"] = {
            "import litellm/promptdock": ratio(theirs["importtime_ms"], ours["importtime_ms"]),
            "rss litellm/promptdock": ratio(
                theirs["rss_after_serve_mib"], ours["rss_after_serve_mib"]
            ),
            "first call litellm/promptdock": ratio(theirs["first_call_ms"], ours["first_call_ms"]),
        }
    return results
