"""promptdock source plugin: ``.prompt`` files in a Bitbucket Cloud or Data Center repository.

Kind ``bitbucket``. ``promptdock.set_global_bitbucket_config({...})`` serves
``model="bitbucket/..."``; ``completion(..., bitbucket_config={...})`` uses a repository for one
call; ``PromptDock(sources={"team-a": {"kind": "bitbucket", ...}})`` names as many as needed.
Prompt ids are paths relative to ``prompt_folder`` (default ``prompts``) without ``.prompt``.
Options and caching behaviour: see the README of ``promptdock-bitbucket``.

Public helpers besides the hooks: :func:`invalidate` (what a push webhook calls),
:func:`status` (for a readiness endpoint), :func:`source_for` and :func:`close_all`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import promptdock
from promptdock import PromptFile, PromptInfo, SourceConfig, SourceKind

if TYPE_CHECKING:
    from promptdock_bitbucket._source import BitbucketSource

__all__ = [
    "DISTRIBUTION",
    "KIND",
    "BitbucketSource",
    "close_all",
    "invalidate",
    "invalidate_hook",
    "list_prompts",
    "load_prompt",
    "source_for",
    "source_kinds",
    "status",
    "validate",
]

KIND = "bitbucket"
DISTRIBUTION = "promptdock-bitbucket"
_MAX_SOURCES = 256  # per-call configs each make one; keep the registry bounded

_sources: dict[SourceConfig, BitbucketSource] = {}
_sources_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    # Plugins load on the first use of any PromptDock, Bitbucket or not: the source machinery
    # is imported when a Bitbucket source is first used, not with the plugin.
    if name == "BitbucketSource":
        from promptdock_bitbucket._source import BitbucketSource

        return BitbucketSource
    raise AttributeError(f"module 'promptdock_bitbucket' has no attribute {name!r}")


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise a ``bitbucket`` source's options (the kind's validator).

    :raises ConfigError: naming the offending key and saying how to fix it.
    """
    from promptdock_bitbucket._config import validate as check

    return check(options)


def source_for(config: SourceConfig) -> BitbucketSource:
    """The shared :class:`BitbucketSource` serving ``config`` (made on first use)."""
    source = _sources.get(config)
    if source is None:
        with _sources_lock:
            source = _sources.get(config)
            if source is None:
                from promptdock_bitbucket._source import BitbucketSource

                if len(_sources) >= _MAX_SOURCES:
                    _sources.pop(next(iter(_sources)))
                source = _sources[config] = BitbucketSource(config)
    return source


def _matching(target: BitbucketSource | SourceConfig | Mapping[str, Any]) -> list[BitbucketSource]:
    from promptdock_bitbucket._config import settings_from
    from promptdock_bitbucket._source import BitbucketSource

    if isinstance(target, BitbucketSource):
        return [target]
    if isinstance(target, SourceConfig):
        if target.kind != KIND:
            return []
        found = _sources.get(target)
        if found is not None:
            return [found]
        options: Mapping[str, Any] = target.options
    else:
        options = target
    wanted = settings_from(options)
    return [s for s in list(_sources.values()) if s.settings == wanted]


def invalidate(
    config_or_source: BitbucketSource | SourceConfig | Mapping[str, Any], ref: str | None = None
) -> bool:
    """Make the matching sources re-resolve ``ref`` now (every ref when ``None``).

    Content cached by commit stays; the branch or tag → commit resolution is dropped and
    re-done in the background, and the next load waits for it. Accepts a source object, a
    ``SourceConfig`` or the options mapping given to ``set_global_bitbucket_config`` (every
    source reading the same repository and ref matches).

    :returns: whether some source followed ``ref`` and had something to refresh.
    :raises ConfigError: the options are invalid.
    """
    results = [source.invalidate(ref) for source in _matching(config_or_source)]
    return any(results)


def status(config_or_source: BitbucketSource | SourceConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Health of a source, for a readiness endpoint: see :meth:`BitbucketSource.status`.

    A source that was never used reports ``state: "cold"``. Never contains the token.
    """
    from promptdock_bitbucket._source import BitbucketSource

    if isinstance(config_or_source, BitbucketSource):
        return config_or_source.status()
    found = _matching(config_or_source)
    if found:
        return found[0].status()
    if isinstance(config_or_source, SourceConfig):
        return BitbucketSource(config_or_source).status()
    return BitbucketSource(SourceConfig(KIND, KIND, config_or_source)).status()


def close_all() -> None:
    """Forget every source (their caches in memory) and close their connections.

    For tests and orderly shutdown; the next use starts cold (from the disk snapshot).
    """
    with _sources_lock:
        sources = list(_sources.values())
        _sources.clear()
    for source in sources:
        source.close()


@promptdock.hookimpl
def source_kinds() -> list[SourceKind]:
    """Serve the ``bitbucket`` kind."""
    return [SourceKind(KIND, distribution=DISTRIBUTION, validate=validate)]


@promptdock.hookimpl
def load_prompt(source: SourceConfig, prompt_id: str, version: int | None) -> PromptFile | None:
    """Load ``prompt_id`` from the repository, or ``None`` for other kinds."""
    if source.kind != KIND:
        return None
    return source_for(source).load(prompt_id, version)


@promptdock.hookimpl
def list_prompts(source: SourceConfig) -> list[PromptInfo] | None:
    """List the prompt folder recursively, or ``None`` for other kinds."""
    if source.kind != KIND:
        return None
    return source_for(source).listing()


@promptdock.hookimpl(specname="invalidate")
def invalidate_hook(source: SourceConfig, ref: str | None) -> bool | None:
    """Re-resolve ``ref`` of ``source`` on its next load, or ``None`` for other kinds."""
    if source.kind != KIND:
        return None
    found = _sources.get(source)
    return found.invalidate(ref) if found is not None else False
