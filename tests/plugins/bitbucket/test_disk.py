"""The snapshot on disk: atomic, owner-only, self-checking, token-free, garbage-collected."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from promptdock_bitbucket._disk import SavedSnapshot, SnapshotStore

IDENTITY = {
    "api": "cloud",
    "base_url": "https://x/2.0",
    "repository": "acme/prompts",
    "ref": "main",
}


def snapshot(sha: str = "a" * 40, **files: bytes) -> SavedSnapshot:
    return SavedSnapshot(
        sha=sha,
        files={f"prompts/{k}.prompt": v for k, v in files.items()},
        missing=frozenset({"prompts/gone.prompt"}),
        tree={"prompts/hello.prompt": 5, "prompts/other.prompt": None},
        ref_name="main",
    )


def test_round_trip(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), IDENTITY)
    assert store.load() is None
    store.save(snapshot(hello=b"hello", other=b"other"))
    loaded = store.load()
    assert loaded is not None
    assert loaded.sha == "a" * 40
    assert dict(loaded.files) == {
        "prompts/hello.prompt": b"hello",
        "prompts/other.prompt": b"other",
    }
    assert loaded.missing == frozenset({"prompts/gone.prompt"})
    assert loaded.tree == {"prompts/hello.prompt": 5, "prompts/other.prompt": None}
    assert loaded.ref_name == "main"
    assert SnapshotStore(str(tmp_path), {**IDENTITY, "ref": "dev"}).load() is None


def test_files_are_private_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), IDENTITY)
    store.save(snapshot(hello=b"hello"))
    store.save(snapshot(hello=b"hello"))
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == sorted([Path(store.index_path).name, hashlib.sha256(b"hello").hexdigest()])
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.blob_dir).st_mode) == 0o700


def test_a_damaged_index_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(str(tmp_path), IDENTITY)
    Path(store.index_path).write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="promptdock.bitbucket"):
        assert store.load() is None
    assert "ignoring the damaged snapshot" in caplog.text


def test_a_damaged_blob_is_dropped_not_served(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), IDENTITY)
    store.save(snapshot(hello=b"hello", other=b"other"))
    Path(store.blob_dir, hashlib.sha256(b"hello").hexdigest()).write_bytes(b"tampered")
    loaded = store.load()
    assert loaded is not None
    assert dict(loaded.files) == {"prompts/other.prompt": b"other"}


def test_the_index_says_what_it_holds_and_nothing_secret(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), IDENTITY)
    store.save(snapshot(hello=b"hello"))
    index = json.loads(Path(store.index_path).read_text(encoding="utf-8"))
    assert {k: index[k] for k in IDENTITY} == IDENTITY
    assert set(index) == {
        *IDENTITY,
        "format",
        "sha",
        "ref_name",
        "saved_at",
        "files",
        "missing",
        "tree",
    }


def test_old_blobs_are_collected_when_the_commit_moves(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path), IDENTITY)
    store.save(snapshot("a" * 40, hello=b"v1"))
    old_blob = Path(store.blob_dir, hashlib.sha256(b"v1").hexdigest())
    an_hour_ago = time.time() - 3600
    os.utime(old_blob, (an_hour_ago, an_hour_ago))
    store.save(snapshot("b" * 40, hello=b"v2"))
    assert not old_blob.exists()
    loaded = store.load()
    assert loaded is not None
    assert dict(loaded.files) == {"prompts/hello.prompt": b"v2"}


def test_recent_blobs_survive_collection(tmp_path: Path) -> None:
    # Another process may have written a blob and not yet the index naming it.
    store = SnapshotStore(str(tmp_path), IDENTITY)
    store.save(snapshot("a" * 40, hello=b"v1"))
    store.save(snapshot("b" * 40, hello=b"v2"))
    assert Path(store.blob_dir, hashlib.sha256(b"v1").hexdigest()).exists()


def test_an_unwritable_folder_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    store = SnapshotStore(str(blocker / "cache"), IDENTITY)
    with caplog.at_level(logging.WARNING, logger="promptdock.bitbucket"):
        store.save(snapshot(hello=b"hello"))
    assert "could not save the prompt snapshot" in caplog.text
