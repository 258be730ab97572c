"""The contract every prompt source plugin must pass, as a pytest test class.

Subclass :class:`SourceContract` in your plugin's tests and provide a ``make_source`` fixture
that stores the given files in your backend and returns the :class:`SourceConfig` reading
them. Every test below then runs against your plugin::

    class TestMySource(SourceContract):
        @pytest.fixture
        def make_source(self, tmp_path):
            def make(files):
                for path, text in files.items():
                    ...  # write ``text`` at ``path`` in your backend
                return SourceConfig("mine", "mykind", {...})
            return make

Paths in ``files`` are relative to the source's prompt folder (``"support/triage.prompt"``).
Override :meth:`make_dock` to register your plugin explicitly instead of through its entry
point. Requires pytest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import pytest

from promptdock._dock import PromptDock
from promptdock.errors import (
    PromptdockError,
    PromptNotFoundError,
    PromptSyntaxError,
    UnsafePromptIdError,
)
from promptdock.models import SourceConfig

__all__ = ["HELLO", "TRAVERSAL_IDS", "SourceContract"]

MakeSource = Callable[[Mapping[str, str]], SourceConfig]

HELLO = """---
model: gpt-4
temperature: 0.7
input:
  schema:
    user_message: string
---
System: You are a helpful assistant.

User: {{user_message}}
"""

BROKEN = """---
model: gpt-4
temperature: [0.7
---
User: hi
"""

TRAVERSAL_IDS = (
    "../secret",
    "../../etc/passwd",
    "/etc/passwd",
    "support/../../secret",
    "..",
    ".",
    "./hello",
    "a//b",
    "hello/",
    "C:\\Windows\\win",
    "C:/Windows/win",
    "support\\triage",
    "hel\x00lo",
    "%2e%2e/secret",
    "..%2fsecret",
    "%252e%252e%252fsecret",
    ".hidden",
    "support/.hidden",
    "\u2024\u2024/secret",
    "hello\n",
    "",
)
"""Ids every source must refuse with :class:`UnsafePromptIdError`."""


class SourceContract:
    """Behaviour every source must share. Subclass it and provide ``make_source``."""

    @pytest.fixture
    def make_source(self) -> MakeSource:
        """Store files in the backend and return the source config reading them."""
        raise NotImplementedError("subclasses of SourceContract must define make_source")

    def make_dock(self, source: SourceConfig) -> PromptDock:
        """The PromptDock under test; by default plugins come from their entry points."""
        return PromptDock(sources=[source])

    def _dock(self, make_source: MakeSource, files: Mapping[str, str]) -> tuple[PromptDock, str]:
        source = make_source(files)
        return self.make_dock(source), source.name

    def test_found(self, make_source: MakeSource) -> None:
        dock, name = self._dock(make_source, {"hello.prompt": HELLO})
        prompt = dock.get_prompt("hello", source=name)
        assert prompt.id == "hello"
        assert prompt.model == "gpt-4"
        assert dict(prompt.params) == {"temperature": 0.7}
        rendered = dock.render("hello", {"user_message": "Hi"}, source=name)
        assert rendered.messages == [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hi"},
        ]

    def test_not_found_suggests_closest(self, make_source: MakeSource) -> None:
        dock, name = self._dock(make_source, {"hello.prompt": HELLO, "goodbye.prompt": HELLO})
        with pytest.raises(PromptNotFoundError) as info:
            dock.get_prompt("helo", source=name)
        assert info.value.prompt_id == "helo"
        assert "hello" in info.value.suggestions
        assert "'helo'" in str(info.value)
        assert "hello" in str(info.value)

    def test_listing(self, make_source: MakeSource) -> None:
        files = {
            "hello.prompt": HELLO,
            "support/triage.prompt": HELLO,
            "support/deep/escalate.prompt": HELLO,
            "chat.v1.prompt": HELLO,
            "chat.v2.prompt": HELLO,
        }
        dock, name = self._dock(make_source, files)
        listing = {info.id: info for info in dock.list_prompts(name)}
        assert sorted(listing) == ["chat", "hello", "support/deep/escalate", "support/triage"]
        assert listing["chat"].versions == (1, 2)
        assert listing["chat"].has_unversioned is False
        assert listing["hello"].versions == ()
        assert all(info.source == name and info.error is None for info in listing.values())

    def test_versions(self, make_source: MakeSource) -> None:
        files = {
            "hello.prompt": HELLO.replace("gpt-4", "model-plain"),
            "hello.v1.prompt": HELLO.replace("gpt-4", "model-v1"),
            "hello.v2.prompt": HELLO.replace("gpt-4", "model-v2"),
            "only.v3.prompt": HELLO.replace("gpt-4", "model-only-v3"),
            "only.v10.prompt": HELLO.replace("gpt-4", "model-only-v10"),
        }
        dock, name = self._dock(make_source, files)
        assert dock.get_prompt("hello", source=name).model == "model-plain"
        assert dock.get_prompt("hello", source=name, version=2).model == "model-v2"
        assert dock.get_prompt("hello.v1", source=name).model == "model-v1"
        highest = dock.get_prompt("only", source=name)
        assert highest.model == "model-only-v10"
        assert highest.version == 10
        with pytest.raises(PromptNotFoundError, match="no version 7"):
            dock.get_prompt("hello", source=name, version=7)

    def test_subfolders(self, make_source: MakeSource) -> None:
        files = {"support/triage.prompt": HELLO.replace("gpt-4", "triage-model")}
        dock, name = self._dock(make_source, files)
        prompt = dock.get_prompt("support/triage", source=name)
        assert prompt.model == "triage-model"
        assert prompt.provenance is not None
        assert prompt.provenance.path is not None
        assert prompt.provenance.path.endswith("support/triage.prompt")

    @pytest.mark.parametrize("prompt_id", TRAVERSAL_IDS)
    def test_traversal_refused(self, make_source: MakeSource, prompt_id: str) -> None:
        dock, name = self._dock(make_source, {"hello.prompt": HELLO})
        with pytest.raises(UnsafePromptIdError) as info:
            dock.get_prompt(prompt_id, source=name)
        assert "refused prompt" in str(info.value)

    def test_provenance(self, make_source: MakeSource) -> None:
        dock, name = self._dock(make_source, {"hello.v2.prompt": HELLO})
        prompt = dock.get_prompt("hello", source=name)
        provenance = prompt.provenance
        assert provenance is not None
        assert provenance.source == name
        assert provenance.prompt_id == "hello"
        assert provenance.version == 2
        assert provenance.content_hash == hashlib.sha256(HELLO.encode()).hexdigest()
        assert provenance.is_stale is False

    def test_broken_file_is_a_typed_error_and_listed(self, make_source: MakeSource) -> None:
        dock, name = self._dock(make_source, {"broken.prompt": BROKEN, "hello.prompt": HELLO})
        with pytest.raises(PromptSyntaxError) as info:
            dock.get_prompt("broken", source=name)
        assert info.value.line is not None
        assert "broken" in str(info.value)
        listing = {i.id: i for i in dock.list_prompts(name)}
        assert listing["broken"].error is not None
        assert listing["hello"].error is None

    def test_include_resolves_in_same_source(self, make_source: MakeSource) -> None:
        files = {
            "_shared/tone.prompt": "Be concise.",
            "greet.prompt": 'System: {% include "_shared/tone.prompt" %}\nUser: {{ name }}',
        }
        dock, name = self._dock(make_source, files)
        rendered = dock.render("greet", {"name": "Ada"}, source=name)
        assert rendered.messages == [
            {"role": "system", "content": "Be concise."},
            {"role": "user", "content": "Ada"},
        ]
        assert "_shared/tone" not in {i.id for i in dock.list_prompts(name)}

    def test_a_badly_named_file_is_listed_with_its_error(self, make_source: MakeSource) -> None:
        dock, name = self._dock(make_source, {"hello.prompt": HELLO, "50% off.prompt": HELLO})
        listing = {info.id: info for info in dock.list_prompts(name)}
        assert listing["hello"].error is None
        assert listing["50% off"].error is not None

    def test_errors_share_one_root(self, make_source: MakeSource) -> None:
        dock, name = self._dock(make_source, {"hello.prompt": HELLO})
        for bad in ("missing", "../x"):
            with pytest.raises(PromptdockError):
                dock.get_prompt(bad, source=name)
