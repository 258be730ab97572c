"""Hostile templates: injection payloads are refused and never run; bombs are stopped.

Every payload in :mod:`tests.security.payloads` is rendered as the body of a prompt with
variables that offer a way in (a function, a bound method, a generator, an object with private
state, mutable containers). Each must raise :class:`TemplateSecurityError` with a message that
names the prompt, file and line; none may change a variable or run a command.
"""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptdock import PromptFile, RenderError, RenderOptions, TemplateSecurityError, rendering
from promptdock.rendering import render_prompt
from tests.security import payloads
from tests.security.figures import count

BIG = "x" * 1_000_000


class Thing:
    """An object with private state a template must not reach."""

    def __init__(self) -> None:
        self._private = "private"
        self.public = "public"

    def method(self) -> str:
        """A bound method whose ``__self__``/``__func__`` must stay out of reach."""
        return "method"


def _function() -> str:
    return "function"


def _generator() -> Iterator[int]:
    yield 1


def _variables() -> dict[str, Any]:
    thing = Thing()
    return {
        "fn": _function,
        "method": thing.method,
        "gen": _generator(),
        "obj": thing,
        "items": [1, 2],
        "mapping": {"a": 1},
        "big": BIG,
        "many": [0] * 600_000,
    }


def _render(body: str, sentinel: Path, options: RenderOptions | None = None) -> Any:
    prompt = PromptFile(id="ssti", body=body.replace(payloads.SENTINEL, str(sentinel)))
    variables = _variables()
    try:
        return render_prompt(prompt, variables, options or RenderOptions())
    finally:
        assert variables["items"] == [1, 2]
        assert variables["mapping"] == {"a": 1}
        assert variables["obj"]._private == "private"


_PREFIX = re.compile(r"^prompt 'ssti' \(ssti, line \d+\): ")
_REFUSED = "the template sandbox refused an operation: "
_ADVICE = "; templates may only format values, not reach into Python objects or build huge values"


@pytest.mark.parametrize("body", payloads.SSTI_PAYLOADS)
def test_injection_payload_is_refused_and_never_runs(body: str, sentinel: Path) -> None:
    with pytest.raises(TemplateSecurityError) as info:
        _render(body, sentinel)
    message = str(info.value)
    assert _PREFIX.match(message), message
    assert _REFUSED in message, message
    assert message.endswith(_ADVICE), message
    count("sandbox: injection payloads refused")


@pytest.mark.parametrize("body", payloads.SIZE_BOMBS)
def test_size_bomb_is_refused_before_the_value_is_built(body: str, sentinel: Path) -> None:
    with pytest.raises(TemplateSecurityError) as info:
        _render(body, sentinel)
    message = str(info.value)
    assert _PREFIX.match(message), message
    assert re.search(r"would build|width of|range\(\) of|lipsum\(\) of", message), message
    count("sandbox: size bombs refused")


@pytest.mark.parametrize("body", payloads.WORK_BOMBS)
def test_work_bomb_is_stopped_by_a_limit(
    body: str, sentinel: Path, short_time_limit: RenderOptions
) -> None:
    with pytest.raises(TemplateSecurityError) as info:
        _render(body, sentinel, short_time_limit)
    message = str(info.value)
    assert _PREFIX.match(message), message
    stopped = (
        "the template did more work than a render may do",  # the work budget
        "rendering was stopped after 0.25 s, its time limit",  # the clock
        "would build",  # a growing value reached the size limit
    )
    assert any(reason in message for reason in stopped), message
    count("sandbox: work and time bombs stopped")


@pytest.mark.parametrize("body", payloads.UNDEFINED_WALKS)
def test_walk_through_an_undefined_global_reaches_nothing(body: str, sentinel: Path) -> None:
    with pytest.raises(RenderError, match=r"is undefined|refused an operation"):
        _render(body, sentinel)
    count("sandbox: injection payloads refused")


@pytest.mark.parametrize("name", payloads.UNDEFINED_NAMES)
def test_other_hosts_globals_do_not_exist_here(name: str, sentinel: Path) -> None:
    assert _render("[{{ " + name + " }}]", sentinel).messages[0]["content"] == "[]"
    with pytest.raises(RenderError, match=f"'{re.escape(name)}' is undefined"):
        render_prompt(
            PromptFile(id="ssti", body="{{ " + name + " }}"),
            {},
            RenderOptions(strict_undefined=True),
        )
    count("sandbox: foreign globals checked")


def test_the_work_budget_message_says_what_to_do(sentinel: Path) -> None:
    with pytest.raises(TemplateSecurityError) as info:
        _render("{% for i in range(100000) %}{{ big }}{% endfor %}", sentinel)
    assert str(info.value) == (
        "prompt 'ssti' (ssti, line 1): the template did more work than a render may do "
        "(8000000 units: loop steps, calls, and the characters it builds or prints); look for "
        "loops over large values or nested loops, or raise RenderOptions.max_output_chars (the "
        "budget grows with it)"
    )


def test_the_time_limit_message_says_what_to_do(
    sentinel: Path, short_time_limit: RenderOptions
) -> None:
    body = "{% for i in range(100000) %}\n{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateSecurityError) as info:
        _render(body, sentinel, short_time_limit)
    assert str(info.value) == (
        "prompt 'ssti' (ssti, line 2): rendering was stopped after 0.25 s, its time limit; look "
        "for loops over large values, nested loops or recursive macros"
    )


def test_the_budget_grows_with_max_output_chars(sentinel: Path) -> None:
    # 3,000 copies of 1,000 characters: over the default budget's 8,000,000 units only when
    # counted more than twice, so a larger output limit lets it through.
    body = "{% for i in range(3000) %}{{ chunk }}{% endfor %}"
    prompt = PromptFile(id="ssti", body=body)
    wide = RenderOptions(max_output_chars=4_000_000)
    text = render_prompt(prompt, {"chunk": "y" * 1000}, wide).messages[0]["content"]
    assert len(text) == 3_000_000
    with pytest.raises(RenderError, match="rendered to 3000000 characters"):
        render_prompt(prompt, {"chunk": "y" * 1000}, RenderOptions())


def test_a_thread_starts_each_render_with_a_full_budget(sentinel: Path) -> None:
    # The budget is per render: renders that each use most of it all succeed.
    prompt = PromptFile(id="ssti", body="{% for i in range(7) %}{{ big }}{% endfor %}")
    options = RenderOptions(max_output_chars=7_000_000)
    for _ in range(3):
        assert len(render_prompt(prompt, {"big": BIG}, options).messages[0]["content"]) == 7 * 10**6


def test_a_context_copied_to_another_thread_counts_on_a_budget_of_its_own() -> None:
    # asyncio.to_thread runs a render in a copy of the caller's context: the copy must not
    # share the caller's budget, or two threads would draw on (and reset) one count.
    prompt = PromptFile(id="ssti", body="{{ big }}")
    render_prompt(prompt, {"big": "x"}, RenderOptions())
    mine = rendering._budget()
    left = mine.left
    theirs: list[object] = []

    def work() -> None:
        render_prompt(prompt, {"big": "y" * 1000}, RenderOptions())
        theirs.append(rendering._budget())

    worker = threading.Thread(target=contextvars.copy_context().run, args=(work,))
    worker.start()
    worker.join()
    assert len(theirs) == 1
    assert theirs[0] is not mine
    assert rendering._budget() is mine
    assert mine.left == left


def test_ordinary_templates_are_unaffected(sentinel: Path) -> None:
    body = (
        "System: {{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 6 * 7 }} {{ [1] + [2] }} {{ 'x' ~ 1 ~ none }}\n"
        "User: {% for x in items %}{{ loop.index }}/{{ loop.length }}:{{ x }};{% endfor %}"
        "{{ 'a,b'.split(',')|join('+') }} {{ '%05.1f' % 3.14159 }} {{ '{:>4}'.format(7) }} "
        "{{ 'hello world'|replace('world', 'there')|title }} {{ big[:3] }} {{ range(3)|list }} "
        "{{ mapping|dictsort }} {{ lipsum(1, false, 3, 4)|wordcount }}"
        "{% filter upper %} shout{% endfilter %}"
    )
    assert _render(body, sentinel).messages == [
        {"role": "system", "content": "ababab 1024 42 [1, 2] x1None"},
        {
            "role": "user",
            "content": "1/2:1;2/2:2;a+b 003.1    7 Hello There xxx [0, 1, 2] [('a', 1)] 3 SHOUT",
        },
    ]
