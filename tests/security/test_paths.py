"""Paths: ids and include names that try to leave their source are refused by every source.

Each source holds a secret outside its prompt folder (a file next to the folder, a file at the
repository root). Every traversal id and include name in :mod:`tests.security.payloads` must
be refused with :class:`UnsafePromptIdError` (or, for includes, a :class:`RenderError` caused
by one), before any file is opened or any request is sent, and the secret must never show.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from promptdock import (
    PromptDock,
    PromptNotFoundError,
    RenderError,
    UnsafePromptIdError,
    check_prompt_id,
    testing,
)
from tests.security import payloads
from tests.security.conftest import bitbucket_dock
from tests.security.figures import count
from tests.support.bitbucket import BitbucketEmulator, GitRepo

SECRET = "the secret 51b7e0"
HELLO = "System: hi\nUser: {{ q }}"


def test_every_traversal_id_is_refused_by_check_prompt_id() -> None:
    for prompt_id in (*payloads.TRAVERSAL_IDS, *testing.TRAVERSAL_IDS):
        with pytest.raises(UnsafePromptIdError) as info:
            check_prompt_id(prompt_id, source="team-a")
        message = str(info.value)
        assert message.startswith("refused prompt id ")
        assert "in source 'team-a'" in message
        assert message.endswith(
            "Prompt ids are relative paths without the '.prompt' extension, such as 'hello' "
            "or 'support/triage'."
        )
        assert info.value.source == "team-a"
        count("paths: ids refused by check_prompt_id")


@pytest.mark.parametrize(
    "prompt_id", ["hello", "support/triage", "a-b_c.v2", "héllo", "日本/語", "x" * 512]
)
def test_ordinary_ids_are_accepted(prompt_id: str) -> None:
    assert check_prompt_id(prompt_id) == prompt_id


# -- the filesystem source ----------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """``tmp_path/prompts`` with two prompts and a partial; secrets all around it."""
    root = tmp_path / "prompts"
    (root / "support").mkdir(parents=True)
    (root / "_shared").mkdir()
    (root / "hello.prompt").write_text(HELLO)
    (root / "support" / "triage.prompt").write_text("User: triage")
    (root / "_shared" / "tone.prompt").write_text("Be calm.")
    for outside in ("secret.prompt", "outside.prompt", "secret", "etc/passwd", "etc/passwd.prompt"):
        path = tmp_path / outside
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"User: {SECRET}")
    return root


def test_filesystem_source_refuses_every_traversal_id(folder: Path) -> None:
    dock = PromptDock(prompt_directory=str(folder))
    for prompt_id in payloads.TRAVERSAL_IDS:
        attempts = (
            functools.partial(dock.get_prompt, prompt_id),
            functools.partial(dock.get_prompt, prompt_id, version=1),
            functools.partial(dock.render, prompt_id, {"q": "x"}),
            functools.partial(dock.completion, "dotprompt/mock/echo", prompt_id=prompt_id),
        )
        for attempt in attempts:
            with pytest.raises(UnsafePromptIdError) as info:
                attempt()
            assert SECRET not in str(info.value)
            count("paths: traversal attempts refused (filesystem)")


def test_filesystem_source_refuses_links_out_of_the_folder(folder: Path, tmp_path: Path) -> None:
    (folder / "leak.prompt").symlink_to(tmp_path / "secret.prompt")
    (folder / "relative.prompt").symlink_to(os.path.join("..", "secret.prompt"))
    (folder / "etc").symlink_to(tmp_path / "etc", target_is_directory=True)
    (folder / "hop.prompt").symlink_to(folder / "leak.prompt")  # a link to a link out
    (folder / "inside.prompt").symlink_to(folder / "hello.prompt")
    dock = PromptDock(prompt_directory=str(folder))
    for prompt_id in ("leak", "relative", "etc/passwd", "hop"):
        with pytest.raises(UnsafePromptIdError) as info:
            dock.get_prompt(prompt_id)
        assert "is a link that points outside the prompt folder" in str(info.value)
        assert SECRET not in str(info.value)
        count("paths: traversal attempts refused (filesystem)")
    assert dock.render("inside", {"q": "x"}).messages[0]["content"] == "hi"
    listed = {info.id for info in dock.list_prompts()}
    assert listed == {"hello", "support/triage", "inside"}


@pytest.mark.parametrize("name", payloads.TRAVERSAL_INCLUDES)
@pytest.mark.parametrize(
    "statement",
    [
        '{% include "NAME" %}',
        '{% import "NAME" as m %}',
        '{% from "NAME" import m %}',
        '{% extends "NAME" %}',
        '{% include ["missing", "NAME"] %}',
    ],
)
def test_filesystem_includes_cannot_leave_the_folder(
    folder: Path, name: str, statement: str
) -> None:
    text = "User: {{ q }}\n" + statement.replace("NAME", name.replace("\\", "\\\\"))
    (folder / "inc.prompt").write_text(text)
    dock = PromptDock(prompt_directory=str(folder))
    with pytest.raises(RenderError, match=r"is not allowed|does not exist") as info:
        dock.render("inc", {"q": "x"})
    assert SECRET not in str(info.value)
    count("paths: include escapes refused (filesystem)")


@pytest.mark.parametrize("name", payloads.TRAVERSAL_INCLUDES)
def test_ignore_missing_skips_a_refused_include_quietly(folder: Path, name: str) -> None:
    quoted = name.replace("\\", "\\\\")
    (folder / "inc.prompt").write_text(
        f'User: {{{{ q }}}}{{% include "{quoted}" ignore missing %}}'
    )
    rendered = PromptDock(prompt_directory=str(folder)).render("inc", {"q": "x"})
    assert rendered.messages == [{"role": "user", "content": "x"}]
    count("paths: include escapes refused (filesystem)")


def test_filesystem_include_through_a_link_out_is_refused(folder: Path, tmp_path: Path) -> None:
    (folder / "_shared" / "leak.prompt").symlink_to(tmp_path / "secret.prompt")
    (folder / "inc.prompt").write_text('User: {% include "_shared/leak.prompt" %}')
    with pytest.raises(RenderError) as info:
        PromptDock(prompt_directory=str(folder)).render("inc")
    assert "points outside the prompt folder" in str(info.value)
    assert SECRET not in str(info.value)


# -- the Bitbucket source -----------------------------------------------------------------------


@pytest.fixture
def repo(git_repo: GitRepo) -> GitRepo:
    """The repository: prompts under ``prompts/``, secrets at the root and beside it."""
    git_repo.commit(
        {
            "prompts/hello.prompt": HELLO,
            "prompts/_shared/tone.prompt": "Be calm.",
            "secret.prompt": f"User: {SECRET}",
            "outside.prompt": f"User: {SECRET}",
            "other/secret.prompt": f"User: {SECRET}",
            "etc/passwd.prompt": f"User: {SECRET}",
        },
        "prompts and secrets",
    )
    return git_repo


def test_bitbucket_source_refuses_every_traversal_id_without_asking(
    repo: GitRepo, bitbucket: BitbucketEmulator, bitbucket_options: dict[str, object]
) -> None:
    dock = bitbucket_dock(dict(bitbucket_options))
    assert dock.render("hello", {"q": "x"}).messages[0]["content"] == "hi"
    bitbucket.reset_counts()
    for prompt_id in payloads.TRAVERSAL_IDS:
        for version in (None, 1):
            with pytest.raises(UnsafePromptIdError) as info:
                dock.get_prompt(prompt_id, version=version)
            assert SECRET not in str(info.value)
            count("paths: traversal attempts refused (bitbucket)")
    assert bitbucket.request_count() == 0


@pytest.mark.parametrize("name", payloads.TRAVERSAL_INCLUDES)
def test_bitbucket_includes_cannot_leave_the_folder(
    repo: GitRepo,
    bitbucket: BitbucketEmulator,
    bitbucket_options: dict[str, object],
    name: str,
) -> None:
    quoted = name.replace("\\", "\\\\")
    repo.commit({"prompts/inc.prompt": f'User: {{{{ q }}}}\n{{% include "{quoted}" %}}'}, "inc")
    dock = bitbucket_dock(dict(bitbucket_options))
    with pytest.raises((RenderError, PromptNotFoundError)) as info:
        dock.render("inc", {"q": "x"})
    assert SECRET not in str(info.value)
    assert not [r for r in bitbucket.requests if "secret" in r.path or "outside" in r.path]
    assert not [r for r in bitbucket.requests if "passwd" in r.path or ".git" in r.path]
    count("paths: include escapes refused (bitbucket)")


@pytest.mark.parametrize(
    ("prompt_id", "shown", "code"),
    [
        ("hel\u200blo", "'hel\\u200blo'", "U+200B"),
        ("x\x85", "'x\\x85'", "U+0085"),
        ("a\u2028b", "'a\\u2028b'", "U+2028"),
        ("a\udcc0", "'a\\udcc0'", "U+DCC0"),
        ("a\u202eb", "'a\\u202eb'", "U+202E"),
    ],
)
def test_invisible_and_control_characters_are_named_in_the_refusal(
    prompt_id: str, shown: str, code: str
) -> None:
    with pytest.raises(UnsafePromptIdError) as info:
        check_prompt_id(prompt_id, source="s")
    assert str(info.value) == (
        f"refused prompt id {shown} in source 's': it contains {code}, a control, invisible, "
        "line-separator or surrogate character. Prompt ids are relative paths without the "
        "'.prompt' extension, such as 'hello' or 'support/triage'."
    )
