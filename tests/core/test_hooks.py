"""Each hook, exercised through a plugin registered on a fresh manager."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Mapping
from typing import Any

import tests.support.memory_source as memory_source
from promptdock import (
    CompletionRequest,
    ModelResponse,
    PromptDock,
    PromptFile,
    PromptInfo,
    RenderedPrompt,
    RenderOptions,
    SourceConfig,
    SourceKind,
    hookimpl,
    parse_prompt,
)


def _dock(*plugins: tuple[str, object], files: Mapping[str, str] | None = None) -> PromptDock:
    sources = {"mem": {"kind": "memory", "files": dict(files or {"hi.prompt": "User: hi {{x}}"})}}
    return PromptDock(
        sources=sources, load_entrypoints=False, plugins=[("memory", memory_source), *plugins]
    )


def test_hook_source_kinds() -> None:
    class Kinds:
        @hookimpl
        def source_kinds(self) -> list[SourceKind]:
            return [SourceKind("custom", aliases=("cu",), distribution="custom-dist")]

    dock = _dock(("kinds", Kinds()))
    kinds = dock.plugin_host.source_kinds()
    assert kinds["cu"].name == "custom"
    assert kinds["memory"].distribution == "tests"


def test_hook_load_prompt() -> None:
    class Constant:
        @hookimpl(tryfirst=True)
        def load_prompt(self, source: SourceConfig, prompt_id: str) -> PromptFile | None:
            if prompt_id != "constant":
                return None  # leave every other id to the memory source
            return parse_prompt("User: constant", name=prompt_id)

    dock = _dock(("constant", Constant()))
    assert dock.get_prompt("constant").body == "User: constant"
    assert dock.get_prompt("hi").body == "User: hi {{x}}"


def test_hook_list_prompts() -> None:
    class Extra:
        @hookimpl
        def list_prompts(self, source: SourceConfig) -> list[PromptInfo]:
            return [PromptInfo(id="extra", source=source.name)]

    dock = _dock(("extra", Extra()))
    assert [info.id for info in dock.list_prompts("mem")] == ["extra", "hi"]


def test_hook_render() -> None:
    class Shout:
        @hookimpl
        def render(
            self, prompt: PromptFile, variables: Mapping[str, Any], options: RenderOptions
        ) -> RenderedPrompt | None:
            if prompt.frontmatter.get("template_format") != "shout":
                return None
            return RenderedPrompt(
                [{"role": "user", "content": prompt.body.upper()}], None, {}, prompt
            )

    files = {"hi.prompt": "User: hi {{x}}", "loud.prompt": "---\ntemplate_format: shout\n---\nhey"}
    dock = _dock(("shout", Shout()), files=files)
    assert dock.render("loud").messages == [{"role": "user", "content": "HEY"}]
    assert dock.render("hi", {"x": "there"}).messages == [{"role": "user", "content": "hi there"}]


def test_hook_dispatch() -> None:
    seen: list[str] = []

    class Echo:
        @hookimpl
        def dispatch(self, request: CompletionRequest) -> ModelResponse | None:
            if not request.model.startswith("echo/"):
                return None
            return ModelResponse.from_text(request.messages[-1]["content"], model=request.model)

    class Timing:
        @hookimpl(wrapper=True)
        def dispatch(self, request: CompletionRequest) -> Generator[None, Any, Any]:
            seen.append(request.model)
            result = yield
            return result

    dock = _dock(("echo", Echo()), ("timing", Timing()))
    reply = dock.completion(model="mem/echo/1", prompt_id="hi", prompt_variables={"x": "you"})
    assert isinstance(reply, ModelResponse)
    assert reply.choices[0].message.content == "hi you"
    assert seen == ["echo/1"]


def test_hook_invalidate() -> None:
    calls: list[tuple[str, str | None]] = []

    class Remote:
        @hookimpl
        def invalidate(self, source: SourceConfig, ref: str | None) -> bool | None:
            calls.append((source.name, ref))
            return True

    assert _dock().invalidate("mem") is False  # nothing serves invalidation for memory sources
    dock = _dock(("remote", Remote()))
    assert dock.invalidate("mem", "main") is True
    assert calls == [("mem", "main")]


def test_hook_adispatch() -> None:
    class AsyncEcho:
        @hookimpl
        def adispatch(self, request: CompletionRequest) -> Any:
            if not request.model.startswith("aecho/"):
                return None

            async def answer() -> ModelResponse:
                return ModelResponse.from_text(
                    "async " + request.messages[-1]["content"], model="m"
                )

            return answer()

    dock = _dock(("aecho", AsyncEcho()))
    reply = asyncio.run(
        dock.acompletion("mem/aecho/1", prompt_id="hi", prompt_variables={"x": "1"})
    )
    assert isinstance(reply, ModelResponse)
    assert reply.choices[0].message.content == "async hi 1"
    assert reply.prompt is not None
    assert reply.prompt.prompt_id == "hi"
