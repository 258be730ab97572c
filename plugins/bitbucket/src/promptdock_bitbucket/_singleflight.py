"""Single-flight calls: concurrent callers of the same key share one execution.

N threads asking for the same cold prompt cause one fetch: the first runs the work, the
others wait for its result (or its exception).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _Call:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Runs ``fn`` once per key at a time; callers arriving meanwhile get the same outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}

    def run(self, key: Hashable, fn: Callable[[], T]) -> T:
        """``fn()``, or the result of the call already running for ``key``."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            result: T = call.value
            return result
        try:
            call.value = fn()
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
        return call.value  # type: ignore[no-any-return]
