"""Plugin loading: built-ins through the normal path, lazy entry points, isolation of failures."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest

from promptdock import ConfigError, PluginLoadError, SourceKind, hookimpl
from promptdock._manager import PluginHost


class FakeDistribution(metadata.Distribution):
    """An installed distribution that exists only in memory: metadata and entry points."""

    def __init__(self, name: str, version: str, entry_points: list[tuple[str, str]]) -> None:
        lines = "".join(f"{ep_name} = {value}\n" for ep_name, value in entry_points)
        self._files = {
            "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "entry_points.txt": f"[promptdock]\n{lines}" if entry_points else "",
        }

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path: Any) -> Any:
        raise FileNotFoundError(path)


@pytest.fixture
def fake_distributions(monkeypatch: pytest.MonkeyPatch) -> list[FakeDistribution]:
    dists = [
        FakeDistribution("promptdock-memory", "1.2.3", [("memory", "tests.support.memory_source")]),
        FakeDistribution(
            "promptdock-broken", "0.0.1", [("broken", "tests.support.no_such_module")]
        ),
        FakeDistribution("unrelated", "9", []),
    ]

    def distributions() -> Iterator[Any]:
        return iter(dists)

    monkeypatch.setattr(metadata, "distributions", distributions)
    return dists


def test_builtins_are_registered_like_any_plugin() -> None:
    host = PluginHost(load_entrypoints=False)
    builtins = {r.name: r for r in host.plugins() if r.builtin}
    assert set(builtins) == {"jinja2", "mock", "openai", "openai-async"}
    assert builtins["jinja2"].hooks == ("render",)
    assert builtins["mock"].hooks == ("adispatch", "dispatch")


def test_entry_points_load_lazily_and_a_broken_one_does_not_break_others(
    fake_distributions: list[FakeDistribution],
) -> None:
    host = PluginHost()
    assert not host._loaded  # nothing imported until first use
    with pytest.warns(RuntimeWarning, match="broken"):
        records = {r.name: r for r in host.plugins()}
    assert records["memory"].distribution == "promptdock-memory"
    assert records["memory"].version == "1.2.3"
    assert set(records["memory"].hooks) == {"list_prompts", "load_prompt", "source_kinds"}
    error = host.load_errors["broken"]
    assert isinstance(error, PluginLoadError)
    assert "promptdock-broken 0.0.1" in str(error)
    assert "PROMPTDOCK_BLOCK_PLUGINS=broken" in str(error)
    assert records["broken"].error == str(error)
    assert host.resolve_kind("mem").name == "memory"


def test_broken_plugin_error_surfaces_when_its_kind_is_used(
    fake_distributions: list[FakeDistribution],
) -> None:
    host = PluginHost()
    with pytest.warns(RuntimeWarning), pytest.raises(PluginLoadError, match="promptdock-broken"):
        host.resolve_kind("broken")


def test_allow_list_environment_variable(
    fake_distributions: list[FakeDistribution], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTDOCK_LOAD_PLUGINS", "promptdock-memory")
    host = PluginHost()
    assert "memory" in {r.name for r in host.plugins()}
    assert host.load_errors == {}


def test_empty_allow_list_loads_no_entry_points(
    fake_distributions: list[FakeDistribution], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTDOCK_LOAD_PLUGINS", "")
    names = {r.name for r in PluginHost().plugins()}
    assert names == {"jinja2", "mock", "openai", "openai-async"}


def test_block_list_environment_variable(
    fake_distributions: list[FakeDistribution], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTDOCK_BLOCK_PLUGINS", "broken, mock")
    names = {r.name for r in PluginHost().plugins()}
    assert names == {"jinja2", "openai", "openai-async", "memory"}


def test_missing_first_party_kind_says_what_to_install() -> None:
    host = PluginHost(load_entrypoints=False)
    with pytest.raises(ConfigError, match="pip install promptdock-bitbucket"):
        host.resolve_kind("bitbucket")
    with pytest.raises(ConfigError, match="no plugin serves the source kind 'gitea'"):
        host.resolve_kind("gitea")


def test_two_plugins_declaring_one_kind_are_both_named() -> None:
    class First:
        @hookimpl
        def source_kinds(self) -> list[SourceKind]:
            return [SourceKind("same")]

    class Second:
        @hookimpl
        def source_kinds(self) -> list[SourceKind]:
            return [SourceKind("other", aliases=("same",))]

    host = PluginHost(load_entrypoints=False, plugins=[("first", First()), ("second", Second())])
    with pytest.raises(ConfigError, match=r"'first' and 'second'|'second' and 'first'"):
        host.source_kinds()


def test_fast_first_result_caller_follows_pluggy_semantics() -> None:
    from promptdock import CompletionRequest, ModelResponse

    class Late:
        @hookimpl(tryfirst=True)
        def dispatch(self, request: CompletionRequest) -> ModelResponse:
            return ModelResponse.from_text("late", model=request.model)

    host = PluginHost(load_entrypoints=False)
    dispatch = host.first_result("dispatch")
    request = CompletionRequest(model="mock/x", messages=[], mock_response="builtin")
    assert dispatch(request=request).choices[0].message.content == "builtin"
    host.register(Late(), name="late")  # registered after the caller was made: still honoured
    assert dispatch(request=request).choices[0].message.content == "late"
    host.unregister("late")
    assert dispatch(request=request).choices[0].message.content == "builtin"


def test_positional_calls_reach_each_implementation_by_argument_name() -> None:
    from promptdock import PromptFile, SourceConfig

    class Picky:
        @hookimpl
        def load_prompt(self, version: int | None, source: SourceConfig) -> PromptFile:
            # fewer arguments than the spec, in an order of its own
            return PromptFile(id=f"{source.name}-{version}", body="x")

    class Declines:
        @hookimpl(tryfirst=True)
        def load_prompt(self, prompt_id: str) -> None:
            seen.append(prompt_id)

    seen: list[str] = []
    host = PluginHost(load_entrypoints=False, plugins=[("picky", Picky()), ("no", Declines())])
    load = host.first_result("load_prompt")
    source = SourceConfig("s", "kind")
    assert load.call(source, "an-id", 3).id == "s-3"
    assert load(source=source, prompt_id="an-id", version=None).id == "s-None"
    assert seen == ["an-id", "an-id"]


def test_broken_plugin_under_warnings_as_errors_leaves_the_host_usable(
    fake_distributions: list[FakeDistribution],
) -> None:
    host = PluginHost()
    with pytest.raises(RuntimeWarning, match="broken"):
        host.plugins()  # filterwarnings=error turns the load warning into an exception
    names = {record.name for record in host.plugins()}  # no half-loaded host, no re-register
    assert {"jinja2", "mock", "openai", "memory", "broken"} <= names


def test_plugin_name_clash_is_a_config_error_and_the_host_stays_usable() -> None:
    class Impostor:
        @hookimpl
        def source_kinds(self) -> list[SourceKind]:
            return [SourceKind("impostor")]

    host = PluginHost(load_entrypoints=False, plugins=[("mock", Impostor())])
    with pytest.raises(ConfigError, match="cannot register plugin\\(s\\) 'mock'"):
        host.plugins()
    assert {r.name for r in host.plugins()} == {"jinja2", "mock", "openai", "openai-async"}


def test_trace_environment_variable_prints_hook_calls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptdock import CompletionRequest

    monkeypatch.setenv("PROMPTDOCK_TRACE_PLUGINS", "1")
    host = PluginHost(load_entrypoints=False)
    request = CompletionRequest(model="mock/x", messages=[], mock_response="hi")
    assert host.first_result("dispatch")(request=request).choices[0].message.content == "hi"
    assert "dispatch" in capsys.readouterr().err
