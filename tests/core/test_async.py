"""acompletion: the async path gives the same answers as completion."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import tests.support.memory_source as memory_source
from promptdock import (
    AsyncCompletionStream,
    CompletionRequest,
    DispatchError,
    ModelResponse,
    PromptDock,
    PromptNotFoundError,
    hookimpl,
)
from tests.support.openai_server import OpenAIServer

FILES = {"hello.prompt": "---\nmodel: gpt-4\ntemperature: 0.5\n---\nSystem: Be brief.\nUser: {{q}}"}


def _dock(*plugins: tuple[str, object]) -> PromptDock:
    return PromptDock(
        sources={"mem": {"kind": "memory", "files": FILES}},
        load_entrypoints=False,
        plugins=[("memory", memory_source), *plugins],
    )


def test_acompletion_with_mock_response() -> None:
    reply = asyncio.run(
        _dock().acompletion(
            "mem/gpt-4", prompt_id="hello", prompt_variables={"q": "hi"}, mock_response="ok"
        )
    )
    assert isinstance(reply, ModelResponse)
    assert reply.choices[0].message.content == "ok"
    assert reply.prompt is not None
    assert reply.prompt.source == "mem"


def test_acompletion_streams_mock_chunks() -> None:
    async def collect() -> tuple[str, Any]:
        stream = await _dock().acompletion(
            "mem/mock/echo", prompt_id="hello", prompt_variables={"q": "hi"}, stream=True
        )
        assert isinstance(stream, AsyncCompletionStream)
        text = "".join([c.choices[0].delta.get("content") or "" async for c in stream])
        return text, stream.prompt

    text, provenance = asyncio.run(collect())
    assert text == "system: Be brief.\n\nuser: hi"
    assert provenance.prompt_id == "hello"


def test_sync_only_dispatcher_runs_in_a_worker_thread() -> None:
    threads: list[str] = []

    class SyncOnly:
        @hookimpl(tryfirst=True)
        def dispatch(self, request: CompletionRequest) -> ModelResponse:
            threads.append(threading.current_thread().name)
            return ModelResponse.from_text("sync", model=request.model)

    async def call() -> Any:
        return await _dock(("sync", SyncOnly())).acompletion(
            "mem/gpt-4", prompt_id="hello", prompt_variables={"q": "x"}
        )

    reply = asyncio.run(call())
    assert reply.choices[0].message.content == "sync"
    assert threads
    assert threads[0] != threading.main_thread().name


def test_http_upstream_from_async_code(openai_server: OpenAIServer) -> None:
    async def call() -> tuple[Any, str]:
        dock = _dock()
        reply = await dock.acompletion(
            "mem/x",
            prompt_id="hello",
            prompt_variables={"q": "plain"},
            api_base=openai_server.base_url,
            api_key="k",
        )
        stream = await dock.acompletion(
            "mem/x",
            prompt_id="hello",
            prompt_variables={"q": "streamed"},
            api_base=openai_server.base_url,
            api_key="k",
            stream=True,
        )
        assert isinstance(stream, AsyncCompletionStream)
        text = "".join([c.choices[0].delta.get("content") or "" async for c in stream])
        return reply, text

    reply, text = asyncio.run(call())
    assert reply.choices[0].message.content == "echo: plain"
    assert text == "echo: streamed"
    assert [r.body["temperature"] for r in openai_server.requests] == [0.5, 0.5]


def test_async_errors_are_the_same_types() -> None:
    with pytest.raises(PromptNotFoundError):
        asyncio.run(_dock().acompletion("mem/gpt-4", prompt_id="missing"))

    async def no_dispatcher() -> Any:
        return await _dock().acompletion("gpt-4", [{"role": "user", "content": "x"}])

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMPTDOCK_BLOCK_PLUGINS", "mock,openai,openai-async")
        with pytest.raises(DispatchError, match="no dispatcher accepted"):
            asyncio.run(no_dispatcher())


def test_a_sync_only_dispatch_plugin_keeps_its_place_on_the_async_path() -> None:
    class SyncFirst:
        @hookimpl(tryfirst=True)
        def dispatch(self, request: CompletionRequest) -> ModelResponse | None:
            if request.model != "special":
                return None
            return ModelResponse.from_text("from the sync plugin", model=request.model)

    dock = _dock(("sync-first", SyncFirst()))
    assert dock.plugin_host.sync_only_dispatch() is True
    special = asyncio.run(dock.acompletion("special", [{"role": "user", "content": "x"}]))
    mocked = asyncio.run(
        dock.acompletion(
            "mem/gpt-4", prompt_id="hello", prompt_variables={"q": "x"}, mock_response="m"
        )
    )
    assert isinstance(special, ModelResponse)
    assert isinstance(mocked, ModelResponse)
    assert special.choices[0].message.content == "from the sync plugin"
    assert mocked.choices[0].message.content == "m"
    assert _dock().plugin_host.sync_only_dispatch() is False  # built-ins alone: async path


def test_dispatch_wrapped_notices_wrappers_registered_at_any_time() -> None:
    class Timing:
        @hookimpl(wrapper=True)
        def dispatch(self, request: CompletionRequest) -> Any:
            return (yield)

    class OldStyle:
        @hookimpl(hookwrapper=True)
        def adispatch(self, request: CompletionRequest) -> Any:
            yield

    class Plain:
        @hookimpl
        def adispatch(self, request: CompletionRequest) -> None:
            return None

    dock = _dock(("plain", Plain()))
    host = dock.plugin_host
    assert host.dispatch_wrapped() is False
    host.register(Timing(), "timing")
    assert host.dispatch_wrapped() is True
    host.unregister("timing")
    assert host.dispatch_wrapped() is False
    host.register(OldStyle(), "old-style")
    assert host.dispatch_wrapped() is True
    assert host.sync_only_dispatch() is False
