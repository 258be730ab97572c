"""One exception hierarchy for everything promptdock raises on purpose.

Every error derives from :class:`PromptdockError`; most also derive from the built-in
exception a Python programmer would reach for first (``LookupError`` for a missing prompt,
``ValueError`` for bad syntax or input, ...), so ``except LookupError`` keeps working.

Messages are written for the person who has to fix the problem: they name the prompt, the file
and the line where known, and say what to do. Secrets never appear in a message or in ``args``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DispatchError",
    "InputValidationError",
    "PluginLoadError",
    "PromptNotFoundError",
    "PromptSyntaxError",
    "PromptdockError",
    "RenderError",
    "SourceAuthError",
    "SourceUnavailableError",
    "TemplateSecurityError",
    "UnsafePromptIdError",
    "UpstreamTimeoutError",
]


class PromptdockError(Exception):
    """Root of every error promptdock raises on purpose."""


class ConfigError(PromptdockError, ValueError):
    """A configuration value is missing, of the wrong type, or refers to nothing.

    :ivar key: the dotted path of the offending key (``"sources.team-a.workspace"``), if known.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class PluginLoadError(PromptdockError, ImportError):
    """A plugin could not be imported or registered.

    :ivar plugin: the entry-point name of the plugin.
    :ivar distribution: ``"name version"`` of the distribution that provides it, if known.
    """

    def __init__(self, message: str, *, plugin: str, distribution: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.distribution = distribution


class PromptNotFoundError(PromptdockError, LookupError):
    """No source has a prompt with the requested id (and version).

    :ivar prompt_id: the id that was asked for.
    :ivar source: the name of the source that was searched.
    :ivar suggestions: the closest existing ids, best first (may be empty).
    """

    def __init__(
        self,
        message: str,
        *,
        prompt_id: str,
        source: str | None = None,
        suggestions: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.prompt_id = prompt_id
        self.source = source
        self.suggestions = suggestions


class UnsafePromptIdError(PromptNotFoundError, ValueError):
    """A prompt id tries to leave its source (``../x``, absolute paths, NUL bytes, ...)."""


class PromptSyntaxError(PromptdockError, ValueError):
    """A ``.prompt`` file cannot be parsed: bad frontmatter, YAML, schema or template syntax.

    :ivar path: the file (or prompt name) the error is in, if known.
    :ivar line: 1-based line number in that file, if known.
    :ivar column: 1-based column, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column


class InputValidationError(PromptdockError, ValueError):
    """The variables passed to a prompt do not match its ``input.schema``.

    :ivar prompt_id: the prompt whose schema was violated.
    :ivar field: dotted path of the offending variable (``"user.name"``), or ``None`` for the root.
    """

    def __init__(self, message: str, *, prompt_id: str | None, field: str | None) -> None:
        super().__init__(message)
        self.prompt_id = prompt_id
        self.field = field


class RenderError(PromptdockError, ValueError):
    """A template failed while rendering (an undefined variable in strict mode, a filter...)."""


class TemplateSecurityError(RenderError):
    """A template tried something the sandbox forbids (attribute walks, huge outputs, ...)."""


class SourceAuthError(PromptdockError, PermissionError):
    """A remote source rejected the credentials, or they lack a required permission."""


class SourceUnavailableError(PromptdockError, ConnectionError):
    """A remote source could not be reached and no cached copy exists."""


class DispatchError(PromptdockError):
    """The model call failed: the upstream answered with an error or could not be reached.

    :ivar status_code: the upstream HTTP status, if there was one.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class UpstreamTimeoutError(DispatchError, TimeoutError):
    """The upstream model server did not answer within the timeout."""
