"""Frozen dataclasses for the data that crosses promptdock's boundaries.

They are plain data: parsing lives in :mod:`promptdock.prompt_file`, rendering in
:mod:`promptdock.rendering`, I/O in the source plugins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

__all__ = [
    "CompletionRequest",
    "IncludeResolver",
    "PromptFile",
    "PromptInfo",
    "Provenance",
    "RenderOptions",
    "RenderedPrompt",
    "SourceConfig",
    "SourceKind",
    "is_secret_key",
    "redacted",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY


_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|apikey|authorization|credential|cookie|(^|[_-])key$)", re.I
)

MOCK_PREFIX = "mock/"
"""Models named ``mock/...`` are answered offline by the built-in ``mock`` dispatcher."""


def is_secret_key(key: str) -> bool:
    """Whether a configuration key holds a secret that must never be shown."""
    return bool(_SECRET_KEY.search(key))


def redacted(value: Any) -> Any:
    """``value`` with every secret-looking key's value replaced by ``"***"``, recursively."""
    if isinstance(value, Mapping):
        return {
            k: ("***" if v and isinstance(k, str) and is_secret_key(k) else redacted(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


IncludeResolver = Callable[[str], tuple[str, str, Callable[[], bool]]]
"""Resolves ``{% include "name" %}`` from the same source (and ref) as the including prompt.

Called with the include name as written in the template; returns ``(text, filename, uptodate)``
where ``uptodate()`` tells whether a cached compile of ``text`` is still current. Raises
:class:`~promptdock.errors.PromptNotFoundError` when there is no such file.
"""


@dataclass(frozen=True)
class SourceConfig:
    """One configured prompt source: a name users type, a kind a plugin serves, its options.

    ``SourceConfig("dotprompt", "filesystem", {"path": "prompts/"})`` is the folder behind
    ``model="dotprompt/gpt-4"``. Equal configs hash equal, so plugins may key caches on them.
    Secret options (tokens, passwords) are hidden from ``repr``.
    """

    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @cached_property
    def _key(self) -> str:
        return json.dumps([self.name, self.kind, dict(self.options)], sort_keys=True, default=repr)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SourceConfig) and self._key == other._key

    def __repr__(self) -> str:
        options = redacted(self.options)
        return f"SourceConfig(name={self.name!r}, kind={self.kind!r}, options={options!r})"

    def option(self, key: str, default: Any = None) -> Any:
        """The option ``key``, or ``default`` when it is absent or ``None``."""
        value = self.options.get(key)
        return default if value is None else value


@dataclass(frozen=True)
class SourceKind:
    """What a source plugin declares about a kind it serves (see the ``source_kinds`` hook).

    :ivar name: the kind, as written in configs (``"filesystem"``).
    :ivar aliases: other names that mean the same kind (``("dotprompt",)``).
    :ivar distribution: the distribution users install to get it (``"promptdock-filesystem"``).
    :ivar validate: checks and normalises a config's options, raising
        :class:`~promptdock.errors.ConfigError` naming the key; ``None`` accepts anything.
    """

    name: str
    aliases: tuple[str, ...] = ()
    distribution: str | None = None
    validate: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = field(
        default=None, compare=False, repr=False
    )


@dataclass(frozen=True)
class Provenance:
    """Where a prompt came from, exactly: enough to reproduce what was served.

    :ivar source: the configured source name (``"dotprompt"``, ``"team-a"``).
    :ivar kind: the source kind (``"filesystem"``, ``"bitbucket"``).
    :ivar prompt_id: the id the prompt was loaded under (``"support/triage"``).
    :ivar version: the ``name.vN.prompt`` version number, ``None`` for the unversioned file.
    :ivar path: the file's path inside the source (``"support/triage.prompt"``).
    :ivar location: the folder or repository (``"/srv/prompts"``, ``"acme/prompts"``).
    :ivar ref: the branch or tag asked for (remote sources).
    :ivar sha: the full commit SHA the file was read at (remote sources).
    :ivar content_hash: SHA-256 of the file's bytes, hex.
    :ivar is_stale: ``True`` when a remote source could not be refreshed and a cached copy
        was served instead.
    """

    source: str
    kind: str
    prompt_id: str
    version: int | None = None
    path: str | None = None
    location: str | None = None
    ref: str | None = None
    sha: str | None = None
    content_hash: str | None = None
    is_stale: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field."""
        return {
            "source": self.source,
            "kind": self.kind,
            "prompt_id": self.prompt_id,
            "version": self.version,
            "path": self.path,
            "location": self.location,
            "ref": self.ref,
            "sha": self.sha,
            "content_hash": self.content_hash,
            "is_stale": self.is_stale,
        }


@dataclass(frozen=True)
class PromptInfo:
    """One entry of a source's listing.

    :ivar id: the prompt id (``"support/triage"``).
    :ivar source: the source name.
    :ivar versions: the numbered versions present (``(1, 2)`` for ``x.v1.prompt``, ``x.v2.prompt``).
    :ivar has_unversioned: whether ``x.prompt`` itself exists.
    :ivar path: the unversioned file's path inside the source, else the highest version's.
    :ivar error: why the file cannot be loaded (a broken file is listed, never skipped).
    :ivar description: the frontmatter ``description``, if the listing read it.
    """

    id: str
    source: str
    versions: tuple[int, ...] = ()
    has_unversioned: bool = True
    path: str | None = None
    error: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class RenderOptions:
    """How strictly to render.

    :ivar strict_undefined: an undefined variable raises :class:`~promptdock.RenderError`
        instead of rendering as ``""``.
    :ivar reject_role_lines: a variable value containing a role line (``System: ...``) raises
        :class:`~promptdock.InputValidationError` instead of being kept inert inside its message.
    :ivar max_output_chars: the rendered text may not exceed this many characters.
    :ivar max_render_seconds: a render taking longer is stopped with
        :class:`~promptdock.TemplateSecurityError`; ``None`` means
        ``promptdock.rendering.MAX_RENDER_SECONDS`` (1 s).
    """

    strict_undefined: bool = False
    reject_role_lines: bool = False
    max_output_chars: int = 1_000_000
    max_render_seconds: float | None = None


DEFAULT_RENDER_OPTIONS = RenderOptions()


@dataclass(frozen=True, eq=False)
class PromptFile:
    """A parsed ``.prompt`` file: frontmatter lifted into typed fields, plus the template body.

    Build one with :func:`promptdock.parse_prompt` (pure) or get one from a source. Rendering
    is pure too: :meth:`render` needs no plugin manager and does no I/O (includes are read
    through :attr:`include_resolver`, which the source supplies).
    """

    id: str
    body: str
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=_empty)
    input_schema: Mapping[str, Any] | None = None
    input_defaults: Mapping[str, Any] = field(default_factory=_empty)
    output_schema: Mapping[str, Any] | None = None
    output_format: str | None = None
    name: str | None = None
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=_empty)
    frontmatter: Mapping[str, Any] = field(default_factory=_empty)
    version: int | None = None
    path: str | None = None
    body_line: int = 1
    warnings: tuple[str, ...] = ()
    provenance: Provenance | None = None
    include_resolver: IncludeResolver | None = field(default=None, repr=False)

    @property
    def location(self) -> str:
        """``path`` if known, else the id: how errors name this prompt's file."""
        return self.path or self.id

    def render(
        self,
        variables: Mapping[str, Any] | None = None,
        *,
        options: RenderOptions | None = None,
    ) -> RenderedPrompt:
        """Validate ``variables`` against ``input.schema`` and render the body into messages.

        :raises InputValidationError: a required variable is missing or has the wrong type.
        :raises RenderError: the template failed (e.g. an undefined variable in strict mode).
        """
        from promptdock.rendering import render_prompt

        return render_prompt(self, variables or {}, options or DEFAULT_RENDER_OPTIONS)


@dataclass(frozen=True)
class RenderedPrompt:
    """The result of rendering a prompt: OpenAI-shaped messages plus what to send with them.

    :ivar messages: ``[{"role": "system", "content": "..."}, ...]``, ready for any
        OpenAI-compatible API.
    :ivar model: the prompt's ``model`` after rendering it as a template, or ``None``.
    :ivar params: sampling parameters from the frontmatter (``temperature``, ``max_tokens``...),
        a copy made for this render: changing it does not change the prompt.
    :ivar prompt: the prompt that was rendered.
    """

    messages: list[dict[str, Any]]
    model: str | None
    params: dict[str, Any]
    prompt: PromptFile


@dataclass(frozen=True)
class CompletionRequest:
    """Everything a ``dispatch`` plugin needs to call a model.

    :ivar model: the upstream model name (``"gpt-4"``; no source prefix).
    :ivar messages: the final message list.
    :ivar params: sampling and other OpenAI request parameters, precedence already applied.
    :ivar stream: whether the caller wants chunks.
    :ivar api_base: the OpenAI-style base URL (``http://127.0.0.1:8000/v1``), or ``None``.
    :ivar api_key: the key to send upstream, hidden from ``repr``.
    :ivar timeout: seconds to wait for the upstream, ``None`` for the dispatcher's default.
    :ivar mock_response: when set, answer with this text and call nothing.
    :ivar provenance: where the prompt came from, if a prompt was used.
    :ivar extra_headers: extra HTTP headers for the upstream request.
    :ivar max_retries: how many times to retry 429/5xx/connection failures.
    """

    model: str
    messages: list[dict[str, Any]]
    params: Mapping[str, Any] = field(default_factory=_empty)
    stream: bool = False
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float | None = None
    mock_response: str | None = None
    provenance: Provenance | None = None
    extra_headers: Mapping[str, str] = field(default_factory=_empty, repr=False)
    max_retries: int = 2


# Frozen dataclasses set each field through object.__setattr__ in their generated __init__,
# which costs more than the rest of building a request (measured: ~2.5 µs for the eleven
# fields of a CompletionRequest, ~1 µs here). The per-call path builds its requests and
# rendered prompts with these instead: the same instance, field for field (neither class has
# a __post_init__ to run). A test keeps their parameters equal to the classes' fields.


def _new_request(
    model: str,
    messages: list[dict[str, Any]],
    params: Mapping[str, Any],
    stream: bool,
    api_base: str | None,
    api_key: str | None,
    timeout: float | None,
    mock_response: str | None,
    provenance: Provenance | None,
    extra_headers: Mapping[str, str],
    max_retries: int,
) -> CompletionRequest:
    """``CompletionRequest(...)`` with every field given by position, built cheaply."""
    request = object.__new__(CompletionRequest)
    fields = request.__dict__
    fields["model"] = model
    fields["messages"] = messages
    fields["params"] = params
    fields["stream"] = stream
    fields["api_base"] = api_base
    fields["api_key"] = api_key
    fields["timeout"] = timeout
    fields["mock_response"] = mock_response
    fields["provenance"] = provenance
    fields["extra_headers"] = extra_headers
    fields["max_retries"] = max_retries
    return request


def _new_rendered(
    messages: list[dict[str, Any]], model: str | None, params: dict[str, Any], prompt: PromptFile
) -> RenderedPrompt:
    """``RenderedPrompt(...)`` with every field given by position, built cheaply."""
    rendered = object.__new__(RenderedPrompt)
    fields = rendered.__dict__
    fields["messages"] = messages
    fields["model"] = model
    fields["params"] = params
    fields["prompt"] = prompt
    return rendered
