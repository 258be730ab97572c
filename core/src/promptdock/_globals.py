"""The module-level API (``promptdock.completion`` and friends), backed by one default PromptDock.

LiteLLM users configure prompt sources through module globals; these functions translate
those globals into sources of a default :class:`PromptDock` on every call (a cheap check).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import Any, Literal, overload

from promptdock._dock import PromptDock
from promptdock.models import SourceConfig
from promptdock.response import AsyncCompletionStream, CompletionStream, ModelResponse

__all__ = [
    "DEFAULT_PROMPT_DIR",
    "acompletion",
    "completion",
    "default_dock",
    "set_global_bitbucket_config",
]

DEFAULT_PROMPT_DIR = "prompts"
"""The prompt folder of the ``dotprompt`` source when neither ``global_prompt_directory`` nor
``$PROMPTDOCK_PROMPT_DIR`` names one: the SDK's default, and ``promptdock --prompt-dir``'s."""

_lock = threading.Lock()
_dock: PromptDock | None = None
_synced_directory: str | None = None


def _prompt_directory() -> str:
    configured = sys.modules["promptdock"].__dict__.get("global_prompt_directory")
    if configured:
        return str(configured)
    return os.environ.get("PROMPTDOCK_PROMPT_DIR") or DEFAULT_PROMPT_DIR


def default_dock() -> PromptDock:
    """The :class:`PromptDock` behind the module-level functions, in sync with the globals."""
    global _dock, _synced_directory
    directory = _prompt_directory()
    dock = _dock
    if dock is not None and directory == _synced_directory:
        return dock
    with _lock:
        if _dock is None:
            _dock = PromptDock()
        if directory != _synced_directory:
            _dock.add_source(SourceConfig("dotprompt", "filesystem", {"path": directory}))
            _synced_directory = directory
        return _dock


def set_global_bitbucket_config(config: Mapping[str, Any] | None) -> None:
    """Use this Bitbucket repository for ``model="bitbucket/..."`` (``None`` removes it).

    Keys: ``workspace``, ``repository``, ``access_token``, ``branch`` and the others documented
    in ``promptdock-bitbucket``. Checked on first use, so the plugin may be installed later.
    """
    dock = default_dock()
    if config is None:
        dock.remove_source("bitbucket")
    else:
        dock.add_source(SourceConfig("bitbucket", "bitbucket", dict(config)))


@overload
def completion(
    model: str,
    messages: list[dict[str, Any]] | None = None,
    *,
    stream: Literal[False] = False,
    **kwargs: Any,
) -> ModelResponse: ...
@overload
def completion(
    model: str,
    messages: list[dict[str, Any]] | None = None,
    *,
    stream: Literal[True],
    **kwargs: Any,
) -> CompletionStream: ...
@overload
def completion(
    model: str, messages: list[dict[str, Any]] | None = None, *, stream: bool, **kwargs: Any
) -> ModelResponse | CompletionStream: ...
def completion(
    model: str, messages: list[dict[str, Any]] | None = None, **kwargs: Any
) -> ModelResponse | CompletionStream:
    """Render a prompt and call a model: :meth:`PromptDock.completion` on the default dock.

    ``promptdock.completion(model="dotprompt/gpt-4", prompt_id="hello",
    prompt_variables={"user_message": "Hi"})`` reads ``prompts/hello.prompt`` from
    :data:`promptdock.global_prompt_directory`.
    """
    result: ModelResponse | CompletionStream = default_dock().completion(model, messages, **kwargs)
    return result


@overload
async def acompletion(
    model: str,
    messages: list[dict[str, Any]] | None = None,
    *,
    stream: Literal[False] = False,
    **kwargs: Any,
) -> ModelResponse: ...
@overload
async def acompletion(
    model: str,
    messages: list[dict[str, Any]] | None = None,
    *,
    stream: Literal[True],
    **kwargs: Any,
) -> AsyncCompletionStream: ...
@overload
async def acompletion(
    model: str, messages: list[dict[str, Any]] | None = None, *, stream: bool, **kwargs: Any
) -> ModelResponse | AsyncCompletionStream: ...
async def acompletion(
    model: str, messages: list[dict[str, Any]] | None = None, **kwargs: Any
) -> ModelResponse | AsyncCompletionStream:
    """:func:`completion` for async code (``await promptdock.acompletion(...)``)."""
    result: ModelResponse | AsyncCompletionStream = await default_dock().acompletion(
        model, messages, **kwargs
    )
    return result
