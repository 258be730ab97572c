"""Summaries of timing samples: medians, percentiles and ratios, computed one way everywhere."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["quantile", "ratio", "summarize"]


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """``n``, median, p95, p99, min and max of ``values``, each multiplied by ``scale``."""
    if not values:
        return {"n": 0, "median": math.nan, "p95": math.nan, "p99": math.nan}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered) * scale,
        "p95": quantile(ordered, 0.95) * scale,
        "p99": quantile(ordered, 0.99) * scale,
        "min": ordered[0] * scale,
        "max": ordered[-1] * scale,
    }


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when either is missing or the denominator is zero."""
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator


def added_latency(
    targets: dict[str, dict[str, Any]], baseline: str
) -> dict[str, dict[str, dict[str, float]]]:
    """Per target and level: its median and p99 minus ``baseline``'s at that level.

    :param targets: ``{name: {level: {"latency_ms": {"median": ..., "p99": ...}}}}``.
    """
    reference = targets.get(baseline, {})
    added: dict[str, dict[str, dict[str, float]]] = {}
    for name, levels in targets.items():
        if name == baseline:
            continue
        for level, row in levels.items():
            base_row = reference.get(level)
            if base_row is None:
                continue
            added.setdefault(name, {})[level] = {
                key: row["latency_ms"][key] - base_row["latency_ms"][key]
                for key in ("median", "p99")
            }
    return added
