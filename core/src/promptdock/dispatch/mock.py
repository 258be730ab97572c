"""The offline dispatcher: canned or echoed answers, with no network and no randomness.

It answers a request when ``mock_response`` is set (with exactly that text) or when the model
starts with ``mock/`` (with the rendered messages echoed back, so a quick start shows what a
prompt rendered to). Every other request is left to the next dispatcher.

Its ``usage`` is an estimate, as no tokenizer is at hand: one token per four characters of
text, rounded up, per message (and for the answer), the rule of thumb OpenAI gives for English.

It sits on the benchmarked per-call path, so it avoids per-call work it can skip: ids come from
a counter rather than ``uuid4``, token counts come from lengths rather than from splitting the
text into words, and the regular expression is compiled once.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from typing import Any

import pluggy

from promptdock import models
from promptdock.models import CompletionRequest
from promptdock.response import ModelResponse, ObjectDict, StreamChunk

__all__ = ["MOCK_PREFIX", "adispatch", "dispatch", "echo_text", "mock_chunks", "mock_response"]

# Imported from pluggy rather than ``promptdock`` so that importing this module never triggers
# the package ``__init__`` while the plugin manager is being built.
hookimpl = pluggy.HookimplMarker("promptdock")
"""Marks this module's hook implementations (same marker as ``promptdock.hookimpl``)."""

MOCK_PREFIX = models.MOCK_PREFIX
"""Models starting with this are answered offline with an echo of the messages."""

# A random per-process prefix plus a counter: ids stay unique across processes, yet making
# one costs a fraction of a uuid4.
_ID_PREFIX = f"chatcmpl-mock-{uuid.uuid4().hex[:12]}-"
_ids = itertools.count(1)

# A stream piece is up to three words with the whitespace around them, so joining the pieces
# gives back the text exactly.
_PIECE = re.compile(r"\s*(?:\S+\s*){1,3}")


@hookimpl
def dispatch(request: CompletionRequest) -> ModelResponse | Iterator[StreamChunk] | None:
    """Answer ``request`` offline if it asks for a mock, else return ``None``.

    :returns: a :class:`~promptdock.ModelResponse` with ``mock_response`` (or the echo of the
        messages for ``mock/...`` models) as the assistant's message; an iterator of
        ``chat.completion.chunk`` dicts when ``request.stream`` is true; ``None`` for any
        other request.
    """
    text = request.mock_response
    if text is None:
        if not request.model.startswith(MOCK_PREFIX):
            return None
        text = echo_text(request.messages)
    if request.stream:
        usage = _wants_usage(request)
        prompt_tokens = _count_tokens(request.messages) if usage else 0
        return mock_chunks(
            text, model=request.model, include_usage=usage, prompt_tokens=prompt_tokens
        )
    return mock_response(text, model=request.model, prompt_tokens=_count_tokens(request.messages))


@hookimpl
def adispatch(
    request: CompletionRequest,
) -> Coroutine[Any, Any, ModelResponse | AsyncIterator[StreamChunk]] | None:
    """The async face of :func:`dispatch`: the same answers, without a worker thread."""
    answer = dispatch(request)
    if answer is None:
        return None
    return _ready(answer)


async def _ready(answer: ModelResponse | Iterator[StreamChunk]) -> Any:
    if isinstance(answer, ModelResponse):
        return answer
    return _async_chunks(answer)


async def _async_chunks(chunks: Iterator[StreamChunk]) -> AsyncIterator[StreamChunk]:
    for chunk in chunks:
        yield chunk


def echo_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """What a ``mock/...`` model answers: ``"<role>: <content>"`` blocks, blank-line separated."""
    return "\n\n".join(
        f"{message.get('role', 'user')}: {_content_text(message.get('content'))}"
        for message in messages
    )


def mock_response(text: str, *, model: str, prompt_tokens: int = 0) -> ModelResponse:
    """A ``chat.completion`` answering ``text``; usage is estimated from lengths (module docs).

    Equal to :meth:`ModelResponse.from_text` but about three times cheaper: the id comes from a
    counter, and the nested objects are built directly as ``ObjectDict`` instead of being
    converted from plain dicts.
    """
    # The nested objects are filled in place (what _obj and _usage do, inlined: per call).
    completion_tokens = (len(text) + 3) // 4  # _estimate_tokens(text)
    message = _new_obj(ObjectDict)
    _fill(message, {"role": "assistant", "content": text})
    choice = _new_obj(ObjectDict)
    _fill(choice, {"index": 0, "message": message, "finish_reason": "stop"})
    usage = _new_obj(ObjectDict)
    _fill(
        usage,
        {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    )
    response = _new_obj(ModelResponse)
    _set_slot(response, "_prompt", None)  # what ModelResponse.__init__ sets, at a fifth the cost
    _fill(
        response,
        {
            "id": f"{_ID_PREFIX}{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage,
        },
    )
    return response


def mock_chunks(
    text: str, *, model: str, include_usage: bool = False, prompt_tokens: int = 0
) -> Iterator[StreamChunk]:
    """``text`` as an OpenAI ``chat.completion.chunk`` stream.

    The first chunk carries ``delta: {"role": "assistant"}``, then come pieces of a few words
    each (joined they give ``text`` back exactly), then an empty delta with
    ``finish_reason: "stop"``. With ``include_usage`` (the ``stream_options`` flag) every chunk
    has ``usage: None`` and one last chunk with no choices carries the counts. All chunks share
    one ``id``.
    """
    return _chunks(
        f"{_ID_PREFIX}{next(_ids)}", int(time.time()), model, text, include_usage, prompt_tokens
    )


def _chunks(
    chunk_id: str,
    created: int,
    model: str,
    text: str,
    include_usage: bool,
    prompt_tokens: int,
) -> Iterator[StreamChunk]:
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant"}, None)]
    deltas.extend(({"content": piece}, None) for piece in _PIECE.findall(text) or [text] if piece)
    deltas.append(({}, "stop"))
    for delta, finish_reason in deltas:
        chunk = _obj(
            {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    _obj({"index": 0, "delta": _obj(delta), "finish_reason": finish_reason})
                ],
            }
        )
        if include_usage:
            _fill(chunk, {"usage": None})
        yield chunk
    if include_usage:
        yield _obj(
            {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(prompt_tokens, _estimate_tokens(text)),
            }
        )


# ``ObjectDict`` is a dict subclass without state of its own, so an empty instance filled with
# values that are already ObjectDicts is exactly what its constructor would build, minus the
# recursive conversion this module's hot path does not need. A ``ModelResponse`` adds one slot,
# its provenance, which its constructor sets to ``None``; so does :func:`mock_response`.
_new_obj = ObjectDict.__new__
_fill = dict.update
_set_slot = object.__setattr__


def _obj(values: dict[str, Any]) -> ObjectDict:
    obj = _new_obj(ObjectDict)
    _fill(obj, values)
    return obj


def _usage(prompt_tokens: int, completion_tokens: int) -> ObjectDict:
    return _obj(
        {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    )


def _wants_usage(request: CompletionRequest) -> bool:
    options = request.params.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


def _estimate_tokens(text: str) -> int:
    """The mock's token count for ``text``: one per four characters, rounded up.

    A length is free where splitting a 2 KB prompt into words costs more than the rest of the
    mock's answer; four characters a token is the usual estimate for English text.
    """
    return (len(text) + 3) // 4


def _count_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        total += (len(content if type(content) is str else _content_text(content)) + 3) // 4
    return total


def _content_text(content: Any) -> str:
    if type(content) is str:
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        # OpenAI content parts: keep the text parts, which is all a word count or echo can use.
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return str(content)
