"""The hooks a promptdock plugin may implement.

This module holds signatures and docstrings only. Implement a hook by decorating a function of
the same name with :data:`promptdock.hookimpl`; an implementation may accept fewer arguments
than the spec. Hooks are always called with keyword arguments.

Source plugins implement ``source_kinds``, ``load_prompt`` and ``list_prompts``; template
engines implement ``render``; model providers implement ``dispatch``. The built-in Jinja2
renderer and the ``mock`` and OpenAI-compatible dispatchers are plugins registered through the
same manager, so a plugin can replace or wrap any of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from promptdock.models import (
        CompletionRequest,
        PromptFile,
        PromptInfo,
        RenderedPrompt,
        RenderOptions,
        SourceConfig,
        SourceKind,
    )
    from promptdock.response import ModelResponse, StreamChunk

__all__ = [
    "adispatch",
    "dispatch",
    "hookspec",
    "invalidate",
    "list_prompts",
    "load_prompt",
    "render",
    "source_kinds",
]

hookspec = pluggy.HookspecMarker("promptdock")


@hookspec
def source_kinds() -> list[SourceKind] | None:
    """Declare the source kinds this plugin serves.

    Called once per plugin manager, the first time promptdock needs to know which kinds exist
    (to resolve an alias like ``dotprompt``, to validate a config, or to tell a user which
    distribution to install for a kind nobody serves). Results of all plugins are collected;
    two plugins declaring the same kind or alias is a :class:`~promptdock.ConfigError`
    naming both.

    :returns: the kinds, with their aliases, distribution name and option validator.
        ``None`` (or an empty list) means this plugin serves no source kind.

    Example::

        @promptdock.hookimpl
        def source_kinds():
            return [SourceKind("gitea", distribution="promptdock-gitea", validate=check)]
    """


@hookspec(firstresult=True)
def load_prompt(source: SourceConfig, prompt_id: str, version: int | None) -> PromptFile | None:
    """Load and parse one prompt from a source.

    Called for every ``completion()``, ``get_prompt()`` and proxy request that names a prompt,
    so implementations must be cheap when nothing changed (cache parsed files; a warm call
    should do no network I/O and no parsing). Stops at the first non-``None`` result.

    :param source: the configured source to read from; its ``kind`` has already been resolved
        from aliases (``dotprompt`` arrives as ``filesystem``).
    :param prompt_id: the id the caller asked for, such as ``"hello"`` or ``"support/triage"``.
        Implementations must refuse ids that would escape the source, raising
        :class:`~promptdock.errors.UnsafePromptIdError`.
    :param version: ``N`` to load ``<id>.vN.prompt``; ``None`` for the unversioned file, or the
        highest version when there is no unversioned file.
    :returns: the parsed prompt with its ``provenance`` set, or ``None`` when ``source.kind`` is
        not served by this plugin. ``None`` never means "not found": a plugin that serves the
        kind raises :class:`~promptdock.errors.PromptNotFoundError` (with the closest ids as
        suggestions) when the prompt does not exist, and
        :class:`~promptdock.errors.PromptSyntaxError` when it cannot be parsed.

    Example::

        @promptdock.hookimpl
        def load_prompt(source, prompt_id, version):
            if source.kind != "gitea":
                return None
            text, path = fetch(source, prompt_id, version)
            return promptdock.parse_prompt(text, name=prompt_id, path=path)
    """


@hookspec
def list_prompts(source: SourceConfig) -> list[PromptInfo] | None:
    """List every prompt a source holds.

    Called by ``PromptDock.list_prompts()``, ``promptdock list`` and the proxy's
    ``/v1/prompts``. Results of all plugins are collected; an id listed by two plugins for
    the same source is a :class:`~promptdock.ConfigError` naming both.

    :param source: the configured source, kind already resolved.
    :returns: one :class:`~promptdock.PromptInfo` per prompt id (versions folded into it),
        including files that fail to parse (with ``error`` set). ``None`` when ``source.kind``
        is not served by this plugin.

    Example::

        @promptdock.hookimpl
        def list_prompts(source):
            if source.kind != "gitea":
                return None
            return [PromptInfo(id=i, source=source.name) for i in ids(source)]
    """


@hookspec(firstresult=True)
def render(
    prompt: PromptFile, variables: Mapping[str, Any], options: RenderOptions
) -> RenderedPrompt | None:
    """Render a prompt's template with the caller's variables into chat messages.

    Called once per completion after the prompt is loaded. The built-in Jinja2 renderer is
    registered ``trylast``, so a plugin can take over for some prompts (say, those whose
    frontmatter names ``template_format: handlebars``) and return ``None`` for the rest.
    Stops at the first non-``None`` result.

    :param prompt: the parsed prompt.
    :param variables: the caller's variables, not yet merged with ``input.default``.
    :param options: strictness and limits (:class:`~promptdock.RenderOptions`).
    :returns: the rendered messages, model and params; ``None`` to leave the prompt to the
        next renderer.

    Example::

        @promptdock.hookimpl
        def render(prompt, variables):
            if prompt.frontmatter.get("template_format") != "mustache":
                return None
            return RenderedPrompt(mustache_messages(prompt, variables), prompt.model,
                                  prompt.params, prompt)
    """


@hookspec(firstresult=True)
def dispatch(request: CompletionRequest) -> ModelResponse | Iterator[StreamChunk] | None:
    """Send a completion request to a model and return its answer.

    Called once per ``completion()`` (and proxy request) after rendering. Stops at the first
    non-``None`` result. The built-in ``mock`` dispatcher answers when ``mock_response`` is
    set or the model starts with ``mock/``; the OpenAI-compatible HTTP dispatcher is
    registered ``trylast`` and answers everything else. Wrap the hook
    (``@hookimpl(wrapper=True)``) for timing, logging or retries.

    :param request: model, messages, parameters and connection settings.
    :returns: a :class:`~promptdock.ModelResponse` (OpenAI ``chat.completion`` shape) when
        ``request.stream`` is false, an iterator of chunk dicts (``chat.completion.chunk``)
        when it is true; ``None`` when this plugin does not serve the model.
    :raises DispatchError: the upstream failed (``UpstreamTimeoutError`` on a timeout).

    Example::

        @promptdock.hookimpl
        def dispatch(request):
            if not request.model.startswith("echo/"):
                return None
            text = request.messages[-1]["content"]
            return ModelResponse.from_text(text, model=request.model)
    """


@hookspec
def invalidate(source: SourceConfig, ref: str | None) -> bool | None:
    """Forget what a source has cached about a ref, so the next load sees the newest commit.

    Called by ``PromptDock.invalidate()``, which the proxy's Bitbucket webhook endpoint calls
    when a push arrives. Content cached by commit SHA stays valid (it cannot change); what is
    dropped is the branch or tag → SHA resolution. Results of all plugins are collected.

    :param source: the configured source, kind already resolved.
    :param ref: the branch or tag that moved; ``None`` for every ref of the source.
    :returns: ``True`` when this plugin serves ``source.kind`` and dropped its state,
        ``None`` for kinds it does not serve (local folders need no invalidation).

    Example::

        @promptdock.hookimpl
        def invalidate(source, ref):
            if source.kind != "gitea":
                return None
            cache_for(source).forget(ref)
            return True
    """


@hookspec(firstresult=True)
def adispatch(
    request: CompletionRequest,
) -> Awaitable[ModelResponse | AsyncIterator[StreamChunk]] | None:
    """Send a completion request to a model without blocking the event loop.

    Called by ``PromptDock.acompletion()`` and the proxy, for every request. Stops at the first
    non-``None`` result. When no plugin answers, promptdock runs the sync ``dispatch`` hook in
    a worker thread instead, so a plugin that only implements ``dispatch`` still works from
    async code. The built-in ``mock`` plugin implements both.

    :param request: model, messages, parameters and connection settings.
    :returns: an awaitable (typically a coroutine) resolving to a ``ModelResponse``, or to an
        async iterator of chunk dicts when ``request.stream`` is true; ``None`` when this
        plugin does not serve the model from async code.
    :raises DispatchError: the upstream failed (when awaited).

    Example::

        @promptdock.hookimpl
        def adispatch(request):
            if not request.model.startswith("echo/"):
                return None
            async def answer():
                return ModelResponse.from_text(request.messages[-1]["content"],
                                               model=request.model)
            return answer()
    """
