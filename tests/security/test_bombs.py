"""Bombs: YAML alias expansion, deep nesting, enormous files and bodies, heavy templates.

Each is refused with a clear, typed error before it costs much: the limits are checked before
the expensive step (YAML parsing, template compiling), so the refusal itself is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promptdock import (
    ConfigError,
    PromptDock,
    PromptFile,
    PromptSyntaxError,
    RenderError,
    RenderOptions,
    parse_prompt,
)
from promptdock.config import load_config
from promptdock.rendering import render_prompt
from tests.security.conftest import bitbucket_dock
from tests.security.figures import count
from tests.support.bitbucket import BitbucketEmulator, GitRepo


def _laughs(levels: int) -> str:
    """The "billion laughs" YAML: each level refers nine times to the one before."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


YAML_BOMBS: dict[str, tuple[str, str]] = {
    "billion laughs": (_laughs(9), "anchors and aliases ('&l0', '*l0') are not allowed"),
    "self reference": ("a: &a [*a]\n", "anchors and aliases ('&a', '*a') are not allowed"),
    "merge key": ("base: {x: 1}\nother:\n  <<: {x: 2}\n", "merge keys ('<<') are not allowed"),
    "deep flow list": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "more than 64 levels deep"),
    "deep flow map": ("a: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "more than 64 levels deep"),
    "deep block map": (
        "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v: 1\n",
        "more than 64 levels deep",
    ),
    "python object tag": ("a: !!python/object/apply:os.system ['true']\n", "is not allowed"),
    "binary tag": ("a: !!binary aGVsbG8=\n", "is not allowed"),
    "huge frontmatter": ("a: '" + "x" * 40_000 + "'\n", "more than the limit of 32768"),
}


@pytest.mark.parametrize("name", list(YAML_BOMBS))
def test_frontmatter_bomb_is_refused_with_a_clear_error(name: str) -> None:
    yaml, problem = YAML_BOMBS[name]
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt(f"---\n{yaml}---\nUser: hi", name="bomb", path="bomb.prompt")
    message = str(info.value)
    assert message.startswith("bomb.prompt:"), message
    assert problem in message, message
    assert info.value.path == "bomb.prompt"
    count("bombs: YAML bombs refused")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("User: " + "x" * 3_000_000, "the file is 3000006 characters long"),
        (b"User: " + b"x" * 3_000_000, "the file is 3000006 bytes long"),
        ("---\n" + "k: v\n" * 8000 + "---\nhi", "the frontmatter is 40000 characters long"),
    ],
)
def test_enormous_file_is_refused_before_it_is_parsed(text: str | bytes, problem: str) -> None:
    with pytest.raises(PromptSyntaxError, match=problem):
        parse_prompt(text, name="big", path="big.prompt")
    count("bombs: enormous inputs refused")


TEMPLATE_BOMBS: dict[str, tuple[str, str]] = {
    "many tags": (
        "{{ x }}" * 2_500,
        "has 2500 tags ({{ }} and {% %}), more than the limit of 2000",
    ),
    "many nodes": (
        ("{{ [" + ", ".join(["x"] * 3_000) + "] }}") * 4,
        "has more than 10000 expressions and tags",
    ),
    "deep ifs": ("{% if x %}" * 70 + "{% endif %}" * 70, "more than 64 levels deep at line 1"),
    "deep loops": ("{% for a in x %}" * 30 + "{% endfor %}" * 30, "too deeply to compile"),
    "deep filters": ("{{ x" + "|trim" * 80 + " }}", "more than 64 levels deep"),
    "deep parentheses": ("{{ " + "(" * 500 + "x" + ")" * 500 + " }}", "too deeply to compile"),
    "deep ifs beyond the parser": ("{% if x %}" * 1500, "too deeply to compile"),
}


@pytest.mark.parametrize("name", list(TEMPLATE_BOMBS))
def test_template_too_big_or_deep_to_compile_is_refused(name: str) -> None:
    body, problem = TEMPLATE_BOMBS[name]
    prompt = parse_prompt(body, name="bomb", path="bomb.prompt")
    with pytest.raises(PromptSyntaxError) as info:
        render_prompt(prompt, {"x": "1"}, RenderOptions())
    message = str(info.value)
    assert message.startswith("bomb.prompt: the template "), message
    assert problem in message, message
    count("bombs: template compile bombs refused")


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_variables_fail_cleanly(depth: int) -> None:
    data: Any = []
    for _ in range(depth):
        data = [data]
    prompt = PromptFile(id="deep", body="User: {{ data|json }} {{ data }}")
    with pytest.raises(RenderError, match=r"prompt 'deep' \(deep"):
        render_prompt(prompt, {"data": data}, RenderOptions())
    strict = RenderOptions(reject_role_lines=True)
    with pytest.raises(RenderError):
        render_prompt(prompt, {"data": data}, strict)
    count("bombs: deeply nested variables refused")


def test_enormous_file_in_a_folder_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "huge.prompt").write_bytes(b"User: " + b"x" * 3_000_000)
    (tmp_path / "hello.prompt").write_text("User: hi")
    dock = PromptDock(prompt_directory=str(tmp_path))
    with pytest.raises(PromptSyntaxError) as info:
        dock.get_prompt("huge")
    assert str(info.value).startswith(f"{tmp_path / 'huge.prompt'}: the file is 3000006 bytes")
    listed = {info.id: info.error for info in dock.list_prompts()}
    assert listed["hello"] is None
    assert "the file is 3000006 bytes long" in (listed["huge"] or "")
    count("bombs: enormous inputs refused")


def test_enormous_file_in_bitbucket_is_refused_without_reading_it_all(
    git_repo: GitRepo, bitbucket: BitbucketEmulator, bitbucket_options: dict[str, Any]
) -> None:
    git_repo.commit({"prompts/huge.prompt": "User: " + "x" * 2_000_000}, "huge")
    dock = bitbucket_dock(bitbucket_options)
    with pytest.raises(ConfigError) as info:
        dock.get_prompt("huge")
    assert info.value.key == "max_file_size"
    assert "huge.prompt" in str(info.value)
    count("bombs: enormous inputs refused")


# -- config loading (promptdock.config belongs to the proxy work) -----------------------------


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_with_a_reasonable_nesting_loads(tmp_path: Path) -> None:
    text = "litellm_settings:\n  extra: " + "[" * 50 + "]" * 50 + "\n"
    assert load_config(_config(tmp_path, text)).deployments == ()
    count("bombs: config bombs handled")


def test_config_nested_too_deep_is_refused(tmp_path: Path) -> None:
    text = "model_list: " + "[" * 400 + "]" * 400 + "\n"
    with pytest.raises(ConfigError, match="deep"):
        load_config(_config(tmp_path, text))


def test_config_alias_bomb_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="alias"):
        load_config(_config(tmp_path, "litellm_settings:\n  x: 1\n" + _laughs(4)))


def test_config_with_a_reused_anchor_is_a_config_error(tmp_path: Path) -> None:
    # Found by the fuzzer: under `-W error` (as in this suite) the warning escapes as an error.
    with pytest.raises(ConfigError):
        load_config(_config(tmp_path, "&a x: &a y\n"))
