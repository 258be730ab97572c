"""The figures ``docs/security.md`` quotes, counted while the security tests run.

Tests call :func:`count` as they go (payloads tried, inputs fuzzed, faults injected, requests
made); the ``conftest`` prints the totals at the end of the run under "security figures" and,
when ``PROMPTDOCK_FIGURES`` names a file, writes them there as JSON. Figures are counts, never
times.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["count", "totals"]

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def count(figure: str, n: int = 1) -> None:
    """Add ``n`` to ``figure`` (``"sandbox: payloads refused"``)."""
    with _lock:
        _counts[figure] += n


def totals() -> dict[str, int]:
    """Every figure counted so far, sorted by name."""
    with _lock:
        return dict(sorted(_counts.items()))
