"""Meta-tests: every hook is documented under a heading equal to its signature, and tested."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from promptdock import hookspecs

ROOT = Path(__file__).parent.parent
HOOKS = sorted(
    name
    for name, value in vars(hookspecs).items()
    if inspect.isfunction(value) and hasattr(value, "promptdock_spec")
)


def test_the_hooks_are_the_design_cards() -> None:
    assert {"load_prompt", "list_prompts", "render", "dispatch"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    parameters = inspect.signature(getattr(hookspecs, hook)).parameters
    heading = f"## {hook}({', '.join(parameters)})"
    headings = re.findall(r"^## .*$", (ROOT / "docs" / "hooks.md").read_text(), re.MULTILINE)
    assert heading in headings


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook: str) -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    assert re.search(rf"^def test_hook_{hook}\b", sources, re.MULTILINE)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_docstring_says_when_what_and_none(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Called" in doc
    assert ":returns:" in doc
    assert "None" in doc
    assert "Example::" in doc
