"""The emulator's mutable state, each part behind its own lock: credentials, rate limits, faults
and the request log. Request handlers run on many threads while the test thread configures."""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._git import GitRepo

__all__ = [
    "AuthKind",
    "Credential",
    "CredentialStore",
    "Fault",
    "FaultPlan",
    "HostedRepo",
    "RequestLog",
    "RequestRecord",
]

AuthKind = Literal["none", "bearer", "basic", "other"]
RepoKey = tuple[str, str]


@dataclass(frozen=True)
class Credential:
    """A registered credential: an access token (Bearer) or an email plus API token (Basic).

    ``repos`` is ``None`` when the credential reaches every repository.
    """

    kind: Literal["bearer", "basic"]
    secret: str
    user: str | None
    repos: frozenset[RepoKey] | None
    scopes: frozenset[str]


@dataclass(frozen=True)
class HostedRepo:
    """A repository the emulator serves: where it lives in the URL space and its git data."""

    owner: str
    slug: str
    repo: GitRepo
    mainbranch: str


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it.

    ``path`` is the raw (still percent-encoded) path; ``query`` keeps the first value of each
    parameter; ``status`` is ``None`` when the connection was dropped without an answer.
    """

    method: str
    path: str
    query: Mapping[str, str]
    auth: AuthKind
    status: int | None


@dataclass
class Fault:
    """A misbehaviour the emulator applies to the next ``times`` matching requests.

    Returned by :meth:`BitbucketEmulator.inject`; ``remaining`` counts down as it fires.
    """

    route_substring: str | None
    status: int | None
    headers: Mapping[str, str]
    delay: float | None
    drop_connection: bool
    truncate: bool
    remaining: int
    body: bytes | None = None

    def matches(self, raw_path: str) -> bool:
        """Whether this fault applies to a request for ``raw_path``."""
        return self.remaining > 0 and (
            self.route_substring is None or self.route_substring in raw_path
        )


class CredentialStore:
    """Registered credentials and per-credential rate limits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bearer: dict[str, Credential] = {}
        self._basic: dict[tuple[str, str], Credential] = {}
        self._limits: dict[str, tuple[int, int | None]] = {}
        self._used: dict[str, int] = {}

    def add(
        self,
        kind: Literal["bearer", "basic"],
        secret: str,
        *,
        user: str | None,
        repos: Iterable[RepoKey] | Literal["*"],
        scopes: Collection[str],
    ) -> Credential:
        """Register a credential (replacing one with the same secret)."""
        reach = None if repos == "*" else frozenset((o, s) for o, s in repos)
        cred = Credential(kind, secret, user, reach, frozenset(scopes))
        with self._lock:
            if kind == "bearer":
                self._bearer[secret] = cred
            else:
                self._basic[(user or "", secret)] = cred
        return cred

    def identify(self, header: str | None) -> tuple[AuthKind, Credential | None]:
        """The kind of ``Authorization`` header sent and the credential it names, if valid."""
        if not header:
            return "none", None
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return "bearer", self._bearer.get(value)
        if scheme.lower() == "basic":
            try:
                user, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return "basic", None
            return "basic", self._basic.get((user, secret))
        return "other", None

    def set_limit(self, secret: str, limit: int | None, retry_after: int | None) -> None:
        """Allow ``limit`` more requests for ``secret`` (``None`` removes the limit)."""
        with self._lock:
            self._used.pop(secret, None)
            if limit is None:
                self._limits.pop(secret, None)
            else:
                self._limits[secret] = (limit, retry_after)

    def spend(self, secret: str) -> tuple[int, int, int | None] | None:
        """Count one request; return ``(limit, used, retry_after)`` if ``secret`` is limited."""
        with self._lock:
            rule = self._limits.get(secret)
            if rule is None:
                return None
            used = self._used[secret] = self._used.get(secret, 0) + 1
            return rule[0], used, rule[1]


class FaultPlan:
    """Faults waiting to fire, first registered first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        """Queue ``fault``."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, raw_path: str) -> Fault | None:
        """Consume one firing of the first fault that matches ``raw_path``."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(raw_path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._faults.clear()


@dataclass
class RequestLog:
    """Thread-safe, append-only record of requests (bounded, so a runaway client cannot eat
    the test machine's memory)."""

    limit: int = 100_000
    _records: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, record: RequestRecord) -> None:
        """Record one request, dropping the oldest beyond ``limit``."""
        with self._lock:
            self._records.append(record)
            if len(self._records) > self.limit:
                del self._records[0]

    def snapshot(self) -> list[RequestRecord]:
        """A copy of the records so far, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()
