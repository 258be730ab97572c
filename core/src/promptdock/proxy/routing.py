"""``model_list`` deployments, resolved once at start-up into what a request needs.

For each deployment the proxy knows, before any request arrives: whether it renders a prompt
(its ``model`` starts with a configured source) or passes messages through, the upstream model
name of a pass-through deployment, the keyword arguments it adds to
``PromptDock.prepare_request`` and whether preparing can run on the event loop.

Preparing a request loads the prompt. For a local folder (kind ``filesystem``) a warm load is
two ``stat`` calls and a render, a few microseconds, cheaper than the hop to a worker thread;
any other kind may do network I/O on a cold or expired cache, so it runs in a worker thread.
Start-up resolves source kinds locally and never contacts a remote source.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptdock._dock import PromptDock
from promptdock.config import Deployment, ProxyConfig
from promptdock.errors import ConfigError

__all__ = ["INLINE_KINDS", "PROVIDER_PREFIX", "Route", "RouteTable", "Target", "build_routes"]

INLINE_KINDS = frozenset({"filesystem"})
"""Source kinds whose prompts are prepared on the event loop (local, cached, no network)."""

PROVIDER_PREFIX = "openai/"
"""LiteLLM's provider prefix for OpenAI-compatible models, dropped before calling upstream."""


@dataclass(frozen=True)
class Target:
    """One deployment, ready to serve.

    :ivar deployment: the ``model_list`` entry.
    :ivar source: the prompt source its ``model`` names, ``None`` for a pass-through model.
    :ivar model: the ``model`` to give ``prepare_request``: ``"<source>/<model>"`` for a prompt
        deployment, the upstream model without a leading ``openai/`` for a pass-through one.
    :ivar inline: whether ``prepare_request`` may run on the event loop.
    :ivar options: ``prepare_request`` keywords from the deployment (``api_base``,
        ``api_key``, ``timeout``, sampling parameters...); the request's own fields win.
    :ivar problem: why the deployment cannot serve (a config mistake), or ``None``.
    """

    deployment: Deployment
    source: str | None
    model: str
    inline: bool
    options: Mapping[str, Any] = field(repr=False)
    problem: str | None = None


class Route:
    """The deployments behind one ``model_name``, taken in turn (round robin)."""

    __slots__ = ("_turns", "model_name", "targets")

    def __init__(self, model_name: str, targets: tuple[Target, ...]) -> None:
        self.model_name = model_name
        self.targets = targets
        self._turns: Iterator[Target] = itertools.cycle(targets)

    def pick(self) -> Target:
        """The deployment for the next request."""
        if len(self.targets) == 1:
            return self.targets[0]
        return next(self._turns)


@dataclass(frozen=True)
class RouteTable:
    """Every ``model_name`` the proxy serves.

    :ivar routes: ``model_name`` → :class:`Route`, in config order.
    :ivar problems: one message per deployment that cannot serve, for the start-up log.
    """

    routes: Mapping[str, Route]
    problems: tuple[str, ...] = ()

    def get(self, model_name: str) -> Route | None:
        """The route for ``model_name``, or ``None``."""
        return self.routes.get(model_name)

    def sources_of(self, model_names: Mapping[str, Any] | None = None) -> list[str]:
        """The prompt sources the deployments use (of ``model_names`` only, when given)."""
        found: dict[str, None] = {}
        for name, route in self.routes.items():
            if model_names is not None and name not in model_names:
                continue
            for target in route.targets:
                if target.source is not None:
                    found[target.source] = None
        return list(found)


def build_routes(config: ProxyConfig, dock: PromptDock) -> RouteTable:
    """Resolve every deployment of ``config`` against the sources of ``dock``."""
    kinds: dict[str, str | None] = {}
    routes: dict[str, Route] = {}
    problems: list[str] = []
    for name, deployments in config.deployment_index.items():
        targets = tuple(_target(config, dock, d, kinds) for d in deployments)
        problems.extend(t.problem for t in targets if t.problem is not None)
        routes[name] = Route(name, targets)
    return RouteTable(routes, tuple(problems))


def _target(
    config: ProxyConfig, dock: PromptDock, deployment: Deployment, kinds: dict[str, str | None]
) -> Target:
    options: dict[str, Any] = dict(deployment.params)
    if "timeout" not in options and config.request_timeout is not None:
        options["timeout"] = config.request_timeout
    options["api_base"] = deployment.api_base
    options["api_key"] = deployment.api_key
    source = deployment.source
    if source is not None and source in config.source_configs:
        if source not in kinds:
            kinds[source] = _kind(dock, source)
        return Target(deployment, source, deployment.model, kinds[source] in INLINE_KINDS, options)
    problem = None
    if deployment.prompt_id is not None:
        line = config.line_of(f"{deployment.key}.litellm_params.model")
        where = f"{config.path}:{line}" if line is not None else config.path
        known = ", ".join(sorted(config.source_configs)) or "none configured"
        problem = (
            f"{where}: {deployment.key}.litellm_params.model: model {deployment.model!r} of "
            f"{deployment.model_name!r} names no prompt source, yet prompt_id is set; write "
            f"'<source>/<model>' with one of the sources ({known})"
        )
    model = deployment.model.removeprefix(PROVIDER_PREFIX)
    return Target(deployment, None, model, True, options, problem)


def _kind(dock: PromptDock, source: str) -> str | None:
    """The source's kind, resolved from the installed plugins; ``None`` when it cannot be."""
    try:
        return dock.get_source(source).kind
    except ConfigError:
        # Reported when a request uses it (and by readiness): start-up must not fail for a
        # source that only some deployments need.
        return None
