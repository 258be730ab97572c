"""The report's pictures, drawn from ``results.json`` with matplotlib (imported lazily: the
harness runs, and its smoke test passes, without it)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

__all__ = ["write_plots"]

COLORS = {
    "floor": "#7f7f7f",
    "upstream alone": "#2ca02c",
    "promptdock": "#1f77b4",
    "litellm": "#d62728",
}
"""One colour per tool, the same in every plot."""


def write_plots(results: dict[str, Any], out: Path) -> tuple[list[Path], str | None]:
    """Write every plot the results allow; returns the files and, if none could be drawn,
    why (for the report)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return [], "matplotlib is not installed, so there are no plots (nox -s bench installs it)"
    matplotlib.use("Agg")  # files only, no display
    written: list[Path] = []
    for draw in (_sdk, _proxy_throughput, _proxy_latency, _scale):
        path = draw(results, out)
        if path is not None:
            written.append(path)
    return written, None


def _finite(values: list[Any]) -> list[float]:
    return [float(v) if isinstance(v, int | float) else math.nan for v in values]


def _sdk(results: dict[str, Any], out: Path) -> Path | None:
    plt: Any = importlib.import_module("matplotlib.pyplot")

    mock = (results.get("sdk") or {}).get("mock")
    if not mock:
        return None
    figure, axes = plt.subplots(1, len(mock), figsize=(5 * len(mock), 4), squeeze=False)
    for axis, (prompt_id, row) in zip(axes[0], mock.items(), strict=True):
        for tool, described in row["us"].items():
            points = _finite(described["percentiles"])
            axis.plot(points, range(len(points)), label=tool, color=COLORS.get(tool))
        axis.set_xscale("log")
        axis.set_xlabel("µs per call (log)")
        axis.set_ylabel("percentile of calls")
        axis.set_title(f"{prompt_id}: {row['label']}", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("SDK completion(mock_response): per-call latency, cumulative")
    figure.tight_layout()
    path = out / "sdk_latency.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _proxy_rows(results: dict[str, Any]) -> tuple[list[int], dict[str, dict[str, Any]]] | None:
    proxy = results.get("proxy") or {}
    if "targets" not in proxy:
        return None
    return list(proxy["levels"]), proxy["targets"]


def _proxy_throughput(results: dict[str, Any], out: Path) -> Path | None:
    plt: Any = importlib.import_module("matplotlib.pyplot")

    found = _proxy_rows(results)
    if found is None:
        return None
    levels, targets = found
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, rows in targets.items():
        values = [rows.get(str(level), {}).get("rps") for level in levels]
        axis.plot(levels, _finite(values), marker="o", label=name, color=COLORS.get(name))
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xticks(levels, [str(level) for level in levels])
    axis.set_xlabel("client concurrency")
    axis.set_ylabel("requests per second (log)")
    axis.set_title("Proxy throughput, one worker, 127.0.0.1")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path = out / "proxy_throughput.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _proxy_latency(results: dict[str, Any], out: Path) -> Path | None:
    plt: Any = importlib.import_module("matplotlib.pyplot")

    found = _proxy_rows(results)
    if found is None:
        return None
    levels, targets = found
    figure, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 4), squeeze=False)
    for axis, level in zip(axes[0], levels, strict=True):
        for name, rows in targets.items():
            row = rows.get(str(level))
            if row is None:
                continue
            points = _finite(row["percentiles_ms"])
            axis.plot(points, range(len(points)), label=name, color=COLORS.get(name))
        axis.set_xscale("log")
        axis.set_xlabel("ms per request (log)")
        axis.set_title(f"concurrency {level}", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("percentile of requests")
    axes[0][-1].legend()
    figure.suptitle("Proxy latency distributions, cumulative")
    figure.tight_layout()
    path = out / "proxy_latency.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _scale(results: dict[str, Any], out: Path) -> Path | None:
    plt: Any = importlib.import_module("matplotlib.pyplot")

    sizes = (results.get("scale") or {}).get("sizes")
    if not sizes or len(sizes) < 2:
        return None
    counts = sorted(int(size) for size in sizes)
    rows = [sizes[str(count)] for count in counts]
    series = {
        "cold list_prompts()": [r["list_s"] * 1e6 for r in rows],
        "cold first render": [r["first_render_ms"] * 1e3 for r in rows],
        "warm render, one prompt": [r["warm_render_us"]["median"] for r in rows],
        "warm render, cycling prompts": [r["warm_render_cycling_us"]["median"] for r in rows],
    }
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, values in series.items():
        axis.plot(counts, _finite(values), marker="o", label=label)
    start = series["cold list_prompts()"][0]
    axis.plot(
        counts,
        [start * count / counts[0] for count in counts],
        linestyle=":",
        color="black",
        label="linear reference",
    )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("prompts in the folder (log)")
    axis.set_ylabel("µs (log)")
    axis.set_title("promptdock at scale (log-log)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = out / "scale.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
