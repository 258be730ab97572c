"""The last-known-good snapshot on disk, so a restarted process serves prompts while offline.

Layout under ``cache_dir``::

    <key>.json          one index per (API root, repository, ref, prompt folder): the commit,
                        each file's content hash, the listing; never the token
    blobs/<sha256>      file contents, named by their SHA-256 (shared, written once)

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so a reader never sees half a file and a crash leaves the previous snapshot.
Files are created readable by the owner only: prompts may be confidential.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SavedSnapshot", "SnapshotStore", "store_key"]

_FORMAT = 1
_GC_MIN_AGE = 600.0  # seconds: never delete a blob another process may be about to index
_log = logging.getLogger("promptdock.bitbucket")


@dataclass(frozen=True)
class SavedSnapshot:
    """A snapshot as stored: the commit, file contents by path, known-absent paths, listing,
    and the branch name it was resolved from (for a source following the default branch)."""

    sha: str
    files: Mapping[str, bytes]
    missing: frozenset[str]
    tree: Mapping[str, int | None] | None
    ref_name: str | None = None
    saved_at: float | None = None


def store_key(identity: Mapping[str, str]) -> str:
    """The index name for a source identity (API root, repository, ref, folder)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


class SnapshotStore:
    """Loads and saves one source's snapshot under ``cache_dir``.

    :param identity: what the snapshot is of, written into the index for people reading it
        (``{"base_url": ..., "repository": ..., "ref": ...}``); it also names the index file.
    """

    def __init__(self, cache_dir: str, identity: Mapping[str, str]) -> None:
        self.cache_dir = cache_dir
        self.identity = dict(identity)
        self.index_path = os.path.join(cache_dir, store_key(identity) + ".json")
        self.blob_dir = os.path.join(cache_dir, "blobs")
        self._last_sha: str | None = None

    def __repr__(self) -> str:
        return f"SnapshotStore({self.index_path!r})"

    def load(self) -> SavedSnapshot | None:
        """The saved snapshot, or ``None`` (absent, unreadable or damaged: never raises)."""
        try:
            with open(self.index_path, encoding="utf-8") as handle:
                index = json.load(handle)
            return self._parse(index)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("ignoring the damaged snapshot %s: %s", self.index_path, exc)
            return None

    def _parse(self, index: Any) -> SavedSnapshot | None:
        if not isinstance(index, dict) or index.get("format") != _FORMAT:
            return None
        files: dict[str, bytes] = {}
        for path, digest in dict(index["files"]).items():
            data = self._read_blob(str(digest))
            if data is not None:
                files[str(path)] = data
        tree = index.get("tree")
        return SavedSnapshot(
            sha=str(index["sha"]),
            files=files,
            missing=frozenset(map(str, index.get("missing") or ())),
            tree=None if tree is None else {str(k): v for k, v in dict(tree).items()},
            ref_name=index.get("ref_name"),
            saved_at=float(index.get("saved_at") or 0.0),
        )

    def _read_blob(self, digest: str) -> bytes | None:
        try:
            with open(os.path.join(self.blob_dir, digest), "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            return None  # damaged: better to fetch again than to serve it
        return data

    def save(self, snapshot: SavedSnapshot) -> None:
        """Write ``snapshot`` (best effort: a full disk is logged, never raised)."""
        try:
            os.makedirs(self.blob_dir, mode=0o700, exist_ok=True)
            digests = {}
            for path, data in snapshot.files.items():
                digest = hashlib.sha256(data).hexdigest()
                target = os.path.join(self.blob_dir, digest)
                if not os.path.exists(target):
                    # No fsync: an index naming a lost blob only costs a fetch of that file.
                    _write_atomic(target, data, durable=False)
                digests[path] = digest
            index = {
                "format": _FORMAT,
                **self.identity,
                "sha": snapshot.sha,
                "ref_name": snapshot.ref_name,
                "saved_at": time.time(),
                "files": digests,
                "missing": sorted(snapshot.missing),
                "tree": None if snapshot.tree is None else dict(snapshot.tree),
            }
            _write_atomic(self.index_path, json.dumps(index, sort_keys=True).encode())
        except OSError as exc:
            _log.warning("could not save the prompt snapshot to %s: %s", self.cache_dir, exc)
            return
        if self._last_sha is not None and self._last_sha != snapshot.sha:
            self.collect_garbage()
        self._last_sha = snapshot.sha

    def collect_garbage(self) -> int:
        """Delete blobs no index refers to (older than ten minutes); returns how many."""
        referenced: set[str] = set()
        try:
            names = os.listdir(self.cache_dir)
            for name in names:
                if name.endswith(".json"):
                    referenced.update(_referenced_blobs(os.path.join(self.cache_dir, name)))
            blobs = os.listdir(self.blob_dir)
        except OSError:
            return 0
        removed = 0
        now = time.time()
        for name in blobs:
            path = os.path.join(self.blob_dir, name)
            with contextlib.suppress(OSError):
                if name not in referenced and now - os.stat(path).st_mtime > _GC_MIN_AGE:
                    os.remove(path)
                    removed += 1
        return removed


def _referenced_blobs(index_path: str) -> list[str]:
    try:
        with open(index_path, encoding="utf-8") as handle:
            files = json.load(handle).get("files", {})
        return [str(digest) for digest in files.values()]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def _write_atomic(path: str, data: bytes, *, durable: bool = True) -> None:
    import tempfile

    folder = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
