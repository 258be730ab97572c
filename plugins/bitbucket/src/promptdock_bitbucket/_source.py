"""One configured Bitbucket source: prompts by id, served from a commit-pinned cache.

The order on each load (design notes §5): fresh → stale-while-revalidate → stale-on-error
(``is_stale``) → the last-known-good snapshot on disk → error.

* A warm load within ``cache_ttl`` is two dict lookups and a clock read: no I/O, no parse.
* Past the TTL the cached prompt is returned at once and one background thread re-resolves
  the ref. When the SHA moved, it asks which files changed (diffstat), carries the rest over,
  fetches the changed files that were in use, and only then swaps the new commit in.
* If the refresh fails, the old commit keeps being served with ``is_stale=True``.
* Cold loads resolve the ref once for all threads and fetch each file once (single-flight).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from promptdock import (
    ConfigError,
    PromptdockError,
    PromptFile,
    PromptInfo,
    SourceConfig,
)
from promptdock.ids import check_prompt_id
from promptdock_bitbucket._api import RepoApi, make_api
from promptdock_bitbucket._config import Settings, settings_from
from promptdock_bitbucket._disk import SavedSnapshot, SnapshotStore
from promptdock_bitbucket._http import ApiError, NotFound, Unreachable
from promptdock_bitbucket._reader import CommitReader
from promptdock_bitbucket._snapshot import Snapshot, State

if TYPE_CHECKING:
    from cachetools import LRUCache

__all__ = ["BitbucketSource"]

_log = logging.getLogger("promptdock.bitbucket")
_RECENT_COMMITS = 4


class BitbucketSource:
    """The prompts of one ``SourceConfig`` of kind ``bitbucket``; safe to share between threads.

    :param config: the validated source config.
    :param api: the repository adapter (built from the config when omitted).
    :param clock: monotonic seconds (tests may pass their own).
    """

    def __init__(
        self,
        config: SourceConfig,
        *,
        api: RepoApi | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = config.name
        self.settings: Settings = settings_from(config.options)
        self.api: RepoApi = api or make_api(self.settings)
        self._clock = clock
        self._store = self._make_store()
        self._state: State | None = None
        self._lock = threading.Lock()
        self._cold = threading.Lock()
        self._refreshing = False
        self._again = False
        self._refresh_done = threading.Event()
        self._refresh_done.set()
        self._default_branch: str | None = None
        self._saved_ref_name: str | None = None
        from cachetools import LRUCache  # here, not at plugin load: sources are made on use

        # Commits served lately: moving back to one (a revert) reads nothing again.
        self._recent: LRUCache[str, Snapshot] = LRUCache(maxsize=_RECENT_COMMITS)
        self._last_error: str | None = None
        self._last_refresh: float | None = None
        self._refresh_count = 0
        self.reader = CommitReader(config, self.settings, self.api, lambda: self.ref_label)

    def __repr__(self) -> str:
        return f"BitbucketSource({self.name!r}, {self.settings.location!r}, ref={self.ref_label!r})"

    def _make_store(self) -> SnapshotStore | None:
        s = self.settings
        if s.cache_dir is None:
            return None
        identity = {
            "api": s.api,
            "base_url": s.base_url,
            "repository": s.location,
            "ref": s.branch or s.ref or "",
            "prompt_folder": s.prompt_folder,
        }
        return SnapshotStore(s.cache_dir, identity)

    # -- names for messages ----------------------------------------------------------------

    @property
    def ref_label(self) -> str:
        """The branch, tag or SHA followed (``"default branch"`` until it is known)."""
        s = self.settings
        return s.branch or s.ref or self._default_branch or self._saved_ref_name or "default branch"

    # -- loading ---------------------------------------------------------------------------

    def load(self, prompt_id: str, version: int | None) -> PromptFile:
        """The prompt ``prompt_id`` (version ``version``) at the ref's current commit.

        :raises UnsafePromptIdError: the id would leave the prompt folder.
        :raises PromptNotFoundError: no such prompt at that commit (closest ids suggested).
        :raises PromptSyntaxError: the file is broken.
        :raises SourceAuthError: the token was rejected (401) or lacks access (403).
        :raises SourceUnavailableError: Bitbucket is unreachable and nothing is cached.
        """
        state = self._state
        if state is not None:
            prompt = state.prompts.get((prompt_id, version))
            if prompt is not None:
                if self._clock() < state.fresh_until:
                    return prompt
                if not state.must_wait:
                    self._revalidate()
                    return prompt
        return self._load_slow(prompt_id, version)

    def _load_slow(self, prompt_id: str, version: int | None) -> PromptFile:
        check_prompt_id(prompt_id, source=self.name)
        state = self._current_state()
        key = (prompt_id, version)
        prompt = state.prompts.get(key)
        if prompt is not None:
            return prompt
        prompt = self.reader.load(state.snapshot, state.stale, prompt_id, version)
        self._save_if_dirty(state.snapshot)
        return prompt

    def _current_state(self) -> State:
        state = self._state
        if state is None:
            with self._cold:
                state = self._state
                if state is None:
                    state = self._state = self._cold_start()
            return state
        if self._clock() >= state.fresh_until:
            self._revalidate()
            if state.must_wait:
                if not self._refresh_done.wait(self.settings.timeout):
                    # Bitbucket is slow: stop holding callers, serve what is cached meanwhile.
                    with self._lock:
                        if self._state is state:
                            self._state = dataclasses.replace(state, must_wait=False)
                state = self._state or state
        return state

    # -- listing ---------------------------------------------------------------------------

    def listing(self) -> list[PromptInfo]:
        """Every prompt id at the current commit; broken files carry ``error``."""
        snap = self._current_state().snapshot
        listing = self.reader.listing(snap)
        self._save_if_dirty(snap)
        return listing

    # -- resolving and refreshing ----------------------------------------------------------

    def _resolve(self) -> str:
        """The current SHA of the configured ref (network)."""
        s = self.settings
        pinned = s.pinned_sha
        if pinned is not None:
            return pinned
        try:
            if s.ref is not None:
                return self.api.resolve_ref(s.ref)
            branch = s.branch or self._default_branch
            if branch is None:
                branch = self._default_branch = self.api.default_branch()
            return self.api.resolve_branch(branch)
        except NotFound:
            key = "ref" if s.ref is not None else "branch"
            raise ConfigError(
                f"source {self.name!r}: {key} {self.ref_label!r} does not exist in Bitbucket "
                f"repository {s.location} (or the repository does not); check {key!r}, "
                f"'workspace'/'project_key' and 'repository'",
                key=key,
            ) from None

    def _cold_start(self) -> State:
        saved = self._store.load() if self._store is not None else None
        try:
            # With a snapshot on disk, fail over to it fast rather than retrying for seconds.
            sha = self._resolve_once() if saved is not None else self._resolve()
        except (Unreachable, ApiError) as exc:
            self._note_error(exc)
            if saved is None:
                raise self.reader.unavailable(exc, "cannot resolve the ref") from None
            _log.warning(
                "source %r: Bitbucket is unreachable (%s); serving the snapshot of %s saved on "
                "disk, marked stale",
                self.name,
                self._last_error,
                saved.sha[:12],
            )
            self._saved_ref_name = saved.ref_name  # names the branch while offline
            snap = Snapshot.from_saved(saved, self.settings.prompt_folder)
            return State(snap, snap.stale_prompts, True, self._clock() + self.settings.cache_ttl)
        if saved is not None and saved.sha == sha:
            snap = Snapshot.from_saved(saved, self.settings.prompt_folder)
        elif saved is not None:
            old = Snapshot.from_saved(saved, self.settings.prompt_folder)
            snap = self.reader.advance(old, sha, prefetch=False)
        else:
            snap = Snapshot(sha, self.settings.prompt_folder)
        self._last_refresh = time.time()
        return State(snap, snap.prompts, False, self._expiry())

    def _resolve_once(self) -> str:
        # Safe to switch retries off on the shared client: nothing else runs before the
        # first state exists (this runs under the cold-start lock).
        http = self.api.http
        http.retries = 0
        try:
            return self._resolve()
        finally:
            http.retries = None

    def _expiry(self) -> float:
        if self.settings.pinned_sha is not None:
            return math.inf  # a commit never moves
        return self._clock() + self.settings.cache_ttl

    def _revalidate(self) -> None:
        """Start the background refresh unless one is running (then ask it to go again)."""
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
            self._refresh_done.clear()
        thread = threading.Thread(
            target=self._refresh_loop,
            name=f"promptdock-bitbucket-refresh[{self.name}]",
            daemon=True,
        )
        thread.start()

    def _refresh_loop(self) -> None:
        try:
            while True:
                self._refresh_once()
                with self._lock:
                    if not self._again:
                        self._refreshing = False
                        break
                    self._again = False
        finally:
            with self._lock:
                self._refreshing = False
            self._refresh_done.set()

    def _refresh_once(self) -> None:
        state = self._state
        if state is None:
            return
        old = state.snapshot
        try:
            sha = self._resolve()
            if sha == old.sha:
                snap = old
            else:
                snap = self._recent.get(sha) or self.reader.advance(old, sha, prefetch=True)
        except Exception as exc:  # anything: the thread must flip the state, never die
            self._note_error(exc)
            _log.warning(
                "source %r: refreshing %s failed (%s); serving %s, marked stale",
                self.name,
                self.settings.location,
                self._last_error,
                old.sha[:12],
            )
            with self._lock:
                current = self._state or state
                snap = current.snapshot
                again = self._again
                expiry = -math.inf if again else self._expiry()
                self._state = State(snap, snap.stale_prompts, True, expiry, must_wait=again)
            return
        with self._lock:
            if snap is not old:
                self._recent[old.sha] = old
            again = self._again  # invalidated meanwhile: keep callers waiting for the next round
            expiry = -math.inf if again else self._expiry()
            self._state = State(snap, snap.prompts, False, expiry, must_wait=again)
            self._last_error = None
            self._last_refresh = time.time()
            self._refresh_count += 1
        self._save_if_dirty(snap, force=snap is not old)

    # -- invalidation, persistence, status --------------------------------------------------

    def invalidate(self, ref: str | None = None) -> bool:
        """Re-resolve the ref now, in the background; the next load waits for the answer (at
        most ``timeout`` seconds, then the cached commit is served until the refresh ends).

        :param ref: the branch or tag that moved (``refs/heads/x`` works too); ``None`` for
            any. A ref this source does not follow is ignored.
        :returns: whether this source follows ``ref`` and had something to refresh.
        """
        if not self._follows(ref) or self.settings.pinned_sha is not None:
            return False
        if ref is None and self.settings.branch is None and self.settings.ref is None:
            self._default_branch = None  # the main branch itself may have changed
        with self._lock:
            state = self._state
            if state is None:
                return False
            self._state = dataclasses.replace(state, fresh_until=-math.inf, must_wait=True)
            if self._refreshing:
                self._again = True  # a refresh that started before the push must go again
        self._revalidate()
        return True

    def _follows(self, ref: str | None) -> bool:
        if ref is None:
            return True
        name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        followed = self.settings.branch or self.settings.ref or self._default_branch
        return followed is None or followed == name

    def _save_if_dirty(self, snap: Snapshot, *, force: bool = False) -> None:
        store = self._store
        state = self._state
        if store is None or not (snap.dirty or force):
            return
        if state is not None and state.snapshot is not snap:
            return  # an older commit: the store keeps the newest only
        snap.dirty = False
        s = self.settings
        store.save(snap.saved(s.branch or s.ref or self._default_branch))

    def _note_error(self, exc: BaseException) -> None:
        if isinstance(exc, Unreachable):
            self._last_error = exc.cause
        elif isinstance(exc, PromptdockError | ApiError):
            self._last_error = str(exc)
        else:
            self._last_error = f"{type(exc).__name__}: {exc}"

    def status(self) -> dict[str, Any]:
        """A JSON-friendly health report (for a readiness endpoint); never holds the token.

        Keys: ``source``, ``location``, ``api``, ``ref``, ``state`` (``cold``, ``fresh``,
        ``expired``, ``refreshing`` or ``stale``), ``sha``, ``is_stale``, ``last_error``,
        ``last_refresh`` (epoch seconds), ``refreshes``, ``cached_files``, ``listed``.
        """
        state = self._state
        if state is None:
            kind = "cold"
        elif state.stale:
            kind = "stale"
        elif self._refreshing:
            kind = "refreshing"
        elif self._clock() >= state.fresh_until:
            kind = "expired"
        else:
            kind = "fresh"
        return {
            "source": self.name,
            "location": self.settings.location,
            "api": self.settings.api,
            "ref": self.ref_label,
            "state": kind,
            "sha": state.snapshot.sha if state else None,
            "is_stale": bool(state and state.stale),
            "last_error": self._last_error,
            "last_refresh": self._last_refresh,
            "refreshes": self._refresh_count,
            "cached_files": len(state.snapshot.files) if state else 0,
            "listed": bool(state and state.snapshot.tree is not None),
        }

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no background refresh is running; ``False`` if ``timeout`` ran out.

        For tests, tools and orderly shutdown; serving never needs it.
        """
        return self._refresh_done.wait(timeout)

    def close(self) -> None:
        """Wait briefly for a running refresh, then close pooled connections."""
        self._refresh_done.wait(5.0)
        self.api.http.close()

    def saved_snapshot(self) -> SavedSnapshot | None:
        """The snapshot on disk for this source, if any (for tools and tests)."""
        return self._store.load() if self._store is not None else None
