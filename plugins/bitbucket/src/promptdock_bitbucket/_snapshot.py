"""What is known about a repository at one commit: files, absent paths, the listing, prompts.

A commit's content never changes, so nothing in a :class:`Snapshot` is ever invalidated; it
only grows as more of the commit is read. Moving to a newer commit makes a new snapshot, which
starts from the old one minus the files that changed (see ``BitbucketSource``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from promptdock import PromptFile, PromptInfo
from promptdock.ids import PROMPT_SUFFIX, group_prompt_paths
from promptdock.models import IncludeResolver
from promptdock_bitbucket._disk import SavedSnapshot

__all__ = ["PromptKey", "Snapshot", "State"]

PromptKey = tuple[str, int | None]


class Snapshot:
    """The repository at commit ``sha``, as far as it has been read.

    :ivar files: repository path → bytes, for every file read so far.
    :ivar missing: repository paths known not to exist at ``sha``.
    :ivar tree: every file under the prompt folder (path → size if known), once listed.
    :ivar prompts: parsed prompts by ``(prompt_id, version)`` as asked, ``is_stale=False``.
    :ivar stale_prompts: the same with ``is_stale=True``, made when serving after a failure.
    :ivar listing: the source's listing at ``sha``, once computed.
    :ivar dirty: whether something was learnt since the last save to disk.
    :ivar resolver: the include resolver of this commit (one object, set by the source).
    """

    def __init__(self, sha: str, folder: str) -> None:
        self.sha = sha
        self.folder = folder
        self.files: dict[str, bytes] = {}
        self.missing: set[str] = set()
        self.tree: dict[str, int | None] | None = None
        self.prompts: dict[PromptKey, PromptFile] = {}
        self.stale_prompts: dict[PromptKey, PromptFile] = {}
        self.listing: list[PromptInfo] | None = None
        self.dirty = False
        self.resolver: IncludeResolver | None = None
        self._index: dict[str, PromptInfo] | None = None

    def __repr__(self) -> str:
        return f"Snapshot({self.sha[:12]}, files={len(self.files)}, listed={self.tree is not None})"

    @classmethod
    def from_saved(cls, saved: SavedSnapshot, folder: str) -> Snapshot:
        """A snapshot rebuilt from disk."""
        snap = cls(saved.sha, folder)
        snap.files = dict(saved.files)
        snap.missing = set(saved.missing)
        snap.tree = None if saved.tree is None else dict(saved.tree)
        return snap

    def saved(self, ref_name: str | None) -> SavedSnapshot:
        """What goes to disk (copies, so other threads may keep adding)."""
        tree = self.tree
        return SavedSnapshot(
            sha=self.sha,
            files=self.files.copy(),
            missing=frozenset(self.missing.copy()),
            tree=None if tree is None else tree.copy(),
            ref_name=ref_name,
        )

    def set_tree(self, tree: Mapping[str, int | None]) -> None:
        """Record the listing of the prompt folder."""
        self.tree = dict(tree)
        self._index = None
        self.dirty = True

    def exists(self, path: str) -> bool | None:
        """Whether ``path`` exists at ``sha``: ``None`` when that is not known yet."""
        if path in self.files:
            return True
        if path in self.missing:
            return False
        if self.tree is not None:
            return path in self.tree
        return None

    def index(self) -> dict[str, PromptInfo] | None:
        """The listed prompt ids (versions folded in), ``None`` before the folder is listed."""
        index = self._index
        if index is None and self.tree is not None:
            prefix = f"{self.folder}/" if self.folder else ""
            relative = [p[len(prefix) :] for p in self.tree if p.startswith(prefix)]
            infos = group_prompt_paths(
                (p for p in relative if p.endswith(PROMPT_SUFFIX)), source=""
            )
            index = self._index = {info.id: info for info in infos}
        return index


@dataclass(frozen=True, slots=True)
class State:
    """What a source serves right now; replaced as a whole, never changed in place.

    :ivar snapshot: the commit being served.
    :ivar prompts: ``snapshot.prompts`` or, when ``stale``, ``snapshot.stale_prompts``.
    :ivar stale: the last refresh failed; results are flagged ``is_stale``.
    :ivar fresh_until: ``time.monotonic()`` after which the ref is re-resolved (in the
        background).
    :ivar must_wait: set by ``invalidate``: the next load waits for the refresh.
    """

    snapshot: Snapshot
    prompts: dict[PromptKey, PromptFile] = field(repr=False)
    stale: bool
    fresh_until: float
    must_wait: bool = False
