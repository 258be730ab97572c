"""``GET /health/liveliness`` and ``GET /health/readiness``.

Liveliness answers as soon as the process serves HTTP. Readiness reports every configured
source: whether its prompts can be served (``ready``: ``true``, ``false``, or ``null`` when
unknown), its ``state``, and for local folders whether each deployment's prompt loads.

Readiness never contacts a remote source: it reads the state the source plugin keeps (a
plugin module offering ``status(source_config) -> dict``, as ``promptdock-bitbucket`` does).
A remote source nobody has used yet is ``cold``, ``ready: null``: it loads on first use. The
answer is 503 when some source is ``ready: false``, else 200, so an orchestrator keeps sending
traffic to a proxy whose remote prompts have not been needed yet.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, cast

from promptdock._dock import PromptDock
from promptdock.config import ProxyConfig
from promptdock.errors import PromptdockError
from promptdock.proxy.asgi import dumps
from promptdock.proxy.errors import Redactor

__all__ = ["LIVELINESS_BODY", "READY_STATES", "Health"]

LIVELINESS_BODY = dumps("I'm alive!")
"""What ``/health/liveliness`` answers (LiteLLM's text)."""

READY_STATES = frozenset({"fresh", "expired", "refreshing", "stale"})
"""Remote source states in which prompts are served (``stale``: from a cached copy)."""

_CHECK_TIMEOUT = 2.0

StatusFunction = Callable[[Any], dict[str, Any]]


class Health:
    """Readiness of the sources behind one proxy.

    :param config: the proxy's config (sources and deployments).
    :param dock: the prompt sources and plugins.
    :param redact: scrubs secrets from messages.
    """

    def __init__(self, config: ProxyConfig, dock: PromptDock, redact: Redactor) -> None:
        self.config = config
        self.dock = dock
        self.redact = redact

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        """The status code and report of ``/health/readiness``."""
        names = list(self.config.source_configs)
        checks = [self._check_bounded(name) for name in names]
        reports = dict(zip(names, await asyncio.gather(*checks), strict=True))
        flags = [report["ready"] for report in reports.values()]
        if any(flag is False for flag in flags):
            status, state = 503, "not ready"
        elif all(flag is True for flag in flags):
            status, state = 200, "ready"
        else:
            status, state = 200, "unknown"
        return status, {"status": state, "sources": reports}

    async def _check_bounded(self, name: str) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._check, name), _CHECK_TIMEOUT)
        except TimeoutError:
            return {
                "kind": self.config.source_configs[name].kind,
                "ready": None,
                "state": "unknown",
                "error": f"no answer within {_CHECK_TIMEOUT:g} s",
            }

    def _check(self, name: str) -> dict[str, Any]:
        try:
            source = self.dock.get_source(name)
        except PromptdockError as exc:
            return {
                "kind": self.config.source_configs[name].kind,
                "ready": False,
                "state": "misconfigured",
                "error": self.redact(str(exc)),
            }
        if source.kind == "filesystem":
            return self._folder(name, str(source.options.get("path")))
        status = _status_function(self.dock, source.kind)
        if status is None:
            return {"kind": source.kind, "ready": None, "state": "unknown"}
        try:
            report = status(source)
        except Exception as exc:  # a plugin's health report must not break the endpoint
            return {
                "kind": source.kind,
                "ready": None,
                "state": "unknown",
                "error": self.redact(f"{type(exc).__name__}: {exc}"),
            }
        state = str(report.get("state", "unknown"))
        ready: bool | None = None
        if state in READY_STATES:
            ready = True
        elif report.get("last_error"):
            ready = False
        result: dict[str, Any] = {"kind": source.kind, "ready": ready, "state": state}
        for key in ("ref", "sha", "is_stale", "last_refresh", "last_error"):
            if key in report:
                value = report[key]
                result[key] = self.redact(value) if isinstance(value, str) else value
        return result

    def _folder(self, name: str, path: str) -> dict[str, Any]:
        if not os.path.isdir(path):
            return {
                "kind": "filesystem",
                "ready": False,
                "state": "missing",
                "error": f"prompt folder {path} of source {name!r} does not exist",
            }
        prompts: dict[str, str] = {}
        for deployment in self.config.deployments:
            if deployment.source != name or deployment.prompt_id is None:
                continue
            try:
                self.dock.get_prompt(
                    deployment.prompt_id, source=name, version=deployment.prompt_version
                )
            except PromptdockError as exc:
                prompts[deployment.prompt_id] = self.redact(str(exc))
            else:
                prompts[deployment.prompt_id] = "ok"
        ready = all(value == "ok" for value in prompts.values())
        return {
            "kind": "filesystem",
            "ready": ready,
            "state": "ok" if ready else "broken prompts",
            "prompts": prompts,
        }


def _status_function(dock: PromptDock, kind: str) -> StatusFunction | None:
    """The ``status`` function of the plugin that declares ``kind``, if it has one."""
    for impl in dock.plugin_host.pm.hook.source_kinds.get_hookimpls():
        declared = cast("list[Any] | None", impl.function()) or []
        if any(getattr(k, "name", None) == kind for k in declared):
            status = getattr(impl.plugin, "status", None)
            return status if callable(status) else None
    return None
