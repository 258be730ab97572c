"""Pushes shared between worker processes, through a directory (``--workers N``).

Each worker has its own prompt caches, and a webhook delivery reaches only one of them. The
worker that receives it claims the delivery (a file created with ``O_EXCL``: exactly one worker
wins, so a retried delivery is applied once), invalidates its own sources and writes an event
file. The other workers apply event files they have not seen before serving a request from a
remote source, and every half second when idle; a local folder needs no invalidation.

The directory is made by ``promptdock serve`` for the lifetime of the server; with one worker
there is none and :class:`~promptdock.proxy.webhook.BitbucketWebhook` keeps its state in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["EVENTS_ENV", "KEEP_SECONDS", "SharedEvents"]

EVENTS_ENV = "PROMPTDOCK_PROXY_EVENTS"
"""Environment variable naming the shared directory of the workers of one server."""

KEEP_SECONDS = 600.0
"""Event and delivery files older than this are removed (a new worker starts cold anyway)."""

_RECENT_NS = 50_000_000  # a directory changed this recently may change again in one mtime tick

Apply = Callable[[Sequence[str], Sequence[str]], object]
"""Invalidates ``(source names, refs)`` in this process."""


class SharedEvents:
    """One worker's view of the shared directory.

    :param folder: the directory (created if missing).
    :param apply: what to do with another worker's event: invalidate its sources and refs.
    """

    def __init__(self, folder: str, apply: Apply) -> None:
        self.folder = folder
        self.apply = apply
        self._events = os.path.join(folder, "events")
        self._claims = os.path.join(folder, "deliveries")
        os.makedirs(self._events, exist_ok=True)
        os.makedirs(self._claims, exist_ok=True)
        self._lock = threading.Lock()
        self._counter = itertools.count()
        # Events older than this worker concern caches it never had.
        self._seen = set(os.listdir(self._events))
        self._mtime = self._stat()

    def _stat(self) -> int:
        try:
            return os.stat(self._events).st_mtime_ns
        except OSError:
            return 0

    def claim(self, delivery_id: str) -> bool:
        """Whether this worker is the first to see ``delivery_id`` (any worker, any time)."""
        name = hashlib.sha256(delivery_id.encode()).hexdigest()
        try:
            fd = os.open(os.path.join(self._claims, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def publish(self, sources: Sequence[str], refs: Sequence[str]) -> None:
        """Tell the other workers to invalidate ``sources`` for ``refs`` (already done here)."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter)}.json"
        temporary = os.path.join(self.folder, f".{name}")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"sources": list(sources), "refs": list(refs)}, handle)
        with self._lock:
            self._seen.add(name)
        # A rename is atomic: readers never see half an event.
        os.replace(temporary, os.path.join(self._events, name))
        self._prune()

    def catch_up(self) -> int:
        """Apply the events of other workers not applied yet; returns how many."""
        mtime = self._stat()
        if mtime == self._mtime and time.time_ns() - mtime > _RECENT_NS:
            return 0  # nothing new: one stat, the common case
        with self._lock:
            self._mtime = mtime
            names = sorted(set(os.listdir(self._events)) - self._seen)
            self._seen.update(names)
        applied = 0
        for name in names:
            try:
                with open(os.path.join(self._events, name), encoding="utf-8") as handle:
                    event = json.load(handle)
            except (OSError, ValueError):
                continue  # pruned meanwhile, or not ours
            self.apply(event.get("sources", []), event.get("refs", []))
            applied += 1
        return applied

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_SECONDS
        for folder in (self._events, self._claims):
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    with contextlib.suppress(OSError):
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
        with self._lock:
            self._seen.intersection_update(os.listdir(self._events))
