"""``POST /webhooks/bitbucket``: a push to a prompt repository reaches the proxy at once.

Bitbucket signs each delivery with the webhook's secret: ``X-Hub-Signature: sha256=<hex>``,
the HMAC-SHA256 of the raw body. The proxy checks it in constant time against
``general_settings.bitbucket_webhook_secret`` (no secret configured: every delivery is
refused), drops deliveries it has already seen (Bitbucket retries with the same
``X-Request-UUID``), and invalidates each configured ``bitbucket`` source that reads the pushed
repository, for each pushed branch or tag. The next request then resolves the ref again and
serves the new commit; content already cached by commit SHA stays.

Both Bitbucket Cloud ``repo:push`` and Data Center ``repo:refs_changed`` deliveries are
understood. Invalidation only drops a ref → SHA resolution, so the answer comes in
milliseconds, well within Bitbucket's delivery timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptdock._dock import PromptDock
from promptdock.errors import PromptdockError
from promptdock.models import SourceConfig
from promptdock.proxy.errors import ApiError, Redactor
from promptdock.proxy.events import SharedEvents

__all__ = ["KIND", "PUSH_EVENTS", "BitbucketWebhook", "Push"]

KIND = "bitbucket"
"""The source kind a Bitbucket push invalidates."""

PUSH_EVENTS = frozenset({"repo:push", "repo:refs_changed"})
"""Event keys of a push: Bitbucket Cloud's and Data Center's."""

_PING_EVENTS = frozenset({"diagnostics:ping"})
_SEEN_LIMIT = 4096
_PREFIX = "sha256="


@dataclass(frozen=True)
class Push:
    """What a push delivery says: which repository, which refs moved.

    :ivar owner: the Cloud workspace or the Data Center project key.
    :ivar repository: the repository slug.
    :ivar refs: the branch and tag names that changed.
    """

    owner: str
    repository: str
    refs: tuple[str, ...]


class BitbucketWebhook:
    """Verifies, deduplicates and applies Bitbucket push deliveries.

    :param secret: the webhook secret, or ``None`` to refuse every delivery.
    :param sources: the proxy's configured sources (by name).
    :param dock: the dock whose sources are invalidated.
    :param redact: scrubs secrets from messages.
    :param events: the directory shared with the other workers, if there are any: deliveries
        are then deduplicated across workers and each push reaches all of them.
    """

    def __init__(
        self,
        secret: str | None,
        sources: Mapping[str, SourceConfig],
        dock: PromptDock,
        redact: Redactor,
        events: SharedEvents | None = None,
    ) -> None:
        self._secret = secret.encode() if secret else None
        self._sources = {n: c for n, c in sources.items() if c.kind == KIND}
        self.dock = dock
        self.redact = redact
        self.events = events
        self._seen: OrderedDict[str, None] = OrderedDict()

    def verify(self, signature: bytes | None, body: bytes) -> None:
        """Check the ``X-Hub-Signature`` of ``body``.

        :raises ApiError: 403 when no secret is configured, 401 for a missing or wrong
            signature.
        """
        if self._secret is None:
            raise ApiError(
                403,
                "this proxy has no webhook secret: set general_settings.bitbucket_webhook_secret "
                "in its config to the secret of the Bitbucket webhook",
                code="webhook_not_configured",
            )
        if signature is None:
            raise ApiError(
                401,
                "the delivery has no X-Hub-Signature header: give the Bitbucket webhook the "
                "same secret as general_settings.bitbucket_webhook_secret",
                code="invalid_signature",
            )
        expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode()
        given = signature.strip().lower()
        if given.startswith(_PREFIX.encode()):
            given = given[len(_PREFIX) :]
        if not hmac.compare_digest(expected, given):
            raise ApiError(
                401,
                "the X-Hub-Signature does not match the body: the webhook's secret differs from "
                "general_settings.bitbucket_webhook_secret",
                code="invalid_signature",
            )

    def first_time(self, delivery_id: str | None) -> bool:
        """Whether ``delivery_id`` is new (and remember it); ``True`` when there is none."""
        if not delivery_id:
            return True
        if self.events is not None:
            return self.events.claim(delivery_id)
        if delivery_id in self._seen:
            return False
        self._seen[delivery_id] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        return True

    def sources_for(self, push: Push) -> list[str]:
        """The configured ``bitbucket`` sources reading ``push``'s repository."""
        owner, repository = push.owner.lower(), push.repository.lower()
        found = []
        for name, config in self._sources.items():
            options = config.options
            source_owner = options.get("workspace") or options.get("project_key")
            source_repo = options.get("repository")
            if (
                isinstance(source_owner, str)
                and isinstance(source_repo, str)
                and source_owner.lower() == owner
                and source_repo.lower() == repository
            ):
                found.append(name)
        return found

    async def handle(
        self, event: str | None, delivery_id: str | None, signature: bytes | None, body: bytes
    ) -> dict[str, Any]:
        """Verify and apply one delivery; returns the JSON answer (status 200).

        :raises ApiError: 401/403 for signature problems, 400 for a body that is not a push.
        """
        self.verify(signature, body)
        if event in _PING_EVENTS:
            return {"status": "ok"}
        if event not in PUSH_EVENTS:
            return {"status": "ignored", "reason": f"event {event!r} is not a push"}
        if not self.first_time(delivery_id):
            return {"status": "duplicate", "delivery": delivery_id}
        push = parse_push(body)
        names = self.sources_for(push)
        if not names:
            return {
                "status": "ignored",
                "reason": f"no configured bitbucket source reads {push.owner}/{push.repository}",
            }
        invalidated = await asyncio.to_thread(self.invalidate, names, push.refs)
        if self.events is not None:
            await asyncio.to_thread(self.events.publish, invalidated, push.refs)
        return {
            "status": "invalidated",
            "repository": f"{push.owner}/{push.repository}",
            "refs": list(push.refs),
            "sources": invalidated,
        }

    def invalidate(self, names: Sequence[str], refs: Sequence[str]) -> list[str]:
        """Invalidate each source of ``names`` for each ref (every ref when there are none).

        :returns: the sources invalidated (a source whose config is broken is skipped).
        """
        done = []
        for name in names:
            try:
                for ref in refs or (None,):
                    self.dock.invalidate(name, ref)
            except PromptdockError:
                continue  # its config is broken; requests report that, the push cannot help
            done.append(name)
        return done


def parse_push(body: bytes) -> Push:
    """The repository and refs of a Cloud ``repo:push`` or Data Center ``repo:refs_changed``.

    :raises ApiError: 400 when the body is not such a delivery.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: not a push either
        data = None
    repository = data.get("repository") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(repository, dict):
        raise ApiError(
            400,
            "the delivery is not a Bitbucket push: its JSON body has no 'repository'",
            code="invalid_webhook",
        )
    refs: list[str] = []
    full_name = repository.get("full_name")
    if isinstance(full_name, str) and "/" in full_name:  # Cloud
        owner, _, slug = full_name.partition("/")
        push = data.get("push")
        changes = push.get("changes") if isinstance(push, dict) else None
        for change in changes if isinstance(changes, list) else ():
            for side in ("new", "old"):
                ref = change.get(side) if isinstance(change, dict) else None
                name = ref.get("name") if isinstance(ref, dict) else None
                if isinstance(name, str) and name not in refs:
                    refs.append(name)
                    break
        return Push(owner, slug, tuple(refs))
    project = repository.get("project")
    key = project.get("key") if isinstance(project, dict) else None
    dc_slug = repository.get("slug")
    if not isinstance(key, str) or not isinstance(dc_slug, str):
        raise ApiError(
            400,
            "the delivery names no repository (Cloud 'full_name' or Data Center project key "
            "and slug)",
            code="invalid_webhook",
        )
    changes = data.get("changes")
    for change in changes if isinstance(changes, list) else ():
        ref = change.get("ref") if isinstance(change, dict) else None
        display = ref.get("displayId") if isinstance(ref, dict) else None
        if isinstance(display, str) and display not in refs:
            refs.append(display)
    return Push(key, dc_slug, tuple(refs))
