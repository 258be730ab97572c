"""OpenAI-shaped results with both attribute and dict access.

``r.choices[0].message.content`` and ``r["choices"][0]["message"]["content"]`` both work,
``json.dumps(r)`` gives the wire format, and ``r.prompt`` tells which prompt produced it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from promptdock.models import Provenance

__all__ = [
    "AsyncCompletionStream",
    "CompletionStream",
    "ModelResponse",
    "ObjectDict",
    "StreamChunk",
]


def _wrap(value: Any) -> Any:
    if type(value) is dict:
        return ObjectDict(value)
    if type(value) is list:
        return [_wrap(v) for v in value]
    return value


class ObjectDict(dict[str, Any]):
    """A dict whose keys are also attributes, recursively (``d.choices[0].message``)."""

    __slots__ = ()

    def __init__(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        super().__init__()
        for key, value in {**(data or {}), **kwargs}.items():
            dict.__setitem__(self, key, _wrap(value))

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = _wrap(value)

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, _wrap(value))

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy (nested values plain too)."""
        return _unwrap(self)  # type: ignore[no-any-return]


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


StreamChunk = ObjectDict
"""One ``chat.completion.chunk`` of a streamed answer."""


class ModelResponse(ObjectDict):
    """A ``chat.completion`` object; :attr:`prompt` holds the provenance of the prompt used."""

    __slots__ = ("_prompt",)

    def __init__(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        object.__setattr__(self, "_prompt", None)

    @property
    def prompt(self) -> Provenance | None:
        """Where the prompt came from (source, id, version, path, ref, sha), or ``None``."""
        return self._prompt  # type: ignore[no-any-return]

    def with_prompt(self, provenance: Provenance | None) -> ModelResponse:
        """Attach provenance in place and return ``self``."""
        object.__setattr__(self, "_prompt", provenance)
        return self

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        finish_reason: str = "stop",
    ) -> ModelResponse:
        """A one-choice assistant answer, as an OpenAI server would send it."""
        return cls(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


class CompletionStream:
    """The chunks of a streamed completion, with the prompt's provenance alongside.

    Iterate it once: ``for chunk in stream: print(chunk.choices[0].delta.content or "")``.
    """

    def __init__(self, chunks: Iterator[StreamChunk], prompt: Provenance | None) -> None:
        self._chunks = chunks
        self.prompt = prompt

    def __iter__(self) -> Iterator[StreamChunk]:
        return self

    def __next__(self) -> StreamChunk:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early and release the upstream connection."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class AsyncCompletionStream:
    """The async counterpart of :class:`CompletionStream`: ``async for chunk in stream``."""

    def __init__(self, chunks: AsyncIterator[StreamChunk], prompt: Provenance | None) -> None:
        self._chunks = chunks
        self.prompt = prompt

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self

    async def __anext__(self) -> StreamChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop early and release the upstream connection."""
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
