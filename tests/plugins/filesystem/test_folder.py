"""Filesystem-specific behaviour: live edits, the parse cache, links, config errors, threads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

import promptdock
import promptdock_filesystem._folder as folder_module
from promptdock import (
    ConfigError,
    PromptDock,
    PromptNotFoundError,
    PromptSyntaxError,
    UnsafePromptIdError,
)
from promptdock.testing import HELLO


def _dock(root: Path) -> PromptDock:
    return PromptDock(sources={"local": {"kind": "filesystem", "path": str(root)}})


def _bump_mtime(path: Path) -> None:
    # Same-second rewrites must still be seen; make the change unmistakable for the stat check.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_edit_is_seen_on_next_call(tmp_path: Path) -> None:
    path = tmp_path / "hello.prompt"
    path.write_text(HELLO)
    dock = _dock(tmp_path)
    assert dock.get_prompt("hello").model == "gpt-4"
    path.write_text(HELLO.replace("gpt-4", "gpt-4o-mini"))
    _bump_mtime(path)
    assert dock.get_prompt("hello").model == "gpt-4o-mini"


def test_unchanged_file_is_not_parsed_again(tmp_path: Path, mocker: MockerFixture) -> None:
    (tmp_path / "hello.prompt").write_text(HELLO)
    dock = _dock(tmp_path)
    spy = mocker.spy(folder_module, "parse_prompt")
    first = dock.get_prompt("hello")
    second = dock.get_prompt("hello")
    assert first is second
    assert spy.call_count == 1


def test_new_unversioned_file_takes_over_from_highest_version(tmp_path: Path) -> None:
    (tmp_path / "hello.v3.prompt").write_text(HELLO.replace("gpt-4", "v3"))
    dock = _dock(tmp_path)
    assert dock.get_prompt("hello").model == "v3"
    (tmp_path / "hello.prompt").write_text(HELLO.replace("gpt-4", "plain"))
    _bump_mtime(tmp_path)
    assert dock.get_prompt("hello").model == "plain"


def test_deleted_file_is_not_served_from_cache(tmp_path: Path) -> None:
    path = tmp_path / "hello.prompt"
    path.write_text(HELLO)
    dock = _dock(tmp_path)
    dock.get_prompt("hello")
    path.unlink()
    with pytest.raises(PromptNotFoundError, match="'hello' not found"):
        dock.get_prompt("hello")


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.prompt").write_text("User: the secret")
    root = tmp_path / "prompts"
    root.mkdir()
    (root / "leak.prompt").symlink_to(outside / "secret.prompt")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    dock = _dock(root)
    with pytest.raises(UnsafePromptIdError, match="points outside the prompt folder"):
        dock.get_prompt("leak")
    with pytest.raises(UnsafePromptIdError):
        dock.get_prompt("linked/secret")
    assert "linked/secret" not in {info.id for info in dock.list_prompts()}


def test_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    (tmp_path / "hello.prompt").write_text(HELLO)
    (tmp_path / "alias.prompt").symlink_to(tmp_path / "hello.prompt")
    assert _dock(tmp_path).get_prompt("alias").model == "gpt-4"


def test_syntax_error_names_the_file_as_configured(tmp_path: Path) -> None:
    (tmp_path / "broken.prompt").write_text("---\nmodel: [gpt-4\n---\nUser: hi\n")
    with pytest.raises(PromptSyntaxError) as info:
        _dock(tmp_path).get_prompt("broken")
    assert str(tmp_path / "broken.prompt") in str(info.value)


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    dock = _dock(tmp_path / "nope")
    with pytest.raises(ConfigError, match="does not exist") as info:
        dock.get_prompt("hello")
    assert "PROMPTDOCK_PROMPT_DIR" in str(info.value)


def test_unknown_option_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    dock = PromptDock(sources={"local": {"kind": "filesystem", "path": str(tmp_path), "pth": 1}})
    with pytest.raises(ConfigError, match="unknown option 'pth'") as info:
        dock.get_prompt("hello")
    assert info.value.key == "sources.local.pth"


def test_concurrent_loads_during_edits_never_mix_versions(tmp_path: Path) -> None:
    path = tmp_path / "hello.prompt"
    path.write_text(HELLO)
    dock = _dock(tmp_path)
    seen: set[str | None] = set()
    errors: list[BaseException] = []
    started = threading.Barrier(7)
    stop = threading.Event()

    def reader() -> None:
        started.wait()
        try:
            while not stop.is_set():
                prompt = dock.get_prompt("hello")
                # model and body come from one file version: never half of each
                assert prompt.model == prompt.frontmatter["model"]
                seen.add(prompt.model)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for thread in threads:
        thread.start()
    started.wait()  # every reader is running before the first edit
    for model in ("gpt-a", "gpt-b", "gpt-c"):
        tmp = tmp_path / "hello.prompt.tmp"
        tmp.write_text(HELLO.replace("gpt-4", model))
        os.replace(tmp, path)  # atomic, as editors and git checkouts do
        deadline = time.monotonic() + 5
        while dock.get_prompt("hello").model != model and time.monotonic() < deadline:
            time.sleep(0.001)  # each edit is seen before the next one is made
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert seen
    assert seen <= {"gpt-4", "gpt-a", "gpt-b", "gpt-c"}
    assert dock.get_prompt("hello").model == "gpt-c"


def test_global_prompt_directory_quick_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hello.prompt").write_text(HELLO)
    monkeypatch.setattr(promptdock, "global_prompt_directory", str(tmp_path))
    reply = promptdock.completion(
        model="dotprompt/gpt-4",
        prompt_id="hello",
        prompt_variables={"user_message": "What is the capital of France?"},
        mock_response="Paris",
    )
    assert isinstance(reply, promptdock.ModelResponse)
    assert reply.choices[0].message.content == "Paris"
    assert reply["choices"][0]["message"]["content"] == "Paris"
    assert reply.prompt is not None
    assert reply.prompt.source == "dotprompt"
    assert reply.prompt.path == "hello.prompt"


def test_prompt_dir_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hello.prompt").write_text(HELLO)
    monkeypatch.setattr(promptdock, "global_prompt_directory", None)
    monkeypatch.setenv("PROMPTDOCK_PROMPT_DIR", str(tmp_path))
    reply = promptdock.completion(
        model="dotprompt/mock/echo", prompt_id="hello", prompt_variables={"user_message": "Hi"}
    )
    assert isinstance(reply, promptdock.ModelResponse)
    assert "user: Hi" in reply.choices[0].message.content


def test_a_file_with_an_unsafe_name_is_listed_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "hello.prompt").write_text(HELLO)
    (tmp_path / "50% off.prompt").write_text(HELLO)
    listing = {info.id: info for info in _dock(tmp_path).list_prompts()}
    assert listing["hello"].error is None
    assert listing["50% off"].error is not None
    assert "refused prompt id" in listing["50% off"].error


def test_leading_zero_versions_are_ids_of_their_own(tmp_path: Path) -> None:
    (tmp_path / "x.v01.prompt").write_text(HELLO.replace("gpt-4", "zero-one"))
    dock = _dock(tmp_path)
    assert [(i.id, i.versions) for i in dock.list_prompts()] == [("x.v01", ())]
    assert dock.get_prompt("x.v01").model == "zero-one"
    with pytest.raises(PromptNotFoundError):
        dock.get_prompt("x", version=1)


def test_a_linked_folder_inside_the_source_does_not_hide_or_duplicate_prompts(
    tmp_path: Path,
) -> None:
    (tmp_path / "support").mkdir()
    (tmp_path / "support" / "triage.prompt").write_text(HELLO)
    (tmp_path / "aaa").symlink_to(tmp_path / "support", target_is_directory=True)
    (tmp_path / "zzz").symlink_to(tmp_path / "support", target_is_directory=True)
    dock = _dock(tmp_path)
    assert [info.id for info in dock.list_prompts()] == ["support/triage"]
    assert dock.get_prompt("zzz/triage").model == "gpt-4"  # loading through a link still works


def test_concurrent_cold_loads_parse_once(tmp_path: Path, mocker: MockerFixture) -> None:
    (tmp_path / "hello.prompt").write_text(HELLO)
    dock = _dock(tmp_path)
    spy = mocker.spy(folder_module, "parse_prompt")
    start = threading.Barrier(8)
    results: list[object] = []

    def load() -> None:
        start.wait()
        results.append(dock.get_prompt("hello"))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert spy.call_count == 1
    assert len(results) == 8
    assert all(result is results[0] for result in results)


def test_an_include_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "_part.prompt").write_bytes(b"caf\xe9")
    (tmp_path / "main.prompt").write_text('User: {% include "_part.prompt" %}')
    with pytest.raises(
        promptdock.PromptdockError, match=r"_part\.prompt: included file is not valid"
    ):
        _dock(tmp_path).render("main")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path, mocker: MockerFixture) -> None:
    with open(tmp_path / "huge.prompt", "wb") as handle:
        handle.truncate(folder_module.MAX_FILE_BYTES + 1)  # sparse: no disk space used
    spy = mocker.spy(folder_module, "parse_prompt")
    with pytest.raises(PromptSyntaxError, match="more than a prompt may be"):
        _dock(tmp_path).get_prompt("huge")
    assert spy.call_count == 0
