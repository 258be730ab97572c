"""``PromptDock``: the object API — sources, prompts, rendering and completions, no globals.

One ``PromptDock`` owns one plugin manager and a set of named sources. It is safe to share
between threads: its own state changes only under a lock, and sources cache their prompts
behind their own locks.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Literal, overload

from promptdock._manager import PluginHost
from promptdock.errors import ConfigError, DispatchError, PromptNotFoundError
from promptdock.models import (
    DEFAULT_RENDER_OPTIONS,
    MOCK_PREFIX,
    CompletionRequest,
    PromptFile,
    PromptInfo,
    RenderedPrompt,
    RenderOptions,
    SourceConfig,
    _new_request,
)
from promptdock.response import AsyncCompletionStream, CompletionStream, ModelResponse

__all__ = ["PromptDock", "SourceSpec"]

SourceSpec = SourceConfig | Mapping[str, Any]
"""A source as users write it: a :class:`SourceConfig`, or a mapping with ``kind`` and options."""


def _as_config(name: str, spec: SourceSpec) -> SourceConfig:
    if isinstance(spec, SourceConfig):
        if spec.name != name:
            return SourceConfig(name, spec.kind, spec.options)
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"source {name!r} must be a mapping with a 'kind' key, got {type(spec).__name__}",
            key=f"sources.{name}",
        )
    options = dict(spec)
    kind = options.pop("kind", None)
    if not isinstance(kind, str) or not kind:
        raise ConfigError(
            f"source {name!r} has no 'kind' (e.g. kind: filesystem or kind: bitbucket)",
            key=f"sources.{name}.kind",
        )
    return SourceConfig(name, kind, options)


class PromptDock:
    """Prompts from named sources, rendered and sent to a model.

    :param sources: ``{name: SourceConfig | {"kind": ..., **options}}``; the name is the
        prefix users put before the model (``"team-a/gpt-4"``).
    :param prompt_directory: shortcut for a ``filesystem`` source named ``dotprompt``.
    :param load_entrypoints: load third-party plugins from entry points (default ``True``).
    :param plugins: extra ``(name, plugin)`` pairs to register, e.g. in tests.
    :param render_options: default strictness for rendering (see :class:`RenderOptions`).
    :param api_base: default OpenAI-style base URL for completions.
    :param api_key: default upstream API key.
    :param timeout: default upstream timeout in seconds.

    Example::

        dock = PromptDock(prompt_directory="prompts/")
        reply = dock.completion(model="dotprompt/gpt-4", prompt_id="hello",
                                prompt_variables={"user_message": "Hi"})
    """

    def __init__(
        self,
        sources: Mapping[str, SourceSpec] | Iterable[SourceConfig] | None = None,
        *,
        prompt_directory: str | None = None,
        load_entrypoints: bool = True,
        plugins: Iterable[tuple[str, object]] = (),
        render_options: RenderOptions | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._host = PluginHost(load_entrypoints=load_entrypoints, plugins=plugins)
        self._load_prompt = self._host.first_result("load_prompt")
        self._render_hook = self._host.first_result("render")
        self._dispatch = self._host.first_result("dispatch")
        self._adispatch = self._host.first_result("adispatch")
        self._lock = threading.Lock()
        self._configs: dict[str, SourceConfig] = {}
        self._resolved: dict[str, SourceConfig] = {}
        self._adhoc: dict[SourceConfig, SourceConfig] = {}
        self.render_options = render_options or DEFAULT_RENDER_OPTIONS
        self.api_base = api_base
        self.api_key = api_key
        self.timeout = timeout
        if isinstance(sources, Mapping):
            for name, spec in sources.items():
                self.add_source(_as_config(name, spec))
        elif sources is not None:
            for config in sources:
                self.add_source(config)
        if prompt_directory is not None:
            self.add_source(SourceConfig("dotprompt", "filesystem", {"path": prompt_directory}))

    def __repr__(self) -> str:
        return f"PromptDock(sources={sorted(self._configs)!r})"

    # -- sources -------------------------------------------------------------------------

    @property
    def plugin_host(self) -> PluginHost:
        """The plugin manager wrapper (``.register()``, ``.plugins()``, ``.hook``)."""
        return self._host

    def add_source(self, config: SourceConfig) -> None:
        """Add or replace the source ``config.name``. Validated on first use."""
        with self._lock:
            self._configs[config.name] = config
            self._resolved.pop(config.name, None)

    def remove_source(self, name: str) -> None:
        """Forget the source ``name`` (no error if absent)."""
        with self._lock:
            self._configs.pop(name, None)
            self._resolved.pop(name, None)

    @property
    def source_names(self) -> list[str]:
        """The configured source names, sorted."""
        return sorted(self._configs)

    def get_source(self, name: str) -> SourceConfig:
        """The source ``name`` with its kind resolved (aliases → kind) and options validated.

        :raises ConfigError: no such source, its kind is not installed, or an option is invalid.
        """
        resolved = self._resolved.get(name)
        if resolved is not None:
            return resolved
        config = self._configs.get(name)
        if config is None:
            known = ", ".join(self.source_names) or "none configured"
            raise ConfigError(
                f"unknown prompt source {name!r} (sources: {known}). Configure it, e.g. "
                f"promptdock.global_prompt_directory = 'prompts/' for 'dotprompt'.",
                key=f"sources.{name}",
            )
        resolved = self._resolve(config)
        with self._lock:
            if self._configs.get(name) is config:
                self._resolved[name] = resolved
        return resolved

    def _resolve(self, config: SourceConfig) -> SourceConfig:
        kind = self._host.resolve_kind(config.kind)
        options: Mapping[str, Any] = config.options
        if kind.validate is not None:
            try:
                options = kind.validate(config.options)
            except ConfigError as exc:
                key = f"sources.{config.name}.{exc.key}" if exc.key else f"sources.{config.name}"
                raise ConfigError(f"source {config.name!r}: {exc}", key=key) from None
        return SourceConfig(config.name, kind.name, options)

    def _adhoc_source(self, config: SourceConfig) -> SourceConfig:
        resolved = self._adhoc.get(config)
        if resolved is None:
            resolved = self._resolve(config)
            with self._lock:
                if len(self._adhoc) > 256:  # per-call configs: keep the cache bounded
                    self._adhoc.clear()
                self._adhoc[config] = resolved
        return resolved

    def _default_source_name(self, source: str | None) -> str:
        if source is not None:
            return source
        names = self.source_names
        if len(names) == 1:
            return names[0]
        raise ConfigError(
            f"several prompt sources are configured ({', '.join(names) or 'none'}): "
            f"pass source=<name>",
            key="source",
        )

    def invalidate(self, source: str, ref: str | None = None) -> bool:
        """Make ``source`` re-resolve ``ref`` (every ref if ``None``) on its next load.

        :returns: whether a plugin had anything to invalidate (``False`` for local folders).
        """
        config = self.get_source(source)
        results: list[bool] = self._host.hook.invalidate(source=config, ref=ref)
        return any(results)

    # -- prompts -------------------------------------------------------------------------

    def _load(self, source: SourceConfig, prompt_id: str, version: int | None) -> PromptFile:
        prompt: PromptFile | None = self._load_prompt.call(source, prompt_id, version)
        if prompt is None:
            raise _no_loader(source, prompt_id)
        return prompt

    def get_prompt(
        self, prompt_id: str, *, source: str | None = None, version: int | None = None
    ) -> PromptFile:
        """Load one prompt (parsed, cached by its source).

        :param source: the source name; may be omitted when only one source is configured.
        :param version: ``N`` for ``<id>.vN.prompt``.
        :raises PromptNotFoundError: with the closest ids as suggestions.
        :raises PromptSyntaxError: the file is broken (with file and line).
        """
        config = self.get_source(self._default_source_name(source))
        return self._load(config, prompt_id, version)

    def list_prompts(self, source: str | None = None) -> list[PromptInfo]:
        """Every prompt of one source, or of all sources when ``source`` is ``None``.

        Broken files are listed with ``error`` set, never skipped.
        """
        names = [source] if source is not None else self.source_names
        found: list[PromptInfo] = []
        for name in names:
            config = self.get_source(name)
            results: list[list[PromptInfo]] = self._host.hook.list_prompts(source=config)
            seen: dict[str, PromptInfo] = {}
            for batch in results:
                for info in batch:
                    if info.id in seen:
                        raise ConfigError(
                            f"prompt {info.id!r} of source {name!r} is listed twice "
                            f"({seen[info.id].path} and {info.path}): two plugins serve the "
                            f"kind {config.kind!r}",
                            key=f"sources.{name}",
                        )
                    seen[info.id] = info
            found.extend(sorted(seen.values(), key=lambda i: i.id))
        return found

    def render(
        self,
        prompt_id: str,
        variables: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        version: int | None = None,
        options: RenderOptions | None = None,
    ) -> RenderedPrompt:
        """Load and render a prompt into messages, without calling a model."""
        prompt = self.get_prompt(prompt_id, source=source, version=version)
        return self._render(prompt, variables or {}, options or self.render_options)

    def _render(
        self, prompt: PromptFile, variables: Mapping[str, Any], options: RenderOptions
    ) -> RenderedPrompt:
        rendered: RenderedPrompt | None = self._render_hook.call(prompt, variables, options)
        if rendered is None:
            raise _no_renderer(prompt)
        return rendered

    # -- completions ---------------------------------------------------------------------

    def prepare_request(
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        *,
        prompt_id: str | None = None,
        prompt_variables: Mapping[str, Any] | None = None,
        prompt_version: int | None = None,
        stream: bool = False,
        mock_response: str | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        append_messages: bool = False,
        bitbucket_config: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> CompletionRequest:
        """Load and render the prompt and build the request :meth:`completion` would send.

        Takes the same arguments as :meth:`completion`; calls no model. May do source I/O
        (a cold remote prompt), so async code runs it in a worker thread.
        """
        return self._prepare(
            model,
            messages,
            prompt_id,
            prompt_variables,
            prompt_version,
            stream,
            mock_response,
            api_base,
            api_key,
            timeout,
            max_retries,
            append_messages,
            bitbucket_config,
            extra_headers,
            params,
        )

    def _prepare(
        self,
        model: str,
        messages: list[dict[str, Any]] | None,
        prompt_id: str | None,
        prompt_variables: Mapping[str, Any] | None,
        prompt_version: int | None,
        stream: bool,
        mock_response: str | None,
        api_base: str | None,
        api_key: str | None,
        timeout: float | None,
        max_retries: int | None,
        append_messages: bool,
        bitbucket_config: Mapping[str, Any] | None,
        extra_headers: Mapping[str, str] | None,
        params: dict[str, Any],
    ) -> CompletionRequest:
        # prepare_request() and completion() both land here with positional arguments: on the
        # per-call path, one call with fifteen keywords costs more than it looks.
        prefix, _, upstream = model.partition("/")
        provenance = None
        if prompt_id is None:
            if prefix in self._configs and upstream:
                raise ConfigError(
                    f"model {model!r} names the prompt source {prefix!r} but no prompt_id was "
                    f"given; pass prompt_id=... or drop the prefix to call the model directly",
                    key="prompt_id",
                )
            if not messages:
                raise ConfigError(
                    "completion() needs messages=... or prompt_id=...", key="messages"
                )
            final_model, final_messages, final_params = model, list(messages), params
        else:
            if not upstream:
                raise ConfigError(
                    f"model {model!r} has no source prefix: write '<source>/<model>', e.g. "
                    f"'dotprompt/gpt-4' (sources: {', '.join(self.source_names) or 'none'})",
                    key="model",
                )
            if bitbucket_config is not None:
                source = self._adhoc_source(SourceConfig(prefix, "bitbucket", bitbucket_config))
            else:
                source = self.get_source(prefix)
            prompt: PromptFile | None = self._load_prompt.call(source, prompt_id, prompt_version)
            if prompt is None:
                raise _no_loader(source, prompt_id)
            rendered: RenderedPrompt | None = self._render_hook.call(
                prompt, prompt_variables or {}, self.render_options
            )
            if rendered is None:
                raise _no_renderer(prompt)
            provenance = prompt.provenance
            if upstream.startswith(MOCK_PREFIX) or not rendered.model:
                final_model = upstream
            else:
                final_model = rendered.model
            final_messages = rendered.messages
            if append_messages and messages:
                final_messages = [*final_messages, *messages]
            final_params = {**rendered.params, **params} if rendered.params else params
        return _new_request(
            final_model,
            final_messages,
            final_params,
            stream,
            api_base or self.api_base,
            api_key or self.api_key,
            timeout if timeout is not None else self.timeout,
            mock_response,
            provenance,
            extra_headers or {},
            2 if max_retries is None else max_retries,
        )

    # The overloads say what ``stream`` returns (a type checker then needs no isinstance);
    # the parameters are the implementation's, below.
    @overload
    def completion(
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        *,
        stream: Literal[False] = False,
        **kwargs: Any,
    ) -> ModelResponse: ...
    @overload
    def completion(
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        *,
        stream: Literal[True],
        **kwargs: Any,
    ) -> CompletionStream: ...
    @overload
    def completion(
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        *,
        stream: bool,
        **kwargs: Any,
    ) -> ModelResponse | CompletionStream: ...
    def completion(
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        *,
        prompt_id: str | None = None,
        prompt_variables: Mapping[str, Any] | None = None,
        prompt_version: int | None = None,
        stream: bool = False,
        mock_response: str | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        append_messages: bool = False,
        bitbucket_config: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ModelResponse | CompletionStream:
        """Render a prompt and send it to a model; returns an OpenAI ``chat.completion``.

        ``model="<source>/<model>"``: the prefix names a configured source and the rest is the
        upstream model, used when the prompt file names none. Without ``prompt_id`` the call
        passes ``messages`` straight to the model.

        Precedence: parameters given here > the prompt's frontmatter > defaults. The model is
        the prompt's rendered ``model`` if it has one, else the part after the prefix — except
        that ``mock/...`` after the prefix always wins, so tests and demos stay offline.

        :param messages: without a prompt, the messages to send. With a prompt they are ignored
            (the prompt's messages replace them) unless ``append_messages=True``, which adds them
            after the prompt's (multi-turn chat).
        :param prompt_version: ``N`` to use ``<id>.vN.prompt``.
        :param stream: return a :class:`CompletionStream` of chunks instead of a response.
        :param mock_response: answer with this text without calling any model.
        :param bitbucket_config: a per-call Bitbucket source (same keys as
            ``set_global_bitbucket_config``); needs ``promptdock-bitbucket``.
        :param params: OpenAI request parameters (``temperature``, ``max_tokens``, ...).
        :raises PromptNotFoundError, PromptSyntaxError, InputValidationError, ConfigError,
            DispatchError: see their docs; all derive from ``PromptdockError``.
        """
        request = self._prepare(
            model,
            messages,
            prompt_id,
            prompt_variables,
            prompt_version,
            stream,
            mock_response,
            api_base,
            api_key,
            timeout,
            max_retries,
            append_messages,
            bitbucket_config,
            extra_headers,
            params,
        )
        return self.send(request)

    def send(self, request: CompletionRequest) -> ModelResponse | CompletionStream:
        """Dispatch a prepared request (see :meth:`prepare_request`) through the plugins."""
        result = self._dispatch.call(request)
        if result is None:
            raise _no_dispatcher(request)
        if isinstance(result, ModelResponse) and not request.stream:
            return result.with_prompt(request.provenance)
        if request.stream and not isinstance(result, ModelResponse | Mapping):
            chunks: Iterator[Any] = iter(result)
            return CompletionStream(chunks, request.provenance)
        raise _wrong_result(request, result)

    @overload
    async def acompletion(
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        *,
        stream: Literal[False] = False,
        **kwargs: Any,
    ) -> ModelResponse: ...
    @overload
    async def acompletion(
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        *,
        stream: Literal[True],
        **kwargs: Any,
    ) -> AsyncCompletionStream: ...
    @overload
    async def acompletion(
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        *,
        stream: bool,
        **kwargs: Any,
    ) -> ModelResponse | AsyncCompletionStream: ...
    async def acompletion(
        self, model: str, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> ModelResponse | AsyncCompletionStream:
        """:meth:`completion` for async code: same arguments, same results.

        Loading and rendering run in a worker thread (a cold remote prompt may do network
        I/O); the model call uses an async dispatcher when a plugin offers one (``adispatch``),
        else the sync one in a worker thread. With ``stream=True`` the result is an
        :class:`AsyncCompletionStream`: ``async for chunk in stream``.
        """
        import asyncio  # ~50 ms to import: only for async callers

        request = await asyncio.to_thread(self.prepare_request, model, messages, **kwargs)
        return await self.asend(request)

    async def asend(self, request: CompletionRequest) -> ModelResponse | AsyncCompletionStream:
        """Dispatch a prepared request from async code (see :meth:`acompletion`).

        The ``adispatch`` hook answers first; when no implementation answers (or an
        ``async def`` implementation resolves to ``None``), the ``dispatch`` hook runs in a
        worker thread. When a third-party plugin implements or wraps ``dispatch`` without
        implementing ``adispatch``, every async call goes through the sync hook in a thread,
        so that plugin keeps its place in front of the built-ins (implement ``adispatch`` too
        to avoid the thread).
        """
        pending = None if self._host.sync_only_dispatch() else self._adispatch.call(request)
        result: Any = None if pending is None else await pending
        if result is None:  # no async dispatcher (or an `async def` one that passed)
            import asyncio

            result = await asyncio.to_thread(self._dispatch, request=request)
            if result is None:
                raise _no_dispatcher(request)
            if request.stream and not isinstance(result, ModelResponse | Mapping):
                result = _iterate_in_thread(iter(result))
        if isinstance(result, ModelResponse) and not request.stream:
            return result.with_prompt(request.provenance)
        if request.stream and hasattr(result, "__anext__"):
            return AsyncCompletionStream(result, request.provenance)
        raise _wrong_result(request, result)


def _no_loader(source: SourceConfig, prompt_id: str) -> PromptNotFoundError:
    return PromptNotFoundError(
        f"no plugin answered for prompt {prompt_id!r} in source {source.name!r} "
        f"(kind {source.kind!r}); its plugin returned nothing",
        prompt_id=prompt_id,
        source=source.name,
    )


def _no_renderer(prompt: PromptFile) -> ConfigError:
    return ConfigError(
        f"no renderer accepted prompt {prompt.id!r}: is the built-in 'jinja2' plugin "
        f"blocked (PROMPTDOCK_BLOCK_PLUGINS)?",
        key="plugins",
    )


def _no_dispatcher(request: CompletionRequest) -> DispatchError:
    return DispatchError(
        f"no dispatcher accepted model {request.model!r}: are the built-in 'openai', "
        f"'openai-async' and 'mock' plugins blocked (PROMPTDOCK_BLOCK_PLUGINS)?"
    )


def _wrong_result(request: CompletionRequest, result: object) -> DispatchError:
    expected = "chunks" if request.stream else "a ModelResponse"
    return DispatchError(
        f"the dispatcher for model {request.model!r} returned {type(result).__name__}, "
        f"expected {expected}"
    )


async def _iterate_in_thread(chunks: Iterator[Any]) -> AsyncIterator[Any]:
    """Drive a blocking chunk iterator from a worker thread, one chunk at a time."""
    import asyncio

    done = object()
    try:
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
