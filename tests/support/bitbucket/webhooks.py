"""Build Bitbucket Cloud ``repo:push`` webhook deliveries (reference §1.8), signed like the real
service signs them, for tests of a webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any, Literal

from ._http import braced_uuid

__all__ = ["make_push_delivery", "sign"]

_API = "https://api.bitbucket.org/2.0"
_WEB = "https://bitbucket.org"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` value for ``body``: ``sha256=`` and the lower-case hex HMAC."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def make_push_delivery(
    secret: str | None,
    workspace: str,
    slug: str,
    branch: str,
    new_sha: str | None,
    old_sha: str | None,
    *,
    attempt: int = 1,
    hook_uuid: str | None = None,
    request_uuid: str | None = None,
    ref_type: Literal["branch", "tag"] = "branch",
) -> tuple[dict[str, str], bytes]:
    """Headers and raw body of one ``repo:push`` delivery.

    ``new_sha=None`` is a deleted branch (``closed``), ``old_sha=None`` a created one. Each call
    gets a fresh ``X-Request-UUID`` unless ``request_uuid`` is given (pass the same one to model
    a retried delivery, with ``attempt`` counting up). ``secret=None`` leaves the signature out,
    as for a hook without a secret.
    """
    full = f"{workspace}/{slug}"
    repo_api, repo_web = f"{_API}/repositories/{full}", f"{_WEB}/{full}"

    def side(sha: str | None) -> dict[str, Any] | None:
        if sha is None:
            return None
        return {
            "type": ref_type,
            "name": branch,
            "target": {
                "type": "commit",
                "hash": sha,
                "links": {"self": {"href": f"{repo_api}/commit/{sha}"}},
            },
            "links": {
                "html": {
                    "href": f"{repo_web}/{'branch' if ref_type == 'branch' else 'src'}/{branch}"
                }
            },
        }

    links: dict[str, Any] = {}
    if new_sha and old_sha:
        links = {
            "commits": {"href": f"{repo_api}/commits?include={new_sha}&exclude={old_sha}"},
            "diff": {"href": f"{repo_api}/diff/{new_sha}..{old_sha}"},
        }
    change = {
        "old": side(old_sha),
        "new": side(new_sha),
        "created": old_sha is None,
        "closed": new_sha is None,
        "forced": False,
        "truncated": False,
        "commits": [] if new_sha is None else [{"type": "commit", "hash": new_sha}],
        "links": links,
    }
    body = json.dumps(
        {
            "push": {"changes": [change]},
            "repository": {
                "type": "repository",
                "full_name": full,
                "name": slug,
                "uuid": braced_uuid(full),
                "workspace": {
                    "type": "workspace",
                    "slug": workspace,
                    "uuid": braced_uuid(workspace),
                },
                "is_private": True,
                "links": {"html": {"href": repo_web}},
            },
            "actor": {
                "type": "user",
                "display_name": "Promptdock Tests",
                "uuid": "{00000000-0000-4000-8000-000000000001}",
            },
        },
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Bitbucket-Webhooks/2.0",
        "X-Event-Key": "repo:push",
        "X-Hook-UUID": hook_uuid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{repo_web}/hooks")),
        "X-Request-UUID": request_uuid or str(uuid.uuid4()),
        "X-Attempt-Number": str(attempt),
    }
    if secret is not None:
        headers["X-Hub-Signature"] = sign(secret, body)
    return headers, body
