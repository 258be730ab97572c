"""promptdock: GitOps for LLM prompts.

Quick start (LiteLLM-compatible names)::

    import promptdock
    promptdock.global_prompt_directory = "prompts/"
    reply = promptdock.completion(model="dotprompt/gpt-4", prompt_id="hello",
                                  prompt_variables={"user_message": "Hi"})
    print(reply.choices[0].message.content, reply.prompt)

For an application, prefer the object API, which holds no global state::

    dock = promptdock.PromptDock(prompt_directory="prompts/")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from promptdock._dock import PromptDock
from promptdock._globals import (
    acompletion,
    completion,
    default_dock,
    set_global_bitbucket_config,
)
from promptdock._manager import PluginRecord
from promptdock.errors import (
    ConfigError,
    DispatchError,
    InputValidationError,
    PluginLoadError,
    PromptdockError,
    PromptNotFoundError,
    PromptSyntaxError,
    RenderError,
    SourceAuthError,
    SourceUnavailableError,
    TemplateSecurityError,
    UnsafePromptIdError,
    UpstreamTimeoutError,
)
from promptdock.ids import check_prompt_id
from promptdock.models import (
    CompletionRequest,
    PromptFile,
    PromptInfo,
    Provenance,
    RenderedPrompt,
    RenderOptions,
    SourceConfig,
    SourceKind,
)
from promptdock.response import AsyncCompletionStream, CompletionStream, ModelResponse, ObjectDict

if TYPE_CHECKING:
    from promptdock.picoschema import picoschema_to_json_schema
    from promptdock.prompt_file import parse_prompt

__all__ = [
    "AsyncCompletionStream",
    "CompletionRequest",
    "CompletionStream",
    "ConfigError",
    "DispatchError",
    "InputValidationError",
    "ModelResponse",
    "ObjectDict",
    "PluginLoadError",
    "PluginRecord",
    "PromptDock",
    "PromptFile",
    "PromptInfo",
    "PromptNotFoundError",
    "PromptSyntaxError",
    "PromptdockError",
    "Provenance",
    "RenderError",
    "RenderOptions",
    "RenderedPrompt",
    "SourceAuthError",
    "SourceConfig",
    "SourceKind",
    "SourceUnavailableError",
    "TemplateSecurityError",
    "UnsafePromptIdError",
    "UpstreamTimeoutError",
    "__version__",
    "acompletion",
    "check_prompt_id",
    "completion",
    "default_dock",
    "global_prompt_directory",
    "hookimpl",
    "parse_prompt",
    "picoschema_to_json_schema",
    "set_global_bitbucket_config",
]

hookimpl = pluggy.HookimplMarker("promptdock")
"""Decorate a plugin function with this to implement a hook from :mod:`promptdock.hookspecs`."""

global_prompt_directory: str | None = None
"""The folder behind ``model="dotprompt/..."`` for :func:`completion` (LiteLLM's name).

``None`` means ``$PROMPTDOCK_PROMPT_DIR``, else ``./prompts``. Read on every call, so it can be
changed at any time.
"""

_LAZY = {
    "parse_prompt": "promptdock.prompt_file",
    "picoschema_to_json_schema": "promptdock.picoschema",
}


def __getattr__(name: str) -> Any:
    # Parsing pulls in ruamel.yaml; keep `import promptdock` fast until it is needed.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import version

        return version("promptdock")
    raise AttributeError(f"module 'promptdock' has no attribute {name!r}")
