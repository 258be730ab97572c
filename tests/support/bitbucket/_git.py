"""A real git repository driven through the ``git`` CLI, for tests that need a Git host.

Commits are written with ``git fast-import`` into a bare repository, so a test can commit to any
branch (a simulated push) without a work tree and 1,000 files cost one subprocess. Reads at a
commit are cached: content at a SHA never changes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["CommitInfo", "FileChange", "GitRepo", "TreeEntry"]

EntryKind = Literal["blob", "tree", "commit"]
ChangeStatus = Literal["added", "removed", "modified", "renamed"]

_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_HEX = re.compile(r"[0-9a-f]{4,40}")
# Fixed identity and clock: the same test builds the same SHAs on every run.
_NAME, _EMAIL = "Promptdock Tests", "tests@promptdock.invalid"
_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
_KINDS: dict[str, EntryKind] = {"blob": "blob", "tree": "tree", "commit": "commit"}
_STATUS: dict[str, ChangeStatus] = {"A": "added", "D": "removed", "M": "modified", "R": "renamed"}


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a commit's tree: a file (``blob``), a folder (``tree``) or a submodule."""

    path: str
    kind: EntryKind
    mode: str
    object_id: str
    size: int | None


@dataclass(frozen=True)
class CommitInfo:
    """The parts of a commit a Git host reports about it."""

    sha: str
    parents: tuple[str, ...]
    author: str
    timestamp: int
    message: str


@dataclass(frozen=True)
class FileChange:
    """One changed file between two commits, with renames detected."""

    status: ChangeStatus
    old_path: str | None
    new_path: str | None
    lines_added: int
    lines_removed: int


class GitRepo:
    """A bare git repository in a folder, written with ``fast-import`` and read with plumbing.

    ``GitRepo(tmp_path / "repo")`` creates the repository (its first branch is ``main``);
    ``GitRepo()`` uses a fresh temporary folder that :meth:`cleanup` removes.
    """

    def __init__(self, path: Path | None = None, *, initial_branch: str = "main") -> None:
        self._owns_dir = path is None
        self._initial_branch = initial_branch
        self.path = Path(tempfile.mkdtemp(prefix="promptdock-git-")) if path is None else path
        self.path.mkdir(parents=True, exist_ok=True)
        # No system or global config: a developer's commit.gpgsign or hooks must not leak in.
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.path),
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_COMMITTER_DATE": f"{_EPOCH} +0000",  # for annotated tags
        }
        self._clock = 0
        self._write_lock = threading.Lock()
        self._trees: dict[str, dict[str, TreeEntry]] = {}
        self._children: dict[str, dict[str, list[TreeEntry]]] = {}
        self._blobs: dict[str, bytes] = {}
        self._commits: dict[str, CommitInfo] = {}
        self._short: dict[str, str] = {}
        self._diffs: dict[tuple[str, str, tuple[str, ...]], tuple[FileChange, ...]] = {}
        self._git("init", "-q", "--bare", "-b", initial_branch, str(self.path))
        # The identity lives in the repository's own config (one write instead of two `git config`).
        with (self.path / "config").open("a", encoding="utf-8") as config:
            config.write(f"[user]\n\tname = {_NAME}\n\temail = {_EMAIL}\n")

    def __repr__(self) -> str:
        return f"GitRepo({str(self.path)!r})"

    def cleanup(self) -> None:
        """Remove the folder if this object created it."""
        if self._owns_dir:
            shutil.rmtree(self.path, ignore_errors=True)

    # -- writing ------------------------------------------------------------------------------

    def commit(
        self,
        files: Mapping[str, str | bytes | None],
        message: str = "Update files",
        *,
        branch: str = "main",
        executable: Iterable[str] = (),
    ) -> str:
        """Commit ``files`` on top of ``branch`` (creating it) and return the new commit's SHA.

        A value of ``None`` deletes that file; paths use ``/``. This is how tests simulate a push.
        """
        ref = f"refs/heads/{branch}"
        execs = set(executable)
        with self._write_lock:
            parent = self.branches().get(branch)
            self._clock += 1
            stamp = f"{_NAME} <{_EMAIL}> {_EPOCH + 60 * self._clock} +0000"
            chunks = [
                f"commit {ref}\nmark :1\ncommitter {stamp}\n".encode(),
                _data(message.encode()),
            ]
            if parent is not None:
                chunks.append(f"from {parent}\n".encode())
            for path, content in files.items():
                _check_path(path)
                if content is None:
                    chunks.append(f"D {path}\n".encode())
                    continue
                mode = "100755" if path in execs else "100644"
                raw = content.encode() if isinstance(content, str) else content
                chunks += [f"M {mode} inline {path}\n".encode(), _data(raw)]
            chunks.append(b"done\n")
            marks = self.path / "promptdock-marks"
            self._git(
                "fast-import",
                "--quiet",
                "--done",
                "--force",
                f"--export-marks={marks}",
                stdin=b"".join(chunks),
            )
            # The marks file maps ":1" to the new commit: cheaper than asking git again.
            sha = marks.read_text(encoding="ascii").split()[1]
        self._short[sha] = sha
        return sha

    def branch(self, name: str, at: str | None = None) -> str:
        """Create or move branch ``name`` to ``at`` (default: the first branch's tip); return
        its SHA. Moving a branch is how tests simulate a force-push."""
        sha = self.resolve(at or f"refs/heads/{self._initial_branch}")
        self._git("update-ref", f"refs/heads/{name}", sha)
        return sha

    def delete_branch(self, name: str) -> None:
        """Delete branch ``name`` (a simulated ``git push --delete``)."""
        self._git("update-ref", "-d", f"refs/heads/{name}")

    def tag(self, name: str, at: str | None = None, *, message: str | None = None) -> str:
        """Tag ``at`` (default: the first branch's tip) as ``name``; annotated when ``message``
        is given. Returns the SHA of the tagged commit.
        """
        sha = self.resolve(at or f"refs/heads/{self._initial_branch}")
        if message is None:
            self._git("update-ref", f"refs/tags/{name}", sha)
        else:
            self._git("tag", "-a", "-m", message, "--", name, sha)
        return sha

    # -- refs ---------------------------------------------------------------------------------

    def branches(self) -> dict[str, str]:
        """Every branch name mapped to its tip SHA (read fresh: branches move)."""
        return self._refs("refs/heads/")

    def tags(self) -> dict[str, str]:
        """Every tag name mapped to the SHA of the commit it points at."""
        return self._refs("refs/tags/")

    def resolve(self, ref: str) -> str:
        """The full SHA of the commit ``ref`` names: a full or short SHA, a branch, a tag or a
        ``refs/...`` name. Raises :class:`LookupError` when there is no such commit."""
        sha = self.try_resolve(ref)
        if sha is None:
            raise LookupError(f"no commit {ref!r} in the test repository {self.path}")
        return sha

    def try_resolve(self, ref: str) -> str | None:
        """Like :meth:`resolve` but returns ``None`` for an unknown ref."""
        known = self._short.get(ref)
        if known is not None and len(ref) == 40:  # the hot path: clients send full SHAs
            return known
        refs = self._refs("refs/")
        if ref.startswith("refs/"):
            return refs.get(ref[len("refs/") :])
        return refs.get(f"heads/{ref}") or refs.get(f"tags/{ref}") or self.commit_sha(ref)

    def commit_sha(self, hex_prefix: str) -> str | None:
        """The full SHA of the commit a full or abbreviated SHA names, or ``None``."""
        if not _HEX.fullmatch(hex_prefix):
            return None
        sha = self._short.get(hex_prefix)
        if sha is None:
            out = self._git("rev-parse", "--verify", "-q", f"{hex_prefix}^{{commit}}", check=False)
            # Only hits are cached: a later commit can make an unknown prefix valid.
            sha = out.decode().strip() or None
            if sha is not None:
                self._short[hex_prefix] = self._short[sha] = sha
        return sha

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two commits, or ``None`` for unrelated histories."""
        out = self._git("merge-base", self._full(a), self._full(b), check=False)
        return out.decode().strip() or None

    # -- reading at a commit (cached: immutable) -----------------------------------------------

    def tree(self, sha: str) -> Mapping[str, TreeEntry]:
        """Every file and folder of commit ``sha``, keyed by path, in git's tree order."""
        sha = self._full(sha)
        entries = self._trees.get(sha)
        if entries is None:
            entries = {}
            children: dict[str, list[TreeEntry]] = {"": []}
            raw = self._git("ls-tree", "-r", "-t", "-l", "-z", "--full-tree", sha)
            for record in raw.decode().split("\0"):
                if not record:
                    continue
                meta, path = record.split("\t", 1)
                mode, kind, oid, size = meta.split()
                entry = TreeEntry(path, _kind(kind), mode, oid, None if size == "-" else int(size))
                entries[path] = entry
                children.setdefault(path.rpartition("/")[0], []).append(entry)
                if entry.kind == "tree":
                    children.setdefault(path, [])
            # Publish the index before the tree: a reader that sees the tree sees both.
            self._children[sha] = children
            self._trees[sha] = entries
        return entries

    def children(self, sha: str, folder: str) -> Sequence[TreeEntry]:
        """The direct entries of ``folder`` (``""`` is the root) at commit ``sha``."""
        sha = self._full(sha)
        self.tree(sha)
        return self._children[sha].get(folder, ())

    def is_folder(self, sha: str, path: str) -> bool:
        """Whether ``path`` is a folder (``""`` is the root) at commit ``sha``."""
        sha = self._full(sha)
        self.tree(sha)
        return path in self._children[sha]

    def read(self, sha: str, path: str) -> bytes:
        """The bytes of file ``path`` at commit ``sha``; :class:`LookupError` if it is absent."""
        entry = self.tree(sha).get(path)
        if entry is None or entry.kind == "tree":
            raise LookupError(f"no file {path!r} at {sha} in {self.path}")
        return self.blob(entry.object_id) if entry.kind == "blob" else entry.object_id.encode()

    def blob(self, object_id: str) -> bytes:
        """The content of the blob ``object_id``."""
        data = self._blobs.get(object_id)
        if data is None:
            data = self._blobs[object_id] = self._git("cat-file", "blob", object_id)
        return data

    def commit_info(self, sha: str) -> CommitInfo:
        """Parents, author, time and message of commit ``sha``."""
        sha = self._full(sha)
        info = self._commits.get(sha)
        if info is None:
            raw = self._git("show", "-s", "--format=%H%x00%P%x00%an <%ae>%x00%ct%x00%B", sha)
            full, parents, author, stamp, message = raw.decode().split("\0", 4)
            info = CommitInfo(
                full, tuple(parents.split()), author, int(stamp), message.rstrip("\n")
            )
            self._commits[sha] = info
        return info

    def log(
        self, rev: str, paths: Sequence[str] = (), *, skip: int = 0, limit: int = 100
    ) -> list[str]:
        """SHAs reachable from ``rev`` (touching ``paths`` if given), newest first."""
        args = ["rev-list", f"--skip={skip}", f"--max-count={limit}", self._full(rev), "--", *paths]
        return self._git(*args).decode().split()

    def diff(self, old: str | None, new: str, paths: Sequence[str] = ()) -> tuple[FileChange, ...]:
        """Files changed from ``old`` (``None``: the empty tree) to ``new``, below ``paths``."""
        key = (_EMPTY_TREE if old is None else self._full(old), self._full(new), tuple(paths))
        changes = self._diffs.get(key)
        if changes is None:
            changes = self._diffs[key] = self._compute_diff(*key)
        return changes

    # -- internals ----------------------------------------------------------------------------

    def _full(self, ref: str) -> str:
        # Caches are keyed by full SHA: a branch name would go stale when the branch moves.
        return ref if len(ref) == 40 and ref in self._short else self.resolve(ref)

    def _compute_diff(self, old: str, new: str, paths: tuple[str, ...]) -> tuple[FileChange, ...]:
        common = ("diff", "--no-color", "--no-ext-diff", "-M", "-z", old, new, "--", *paths)
        names = self._git(*common[:5], "--name-status", *common[5:]).decode().split("\0")
        counts = self._git(*common[:5], "--numstat", *common[5:]).decode().split("\0")
        lines: dict[str, tuple[int, int]] = {}
        i = 0
        while i < len(counts) and counts[i]:
            added, removed, path = counts[i].split("\t", 2)
            if not path:  # a rename: the old and new paths follow as their own fields
                path, i = counts[i + 2], i + 2
            lines[path] = (_count(added), _count(removed))
            i += 1
        result: list[FileChange] = []
        i = 0
        while i < len(names) and names[i]:
            status = _STATUS.get(names[i][0], "modified")
            if names[i][0] in "RC":
                old_path, new_path, i = names[i + 1], names[i + 2], i + 3
            else:
                old_path = new_path = names[i + 1]
                i += 2
            plus, minus = lines.get(new_path, (0, 0))
            result.append(
                FileChange(
                    status,
                    None if status == "added" else old_path,
                    None if status == "removed" else new_path,
                    plus,
                    minus,
                )
            )
        return tuple(result)

    def _refs(self, prefix: str) -> dict[str, str]:
        out = self._git(
            "for-each-ref", "--format=%(refname)%00%(objectname)%00%(*objectname)", prefix
        )
        refs: dict[str, str] = {}
        for line in out.decode().splitlines():
            name, target, peeled = line.split("\0")
            refs[name[len(prefix) :]] = peeled or target
        return refs

    def _git(self, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
        done = subprocess.run(
            ["git", "--literal-pathspecs", "-C", str(self.path), *args],
            input=stdin,
            capture_output=True,
            env=self._env,
            check=False,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"git {args[0]} failed in {self.path}: {done.stderr.decode().strip()}"
            )
        return done.stdout


def _data(raw: bytes) -> bytes:
    return b"data %d\n%b\n" % (len(raw), raw)


def _count(field: str) -> int:
    return 0 if field == "-" else int(field)  # "-" marks a binary file


def _kind(kind: str) -> EntryKind:
    try:
        return _KINDS[kind]
    except KeyError:
        raise RuntimeError(f"unexpected git object type {kind!r} in a tree") from None


def _check_path(path: str) -> None:
    parts = path.split("/")
    if not path or "\n" in path or any(p in ("", ".", "..") for p in parts) or path.startswith('"'):
        raise ValueError(f"cannot commit {path!r}: use a relative path like 'prompts/hello.prompt'")
