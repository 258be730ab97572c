"""What the source needs from a Bitbucket flavour (Cloud 2.0 or Data Center 1.0).

Both adapters speak in full commit SHAs and repository paths (``prompts/hello.prompt``); the
source never sees a URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from promptdock_bitbucket._config import Settings
from promptdock_bitbucket._http import HttpClient, Unreachable

__all__ = ["Change", "RepoApi", "check_sha", "looks_like_sha", "make_api"]

_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_SHA_LIKE = re.compile(r"[0-9a-f]{7,40}")


@dataclass(frozen=True)
class Change:
    """One file changed between two commits (renames have both paths)."""

    status: Literal["added", "removed", "modified", "renamed"]
    old_path: str | None
    new_path: str | None


class RepoApi(Protocol):
    """Read-only access to one repository."""

    http: HttpClient

    def default_branch(self) -> str:
        """The repository's main branch name."""

    def resolve_branch(self, name: str) -> str:
        """The full SHA at the tip of branch ``name`` (``NotFound`` if there is none)."""

    def resolve_ref(self, ref: str) -> str:
        """The full SHA a tag, commit SHA (short or full) or branch names."""

    def read(self, sha: str, path: str) -> bytes:
        """The bytes of the file ``path`` at ``sha`` (``NotFound``, ``TooLarge``)."""

    def list_files(self, sha: str, folder: str) -> dict[str, int | None]:
        """Every file under ``folder`` (recursively) at ``sha``: path → size if known."""

    def changes(self, new: str, old: str, folder: str) -> list[Change] | None:
        """Files under ``folder`` that differ between ``old`` and ``new``; ``None`` when the
        server cannot tell (the caller then re-reads what it holds)."""


def check_sha(value: object, what: str) -> str:
    """``value`` if it is a full lower-case SHA, else :class:`Unreachable` (a broken answer)."""
    if isinstance(value, str) and _FULL_SHA.fullmatch(value):
        return value
    raise Unreachable(f"Bitbucket's answer for {what} holds no commit SHA")


def looks_like_sha(ref: str) -> bool:
    """Whether ``ref`` could be a (short or full) commit SHA."""
    return bool(_SHA_LIKE.fullmatch(ref))


def make_api(settings: Settings, http: HttpClient | None = None) -> RepoApi:
    """The adapter for ``settings.api``."""
    client = http or HttpClient(settings)
    if settings.api == "datacenter":
        from promptdock_bitbucket._datacenter import DataCenterApi

        return DataCenterApi(settings, client)
    from promptdock_bitbucket._cloud import CloudApi

    return CloudApi(settings, client)
