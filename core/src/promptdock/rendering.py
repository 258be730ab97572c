"""The built-in renderer: a prompt's Jinja2 body, rendered in a sandbox, split into chat messages.

Rendering a :class:`~promptdock.models.PromptFile` takes four steps: merge ``input.default``
under the caller's variables, validate them against ``input.schema``, render the body in an
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (autoescape off, trailing newline kept,
undefined variables empty unless ``strict_undefined``), then split the text into messages at
role lines (``System:``, ``User:``, ``Assistant:``, any case, see :func:`split_messages`).

**Role boundaries come only from text the template author wrote.** Every value printed by
``{{ ... }}`` passes through the environment's ``finalize`` hook, which swaps the value's
newlines for a private character and, when the value starts with something that could continue
a role line (``tem:`` after a line that starts ``Sys``, a space after ``User:``...), marks where
it starts, so no line of a value can be read as a role line. The markers are removed after
splitting, so values come out verbatim, inside the message they were written into. Literal
template text and included files keep their role lines. The one consequence for authors:
anything printed *through* ``{{ }}`` is inert, including the output of macros, ``caller()``,
``super()`` and ``{% set %}`` blocks, so a role line must be written as template text (or come
from an include), never produced by an expression. The private characters U+E000 and U+E001
are reserved: U+E001 is dropped from values and U+E000 in a value comes out as a newline.

**Every render is bounded in memory and time.** Operations that could build a huge value in
one step (``*``, ``+``, ``~``, ``%``, ``str.format``, ``replace``, ``join``, widths...) are
refused when the value would pass the size limit. Everything else a template does is counted
against a per-render work budget: each loop step (plus the literal text its body writes), each
call and filter (plus the size of what it returns), each slice and each printed value. The
clock is read every :data:`_CLOCK_EVERY` units of work, so a render stops shortly after its time
limit: at most the time of that much work later. The budget lives in a context variable that
:func:`render_prompt` resets (one budget per thread), because included templates, macros and
loops all run on the rendering thread, in its context. Compiling is bounded too: see
:data:`_MAX_TAGS`.

A filter block (``{% filter ... %}``) prints its result like a value: its output is inert, as
the filter may have turned a value's text into new lines.

Jinja2 is imported on the first render, not with this module, so tools that never render (a
prompt listing) do not pay for it.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import itertools
import json
import re
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Mapping
from types import BuiltinMethodType, CodeType
from typing import TYPE_CHECKING, Any

import pluggy

from promptdock._validation import Validator, compile_validator
from promptdock.errors import (
    InputValidationError,
    PromptdockError,
    PromptNotFoundError,
    PromptSyntaxError,
    RenderError,
    TemplateSecurityError,
    UnsafePromptIdError,
)
from promptdock.models import (
    IncludeResolver,
    PromptFile,
    RenderedPrompt,
    RenderOptions,
    _new_rendered,
)

if TYPE_CHECKING:
    from jinja2 import Environment, Template
    from jinja2.exceptions import TemplateSyntaxError

__all__ = ["MAX_RENDER_SECONDS", "hookimpl", "render", "render_prompt", "split_messages"]

hookimpl = pluggy.HookimplMarker("promptdock")
"""The ``promptdock`` hook marker (the same one :mod:`promptdock` re-exports)."""

_NEWLINE = "\ue000"  # a newline inside a printed value
_VALUE = "\ue001"  # the start of a printed value: never the start of a role line

_MAX_REPEAT = 1_000_000  # longest str/list a template may build with `*`
_MAX_POWER_BITS = 100_000  # largest int a template may build with `**` or `*`
_MAX_RANGE = 100_000  # longest range() a template may ask for (Jinja's own sandbox limit)
_MAX_LIPSUM_WORDS = 100_000  # lipsum(n, max=...) may write at most n * max words
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_WIDTH = re.compile(r"[0-9]{7,}")  # a width or precision of a million or more in a format

MAX_RENDER_SECONDS = 1.0
"""Seconds one render may take before it is stopped with TemplateSecurityError.

Used unless the render's :class:`~promptdock.models.RenderOptions` sets ``max_render_seconds``
(a field it may gain; ``None`` there means this default)."""

_WORK_PER_OUTPUT_CHAR = 8  # the work budget is this many units per allowed output character...
_MIN_WORK = 1_000_000  # ...and never less than this
_ITEM_COST = 8  # a list, tuple or dict slot costs as much work as 8 characters (a pointer)
_CLOCK_EVERY = 100  # units of work between two looks at the clock
# Compiling is bounded too, so a pushed file cannot stall the process that compiles it: tags
# are counted before parsing, template nodes and nesting after it. (Jinja2's optimizer is off:
# its constant folding costs the cube of an expression's depth at compile time.)
_MAX_TAGS = 2_000
_MAX_NODES = 10_000
_MAX_NESTING = 64


# ---------------------------------------------------------------------------------------------
# Public API


def render_prompt(
    prompt: PromptFile, variables: Mapping[str, Any], options: RenderOptions
) -> RenderedPrompt:
    """Validate ``variables``, render ``prompt``'s body and split it into chat messages.

    ``input.default`` values fill in variables the caller did not pass. The body (and a
    templated ``model``) is compiled on the first call and reused for the prompt's lifetime.

    :param prompt: the parsed prompt.
    :param variables: the caller's variables; extra ones the schema does not name are allowed.
    :param options: strictness and limits.
    :returns: the messages, the rendered model (``None`` when empty or absent) and the params.
    :raises InputValidationError: a variable is missing or has the wrong type, or (with
        ``reject_role_lines``) a value contains a role line.
    :raises PromptSyntaxError: the body (or an included file) is not valid Jinja2.
    :raises TemplateSecurityError: the template tried something the sandbox forbids, built
        a value over the size limit, or exceeded the work budget or the time limit
        (:data:`MAX_RENDER_SECONDS`).
    :raises RenderError: the template failed, or the text exceeds ``max_output_chars``.
    """
    # Set before compiling: constant folding at compile time already charges the budget.
    _start_budget(options)
    state = _compiled(prompt, options.strict_undefined)
    values = {**prompt.input_defaults, **variables} if prompt.input_defaults else variables
    if state.validate is not None:
        state.validate(values)
    if options.reject_role_lines:
        _reject_role_lines(prompt, variables)
    try:
        text = _render_template(state.template, values)
        model = prompt.model
        if state.model_template is not None:
            model = _plain(_render_template(state.model_template, values)).strip() or None
    except PromptdockError:
        raise
    except Exception as exc:
        raise _render_failure(exc, prompt, state) from exc
    if len(text) > options.max_output_chars:
        _check_length(prompt, text, options.max_output_chars)
    return _new_rendered(_split(text), model, _fresh(prompt.params), prompt)


def _render_template(template: Template, values: Mapping[str, Any]) -> str:
    """``template.render(values)`` without its copy of ``values`` (the context copies them
    anyway); a failure is re-raised by Jinja2 with template lines in its traceback, as
    ``render`` does, which :func:`_failing_line` reads."""
    try:
        return template.environment.concat(
            template.root_render_func(template.new_context(values))  # type: ignore[arg-type]
        )
    except Exception:
        template.environment.handle_exception()  # re-raises, with template lines


_NESTED = (dict, list)


def _fresh(params: Mapping[str, Any]) -> dict[str, Any]:
    """A per-render copy of the prompt's params: callers and dispatchers may change theirs
    without touching the cached prompt. Nested values (``response_format``, ``tools``) are
    copied too; scalars, the common case, cost one dict copy."""
    fresh = dict(params)
    for key, value in fresh.items():
        if isinstance(value, _NESTED):
            fresh[key] = copy.deepcopy(value)  # the same keys: safe while iterating
    return fresh


def split_messages(text: str) -> list[dict[str, str]]:
    """Split rendered text into ``[{"role": ..., "content": ...}]`` at role lines.

    A role line is one whose text, after leading spaces and tabs, starts with ``System:``,
    ``User:`` or ``Assistant:`` in any case; the rest of that line (minus one space after the
    colon) is the message's first line. Lines are split on ``"\\n"`` only. Text before the first
    role line becomes a ``user`` message when it is not blank, and text with no role line at all
    is one ``user`` message. Each message keeps its indentation and inner blank lines; leading
    blank lines and trailing whitespace are trimmed. A role line with nothing after it still
    gives a message, with empty content.

    Meant for author text; :func:`render_prompt` uses the same rules on rendered templates.
    """
    return _split(text)


@hookimpl(trylast=True)
def render(
    prompt: PromptFile, variables: Mapping[str, Any], options: RenderOptions
) -> RenderedPrompt:
    """The built-in Jinja2 renderer (registered last, so other renderers may go first)."""
    return render_prompt(prompt, variables, options)


# ---------------------------------------------------------------------------------------------
# Limits: the work budget and the clock


class _LimitExceeded(Exception):
    """A render used up its work budget or its time; the message says which and how to fix it."""


class _Budget:
    """What the render running in one context may still do. Until a render starts, the
    budget in force has no limit, so compiling outside a render is never refused."""

    __slots__ = ("cap", "check_at", "deadline", "left", "options", "thread", "work")

    def __init__(self, thread: int | None = None) -> None:
        self.left = 1 << 62  # units of work left
        self.check_at = -(1 << 62)  # look at `left` and the clock when `left` drops below this
        self.deadline = 0.0  # time.monotonic() at which to stop; 0: the clock has not started
        self.options: RenderOptions | None = None
        self.work = _MIN_WORK  # the whole budget, for messages
        self.cap = _MAX_REPEAT  # the largest str or list one operation may build
        self.thread = thread  # the thread it was made for; None: the shared unlimited one

    def seconds(self) -> float:
        """The render time limit: the options' ``max_render_seconds`` when set, else
        :data:`MAX_RENDER_SECONDS`."""
        if _OPTIONS_HAVE_SECONDS:
            chosen = getattr(self.options, "max_render_seconds", None)
            if chosen is not None:
                return float(chosen)
        return MAX_RENDER_SECONDS


# The budget of the render running in the current context (a thread, or a task's copy of a
# context). A context variable rather than a thread-local: the hot paths read it for every
# printed value, and ContextVar.get costs a fraction of a thread-local attribute (measured).
# Its default, shared by every context on purpose, is the unlimited budget in force outside
# renders: _start_budget never resets it, it gives each render a budget of its own.
_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar(
    "promptdock_render_budget",
    default=_Budget(),  # noqa: B039
)
_budget = _BUDGET.get

# RenderOptions is the lead's file: use its time limit field once it has one.
_OPTIONS_HAVE_SECONDS = "max_render_seconds" in RenderOptions.__dataclass_fields__


def _start_budget(options: RenderOptions) -> None:
    budget = _budget()
    thread = threading.get_ident()
    if budget.thread != thread:
        # The shared unlimited budget, or one that came with a context copied from another
        # thread (asyncio.to_thread copies the caller's): this context gets a budget of its
        # own, so no two threads ever count on one. A thread reuses its own, render after
        # render, as renders on one thread never overlap.
        budget = _Budget(thread)
        _BUDGET.set(budget)
    if budget.options is not options:
        budget.options = options
        budget.work = max(_MIN_WORK, options.max_output_chars * _WORK_PER_OUTPUT_CHAR)
        budget.cap = max(_MAX_REPEAT, options.max_output_chars)
    budget.left = work = budget.work
    budget.check_at = work - _CLOCK_EVERY
    # The clock starts at the first checkpoint, so a small render never reads it; what runs
    # before that point is at most _CLOCK_EVERY units of work, or one operation.
    budget.deadline = 0.0


def _charge(units: int) -> None:
    """Spend ``units`` of the current render's work."""
    budget = _budget()
    left = budget.left - units
    budget.left = left
    if left < budget.check_at:
        _checkpoint(budget)


def _checkpoint(budget: _Budget) -> None:
    if budget.left < 0:
        raise _LimitExceeded(
            f"the template did more work than a render may do ({budget.work} units: loop steps, "
            "calls, and the characters it builds or prints); look for loops over large values "
            "or nested loops, or raise RenderOptions.max_output_chars (the budget grows with it)"
        )
    now = time.monotonic()
    if not budget.deadline:
        budget.deadline = now + budget.seconds()
    elif now > budget.deadline:
        raise _LimitExceeded(
            f"rendering was stopped after {budget.seconds():g} s, its time limit; look for loops "
            "over large values, nested loops or recursive macros"
        )
    budget.check_at = budget.left - _CLOCK_EVERY


def _size(value: Any) -> int:
    """The work a new value represents: its characters, or its slots times :data:`_ITEM_COST`."""
    kind = type(value)
    if kind is str:
        return len(value)
    if kind is list or kind is tuple or kind is dict:
        return _ITEM_COST * len(value)
    return 0


# ---------------------------------------------------------------------------------------------
# Role splitting


# A role line: optional spaces/tabs, a role name in any ASCII case, a colon, and one optional
# space that is not part of the content; it starts after "\n" only, never after \r, U+2028 or
# U+0085. One C-level split beats a Python loop over lines (measured), since most lines are not
# role lines. The pattern is anchored on a literal newline (the text is split with one
# prepended) rather than on MULTILINE `^`: the engine then jumps from newline to newline
# instead of trying every position, most of the split's cost on long prompts (measured).
_ROLE_LINE = re.compile(r"\n[ \t]*(system|user|assistant):[ ]?", re.I | re.A)


def _split(text: str) -> list[dict[str, str]]:
    # [text before the first role line, role, content, role, content, ...]
    parts = _ROLE_LINE.split("\n" + text)
    if _VALUE in text or _NEWLINE in text:  # rare: most values need no marker (_neutralise)
        parts = [_plain(part) for part in parts]
    pieces = iter(parts)
    first = next(pieces).rstrip()
    messages = [{"role": "user", "content": _trim(first)}] if first else []
    for role, content in zip(pieces, pieces, strict=True):  # the rest: (role, content) pairs
        content = content.rstrip()
        if content[:1].isspace():  # _trim's other half, only when there is work for it
            content = _trim(content)
        messages.append({"role": role.lower(), "content": content})
    return messages or [{"role": "user", "content": ""}]


def _trim(content: str) -> str:
    """Drop leading blank lines and trailing whitespace; keep the first line's indentation."""
    content = content.rstrip()
    if content and content[0].isspace():
        rest = content.lstrip()
        content = content[content.rfind("\n", 0, len(content) - len(rest)) + 1 :]
    return content


def _plain(text: str) -> str:
    """Rendered text with the value markers taken out again."""
    return text.replace(_VALUE, "").replace(_NEWLINE, "\n")


def _neutralise(value: Any) -> str:
    """``finalize`` hook: make a printed value unable to start a role line (and charge it).

    A role line needs a newline, which a value no longer has once its own are swapped, so a
    value can only be read as part of one that starts in the text before it: the value would
    have to begin with the rest of a role line (see :func:`_may_continue_role_line`). Only then
    does it get the start marker; most values cannot, and skipping the marker keeps them (and
    the whole text, when no value needed one) free of characters the split must take out again.
    """
    text = value if type(value) is str else str(value)
    if not text:
        return text
    budget = _budget()  # _charge(len(text)), inlined: this runs for every printed value
    left = budget.left - len(text)
    budget.left = left
    if left < budget.check_at:
        _checkpoint(budget)
    if not text.isprintable():  # neither marker nor newline is: one look for both
        if _VALUE in text:
            text = text.replace(_VALUE, "")
            if not text:
                return text
        if "\n" in text:
            # U+E000 already in the text is left alone: it is a newline of a value printed
            # earlier (inside a macro or a {% set %} block) and must come out as one.
            text = text.replace("\n", _NEWLINE)
    first = text[0]
    if (
        first in _ROLE_LINE_CHARS
        # Two characters settle most values ("Ada", "It broke"): a value goes on with a role
        # line only if it starts with a space, a tab or a colon, or like the rest of a role.
        and (first in " \t:" or text[:2] in _ROLE_HEADS)
        and _may_continue_role_line(text)
    ):
        return _VALUE + text
    return text


_ROLES = ("system", "user", "assistant")
# Every character a role line has after its newline (see _ROLE_LINE): a value whose first
# character is none of these cannot be part of one. ASCII only, as the pattern is.
_ROLE_LINE_CHARS = frozenset(" \t:" + "".join(_ROLES) + "".join(_ROLES).upper())
# How a role line can go on from inside its role name: the rest of the name, then the colon.
_ROLE_TAILS = frozenset(f"{role[i:]}:" for role in _ROLES for i in range(len(role) + 1))
_ROLE_TAIL_STARTS = frozenset(tail[:n] for tail in _ROLE_TAILS for n in range(1, len(tail) + 1))
_LONGEST_TAIL = max(map(len, _ROLE_TAILS))
# The first one or two characters of each rest, in every case: a quick way to say no.
_ROLE_HEADS = frozenset(
    "".join(chars)
    for start in _ROLE_TAIL_STARTS
    if len(start) <= 2
    for chars in itertools.product(*({c.lower(), c.upper()} for c in start))
)


def _may_continue_role_line(text: str) -> bool:
    """Whether ``text`` (no newline in it) could be read as part of a role line begun by the
    text printed before it.

    Such a line starts before ``text``, so it takes ``text``'s first character and goes on
    from there: spaces or tabs before the role name (or the one space after its colon), or
    the rest of a role name and its colon (``"tem: x"``, ``"User:"``, ``":"``) — or all of
    ``text`` fits inside such a rest (``"ste"``), leaving the text after it to finish the line.
    """
    if text[0] in " \t:":
        return True
    # ASCII case folds exactly, as the pattern's (re.I | re.A); other characters never match
    # it, and their folding can only make this answer yes more often.
    head = text[:_LONGEST_TAIL].lower()
    colon = head.find(":")
    if colon >= 0 and head[: colon + 1] in _ROLE_TAILS:
        return True
    return len(text) <= _LONGEST_TAIL and head in _ROLE_TAIL_STARTS


# ---------------------------------------------------------------------------------------------
# reject_role_lines


def _code_points(*spans: tuple[int, int]) -> list[int]:
    return [point for first, last in spans for point in range(first, last + 1)]


# Characters that draw nothing (format controls, joiners, variation selectors, tag characters,
# Hangul fillers): removed before looking for a role line, so "Sys\u200btem:" is found.
_INVISIBLE: dict[int, str | None] = dict.fromkeys(
    _code_points(
        (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
        (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
        (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
        (0xFFA0, 0xFFA0), (0xE0000, 0xE007F), (0xE0100, 0xE01EF),
    )
)  # fmt: skip
# Colon look-alikes NFKC leaves alone (it folds the full-width U+FF1A and small U+FE55 itself).
_INVISIBLE.update(
    dict.fromkeys(
        map(ord, "\u02d0\u02f8\u0589\u05c3\u0703\u0704\u1365\u16ec\u205a\u2236\ua4fd\ua789"), ":"
    )
)
# The renderer's private markers: U+E000 in a value comes out as a newline.
_INVISIBLE.update({ord(_NEWLINE): "\n", ord(_VALUE): None})
# Latin look-alikes from other scripts (Cyrillic, Greek, small capitals), applied after NFKC
# (which already folds full-width and mathematical letters): a Cyrillic "System:" is found.
_LOOK_ALIKES = str.maketrans(
    "аспеіјӏоԁрѕтуһхАВСЕНІЈКМОРЅТХУαινορτυΑΒΕΗΙΚΜΝΟΡΤΥΧᴀᴇɪᴍɴʀꜱᴛᴜʏ",
    "acpeijlodpstyhxABCEHIJKMOPSTXYainoptuABEHIKMNOPTYXAEIMNRSTUY",
)
_ROLE_LIKE = re.compile(
    r"[\s#>*_`~-]*(?:system|user|assistant|developer)[*_`~]*\s*(?:\[[^\]]*\])?[*_`~]*\s*:",
    re.IGNORECASE,
)
# Control tokens of common chat templates: a model that sees them as text may take them for
# a turn boundary, wherever they appear in a line.
_CHAT_TOKEN = re.compile(
    r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|start_header_id"
    r"|end_header_id|eot_id)\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>",
    re.IGNORECASE,
)
_MAX_DEPTH = 32


def _role_like_line(text: str) -> str | None:
    """The first line of ``text`` that would read as a role line to a person or a model."""
    # NFKC folds full-width letters and colons (U+FF1A) to ASCII; splitlines() breaks at \r,
    # U+2028, U+2029, U+0085, \v, \f and \x1c-\x1e as well as \n.
    cleaned = unicodedata.normalize("NFKC", text.translate(_INVISIBLE)).translate(_LOOK_ALIKES)
    for line in cleaned.splitlines():
        if _ROLE_LIKE.match(line) or _CHAT_TOKEN.search(line):
            return line
    return None


def _reject_role_lines(prompt: PromptFile, variables: Mapping[str, Any]) -> None:
    # Strings are checked inside dicts, lists and tuples; attributes of other objects are not.
    pending: list[tuple[str, Any, int]] = [(str(k), v, 0) for k, v in variables.items()]
    while pending:
        path, value, depth = pending.pop()
        if isinstance(value, str):
            line = _role_like_line(value)
            if line is not None:
                shown = line if len(line) <= 60 else line[:57] + "..."
                raise InputValidationError(
                    f"prompt {prompt.id!r}: variable {path!r} contains a role line ({shown!r}), "
                    "which reject_role_lines forbids; remove that line from the value, or turn "
                    "reject_role_lines off (values then stay inert inside their message)",
                    prompt_id=prompt.id,
                    field=path,
                )
        elif depth < _MAX_DEPTH:
            if isinstance(value, Mapping):
                for key, item in value.items():
                    child = f"{path}.{key}"
                    pending.append((child, item, depth + 1))
                    if isinstance(key, str):
                        pending.append((child, key, depth + 1))
            elif isinstance(value, (list, tuple)):
                pending.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))


# ---------------------------------------------------------------------------------------------
# Compiling and caching


class _Compiled:
    """A prompt's body (and model) compiled for one environment, plus its validator."""

    __slots__ = ("body_lines", "model_template", "template", "validate")

    def __init__(
        self,
        template: Template,
        model_template: Template | None,
        validate: Validator | None,
        body_lines: Mapping[str, int],
    ) -> None:
        self.template = template
        self.model_template = model_template
        self.validate = validate
        self.body_lines = body_lines  # file name -> file line of its template's line 1


# Keyed on id(prompt), holding a weak reference to check the entry is for this very object:
# entries go away with their prompt, a PromptFile stays plain picklable data, and a lookup
# allocates nothing. Slot 0: lenient, 1: strict_undefined.
_states: dict[int, tuple[weakref.ref[PromptFile], list[_Compiled | None]]] = {}
_states_lock = threading.Lock()


def _compiled(prompt: PromptFile, strict: bool) -> _Compiled:
    entry = _states.get(id(prompt))
    if entry is not None and entry[0]() is prompt:
        state = entry[1][strict]
        if state is not None:
            return state
    state = _compile(prompt, strict)
    key = id(prompt)
    with _states_lock:
        entry = _states.get(key)
        if entry is None or entry[0]() is not prompt:
            entry = (weakref.ref(prompt, functools.partial(_forget, key)), [None, None])
            _states[key] = entry
        entry[1][strict] = state
    return state


def _forget(key: int, ref: weakref.ref[PromptFile]) -> None:
    """Drop a dead prompt's entry (unless the id already belongs to a newer prompt)."""
    # No lock: this runs whenever the prompt is freed, possibly while this thread holds it.
    # Losing a race only costs a newer prompt a recompile.
    entry = _states.get(key)
    if entry is not None and entry[0] is ref:
        _states.pop(key, None)


def _compile(prompt: PromptFile, strict: bool) -> _Compiled:
    from jinja2.exceptions import TemplateSyntaxError

    env = _environment(prompt.include_resolver, strict)
    body_lines: dict[str, int] = getattr(env.loader, "body_lines", {})
    try:
        template = _from_string(env, prompt.body, prompt.location)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, prompt, body_lines) from None
    model_template = None
    if prompt.model is not None and ("{{" in prompt.model or "{%" in prompt.model):
        try:
            model_template = _from_string(env, prompt.model, f"{prompt.location} (model)")
        except TemplateSyntaxError as exc:
            raise PromptSyntaxError(
                f"prompt {prompt.id!r} ({prompt.location}): the frontmatter 'model' is not a "
                f"valid template: {_reason(exc)}; fix it or write the model name without {{{{ }}}}",
                path=prompt.location,
            ) from None
    validate = None
    if prompt.input_schema:
        validate = compile_validator(prompt.input_schema, prompt_id=prompt.id)
    return _Compiled(template, model_template, validate, body_lines)


def _from_string(env: Environment, source: str, filename: str) -> Template:
    # Like Environment.from_string, but with a file name, so tracebacks (and the error
    # lines computed from them) point at this prompt.
    # The globals are a plain dict snapshot rather than Jinja's ChainMap over the environment's:
    # every render copies them, and copying a ChainMap runs Python code per key (measured:
    # most of the per-call overhead over a bare render). Our environments' globals never change.
    code = env.compile(source, filename=filename)
    return env.template_class.from_code(env, code, dict(env.make_globals(None)), None)


_environments: dict[tuple[IncludeResolver | None, bool], Environment] = {}
_MAX_ENVIRONMENTS = 64


def _environment(resolver: IncludeResolver | None, strict: bool) -> Environment:
    """The shared environment for prompts from one include resolver (one source and ref)."""
    key = (resolver, strict)
    try:
        env = _environments.get(key)
    except TypeError:  # an unhashable resolver: nothing to share with
        return _environment_factory()(resolver, strict)
    if env is None:
        env = _environment_factory()(resolver, strict)
        with _states_lock:
            if len(_environments) >= _MAX_ENVIRONMENTS:
                del _environments[next(iter(_environments))]
            _environments[key] = env
    return env


def _json_filter(value: Any, indent: int | None = None) -> str:
    """``{{ x | json }}``: compact JSON (or indented), never HTML-escaped."""
    from jinja2 import StrictUndefined, Undefined

    def fallback(obj: Any) -> Any:
        if isinstance(obj, StrictUndefined):
            str(obj)  # raises the UndefinedError naming the variable
        if isinstance(obj, Undefined):
            return None
        if isinstance(obj, Mapping):
            return dict(obj)
        raise TypeError(f"the json filter cannot encode a {type(obj).__name__}")

    if indent is None:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=fallback)
    return _indented_json(value, indent, "the 'json' filter", ensure_ascii=False, default=fallback)


def _indented_json(value: Any, indent: Any, what: str, **options: Any) -> str:
    # Indentation repeats on every line and grows with depth: there is no size to check up
    # front, so the text is built piece by piece and dropped once it passes the limit.
    cap = _budget().cap
    size = 0
    parts = []
    for part in json.JSONEncoder(indent=indent, **options).iterencode(value):
        size += len(part)
        if size > cap:
            raise _Refused(f"{what} would build over {cap} characters of JSON")
        parts.append(part)
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Size checks: refuse an operation before it builds a value over the limit


class _Refused(Exception):
    """An operation the sandbox refuses before doing it, because of what it would build."""


def _check_built(size: int, what: str, kind: str = "str") -> None:
    if size <= _MAX_REPEAT:  # the limit is never lower: no need to look it up
        return
    cap = _budget().cap
    if size > cap:
        unit = "characters" if kind == "str" else "items"
        raise _Refused(f"{what} would build a {kind} of {size} {unit}; the limit is {cap}")


def _check_sizes(args: Any, kwargs: Mapping[str, Any], what: str) -> None:
    for value in (*args, *kwargs.values()):
        if type(value) is int and value > _MAX_REPEAT:
            raise _Refused(f"{what} with a width of {value}; the limit is {_MAX_REPEAT}")


def _check_widths(fmt: str, what: str) -> None:
    for match in _WIDTH.finditer(fmt):
        if int(match.group()) > _MAX_REPEAT:
            raise _Refused(f"{what} with a width of {match.group()}; the limit is {_MAX_REPEAT}")


def _text(value: Any) -> str:
    return value if type(value) is str else str(value)


def _check_format(fmt: str, values: Any, marker: str, what: str) -> None:
    """A format with ``n`` fields writes each field's value at most once per field: refuse
    ``"%s%s%s" % big``-style repetition (widths are checked by :func:`_check_widths`)."""
    _check_widths(fmt, what)
    fields = fmt.count(marker)
    if not fields:
        return
    if isinstance(values, Mapping):
        values = values.values()
    elif type(values) is not tuple:
        values = (values,)
    longest = max((len(_text(value)) for value in values), default=0)
    _check_built(len(fmt) + fields * longest, what)


def _check_join(items: Any, separator: str, what: str) -> Any:
    """Refuse a join that would build too much; returns the items (an iterator is read into a
    list first, so its length is known and it is consumed only once)."""
    if type(items) is not list and type(items) is not tuple and type(items) is not str:
        items = list(items)
        _charge(_size(items))
    cap = _budget().cap
    total = len(separator) * max(len(items) - 1, 0)
    for item in items:
        if total > cap:  # no need to measure the rest
            raise _Refused(
                f"{what} would build a str of over {total} characters; the limit is {cap}"
            )
        total += len(item) if type(item) is str else len(str(item))
    _check_built(total, what)
    return items


def _check_replace(text: str, old: Any, new: Any, count: Any, what: str) -> None:
    if type(old) is not str or type(new) is not str or len(new) <= len(old):
        return
    times = len(text) + 1 if not old else text.count(old)
    if type(count) is int and 0 <= count < times:
        times = count
    _check_built(len(text) + times * (len(new) - len(old)), what)


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _check_str_method(
    text: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, ...]:
    """Check a ``str`` method call that can build a larger string; returns the arguments to
    call it with (``join``'s iterable read into a list)."""
    what = f"str.{name}()"
    if name in _WIDTH_METHODS:
        _check_sizes(args, kwargs, what)
        if name == "expandtabs":
            tabsize = _arg(args, kwargs, 0, "tabsize")
            width = 8 if tabsize is None else tabsize
            if type(width) is int and width > 0:
                _check_built(len(text) + text.count("\t") * width, what)
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, args[0], args[1], _arg(args, kwargs, 2, "count"), what)
    elif name == "join" and len(args) == 1:
        return (_check_join(args[0], text, what),)
    return args


# Filters that can build a value larger than their input: each check gets the call's arguments
# (``at`` is the index of the filtered value: 1 for filters that take the environment first)
# and returns the arguments to call the filter with.
_FilterCheck = Callable[[tuple[Any, ...], dict[str, Any], int, str], tuple[Any, ...]]


def _filter_widths(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    _check_sizes(args[at + 1 :], kwargs, f"the {name!r} filter")
    return args


def _filter_format(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    _filter_widths(args, kwargs, at, name)
    fmt = args[at] if len(args) > at else None
    if isinstance(fmt, str):
        _check_format(fmt, kwargs or tuple(args[at + 1 :]), "%", f"the {name!r} filter")
    return args


def _filter_indent(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    _filter_widths(args, kwargs, at, name)
    text, width = _arg(args, kwargs, at, "s"), _arg(args, kwargs, at + 1, "width")
    width = 4 if width is None else width
    width = width if type(width) is int else len(_text(width))
    if isinstance(text, str):
        _check_built(len(text) + (text.count("\n") + 1) * width, f"the {name!r} filter")
    return args


def _filter_wordwrap(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    _filter_widths(args, kwargs, at, name)
    text, width = _arg(args, kwargs, at, "s"), _arg(args, kwargs, at + 1, "width")
    wrap = _arg(args, kwargs, at + 3, "wrapstring")
    width = 79 if width is None else width
    if isinstance(text, str) and type(width) is int:
        breaks = len(text) // max(width, 1) + text.count("\n") + 1
        _check_built(len(text) + breaks * len(_text(wrap or "\n")), f"the {name!r} filter")
    return args


def _filter_replace(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    text = _arg(args, kwargs, at, "s")
    old, new = _arg(args, kwargs, at + 1, "old"), _arg(args, kwargs, at + 2, "new")
    count = _arg(args, kwargs, at + 3, "count")
    _check_replace(_text(text), old, new, count, f"the {name!r} filter")
    return args


def _filter_join(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    if len(args) <= at:
        return args
    separator = _arg(args, kwargs, at + 1, "d")
    items = _check_join(args[at], _text(separator or ""), f"the {name!r} filter")
    return (*args[:at], items, *args[at + 1 :])


def _filter_tojson(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    indent = _arg(args, kwargs, at + 1, "indent")
    if indent is not None and len(args) > at:
        # Checked by encoding it once, piece by piece; the filter then encodes it again.
        _indented_json(args[at], indent, f"the {name!r} filter", sort_keys=True)
    return args


_FILTER_CHECKS: dict[str, _FilterCheck] = {
    "batch": _filter_widths,
    "center": _filter_widths,
    "format": _filter_format,
    "indent": _filter_indent,
    "join": _filter_join,
    "replace": _filter_replace,
    "slice": _filter_widths,
    "tojson": _filter_tojson,
    "truncate": _filter_widths,
    "wordwrap": _filter_wordwrap,
}


def _checked_filter(function: Callable[..., Any], check: _FilterCheck, name: str) -> Any:
    """``function`` with its size check in front (its result is charged where it is used)."""
    at = 1 if hasattr(function, "jinja_pass_arg") else 0

    @functools.wraps(function)  # keeps jinja_pass_arg, so Jinja passes the same arguments
    def checked(*args: Any, **kwargs: Any) -> Any:
        return function(*check(args, kwargs, at, name), **kwargs)

    return checked


def _loop_guard(iterable: Any, weight: int) -> Any:
    """Wraps every ``{% for %}``'s iterable: each step costs 1 plus the literal text its body
    writes (``weight``), so loops count against the budget and the clock. A short loop over a
    sized value is charged at once and runs unwrapped."""
    cost = 1 + weight
    kind = type(iterable)
    if kind is list or kind is tuple or kind is range or kind is dict or kind is str:
        units = cost * len(iterable)
        if units < _CLOCK_EVERY:
            budget = _budget()
            left = budget.left - units
            budget.left = left
            if left < budget.check_at:
                _checkpoint(budget)
            return iterable
    return _steps(iterable, cost)


def _steps(iterable: Any, cost: int) -> Any:
    budget = _budget()
    for item in iterable:
        left = budget.left - cost
        budget.left = left
        if left < budget.check_at:
            _checkpoint(budget)
        yield item


def _concat_guard(items: list[Any]) -> str:
    """``a ~ b ~ c``, charged, and refused when over the limit. The string is built first:
    its operands exist already, so it is at most their number times the limit."""
    text = "".join(map(str, items))
    size = len(text)
    if size > _MAX_REPEAT:
        _check_built(size, "'~'")
    budget = _budget()  # _charge(1 + size), inlined like the other guards: hot paths
    left = budget.left - 1 - size
    budget.left = left
    if left < budget.check_at:
        _checkpoint(budget)
    return text


def _charge_guard(value: Any) -> Any:
    """Charges a new value to the budget: the result of a filter or a call, or a slice (Jinja
    compiles slices to plain Python, past the sandbox's hooks)."""
    kind = type(value)
    if kind is str:
        units = 1 + len(value)
    elif kind is list or kind is tuple or kind is dict:
        units = 1 + _ITEM_COST * len(value)
    else:
        units = 1
    budget = _budget()
    left = budget.left - units
    budget.left = left
    if left < budget.check_at:
        _checkpoint(budget)
    return value


def _range(*args: int) -> range:
    numbers = range(*args)
    length = max(0, -((numbers.start - numbers.stop) // numbers.step))
    if length > _MAX_RANGE:
        raise _Refused(f"range() of {length} items; the limit is {_MAX_RANGE}")
    return numbers


# Names of the filters the parse step inserts; they contain a space, so no template can name them.
_LOOP_FILTER = "loop guard"
_CONCAT_FILTER = "concat guard"
_CHARGE_FILTER = "charge guard"
_PRINT_FILTER = "print guard"
_GUARDS = frozenset({_LOOP_FILTER, _CONCAT_FILTER, _CHARGE_FILTER, _PRINT_FILTER})
# Filters whose result is a number, a flag, one of their inputs, or a lazy iterator that is
# charged where it is consumed: their results need no charge guard.
_UNCHARGED_FILTERS = frozenset(
    {
        "abs", "attr", "count", "d", "default", "filesizeformat", "first", "float", "int",
        "last", "length", "map", "max", "min", "random", "reject", "rejectattr", "round",
        "select", "selectattr", "sum", "wordcount",
    }
)  # fmt: skip


@functools.cache
def _environment_factory() -> Callable[[IncludeResolver | None, bool], Environment]:
    """Import Jinja2 and define the classes that need it, once."""
    from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound, Undefined, nodes
    from jinja2.exceptions import SecurityError
    from jinja2.runtime import Context, LoopContext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import generate_lorem_ipsum

    class SandboxEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox, stricter: unsafe attributes fail loudly, huge values are refused, and
        every render is held to a work budget and a time limit."""

        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
            tags = source.count("{{") + source.count("{%")
            if tags > _MAX_TAGS:  # checked before parsing: parsing is the slow part
                where = filename or "the template"
                raise PromptSyntaxError(
                    f"{where}: the template has {tags} tags ({{{{ }}}} and {{% %}}), more than "
                    f"the limit of {_MAX_TAGS} that keeps compiling quick; split it into "
                    "included files",
                    path=filename,
                )
            try:
                tree = super()._parse(source, name, filename)
            except RecursionError:
                raise _too_deep(filename, "Jinja2's parser gave up") from None
            _guard_tree(tree, filename)
            tree.set_environment(self)
            return tree

        def _compile(self, source: str, filename: str) -> CodeType:
            try:
                return super()._compile(source, filename)
            except (RecursionError, SyntaxError) as exc:  # limits of Python's own compiler
                raise _too_deep(filename, str(getattr(exc, "msg", exc))) from None

        def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
            # The stock sandbox returns an undefined that only fails when used further;
            # a template reaching for internals is an attack or a bug either way.
            raise SecurityError(
                f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
            )

        def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                _check_multiply(left, right)
            elif operator == "+":
                kind = type(left)
                if kind is type(right) and (kind is str or kind is list or kind is tuple):
                    _check_built(len(left) + len(right), "'+'", kind.__name__)
            elif operator == "%":
                if isinstance(left, str):
                    _check_format(left, right, "%", "'%' formatting")
                    if "*" in left:  # "%*d" % (width, value): the width is an argument
                        values = right if isinstance(right, tuple) else (right,)
                        _check_sizes(values, {}, "'%' formatting")
            elif (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and abs(left) > 1
                and left.bit_length() * right > _MAX_POWER_BITS
            ):
                raise SecurityError(f"'**' would build an integer over {_MAX_POWER_BITS} bits")
            result = super().call_binop(context, operator, left, right)
            kind = type(result)
            if kind is str or kind is list or kind is tuple:  # numbers cost nothing to keep
                _charge_guard(result)
            return result

        def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            # str methods that take a width or repeat their input are checked before they
            # build anything; every call is charged with the size of what it returns.
            if type(__obj) is BuiltinMethodType and isinstance(__obj.__self__, str):
                args = _check_str_method(__obj.__self__, __obj.__name__, args, kwargs)
            elif type(__obj) is LoopContext and args:
                # loop(children) in a recursive for: the parse step guarded the first
                # iterable only.
                args = (_loop_guard(args[0], 0), *args[1:])
            # Charging every call, even one returning nothing, bounds recursive macros.
            return _charge_guard(super().call(__context, __obj, *args, **kwargs))

        def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
            # Jinja wraps str.format when it is looked up; check the format's widths and
            # fields against the arguments it is finally called with.
            wrapped = super().wrap_str_format(value)
            f_self = getattr(value, "__self__", None)
            if wrapped is None or not isinstance(f_self, str):
                return wrapped
            name = getattr(value, "__name__", "format")
            _check_widths(f_self, f"str.{name}()")

            def checked(*args: Any, **kwargs: Any) -> str:
                values = (*args, *kwargs.values())
                if name == "format_map" and args and isinstance(args[0], Mapping):
                    values = tuple(args[0].values())
                _check_format(f_self, values, "{", f"str.{name}()")
                return wrapped(*args, **kwargs)

            return functools.update_wrapper(checked, wrapped)

    def _check_multiply(left: Any, right: Any) -> None:
        for seq, times in ((left, right), (right, left)):
            if (
                isinstance(seq, (str, list, tuple))
                and isinstance(times, int)
                and len(seq) * times > _MAX_REPEAT
            ):
                raise SecurityError(
                    f"'*' would build a {type(seq).__name__} of {len(seq) * times} "
                    f"items; the limit is {_MAX_REPEAT}"
                )
        if (
            type(left) is int
            and type(right) is int
            and left.bit_length() + right.bit_length() > _MAX_POWER_BITS
        ):
            raise SecurityError(f"'*' would build an integer over {_MAX_POWER_BITS} bits")

    def _lipsum(*args: Any, **kwargs: Any) -> str:
        paragraphs, most = _arg(args, kwargs, 0, "n"), _arg(args, kwargs, 3, "max")
        paragraphs = 5 if paragraphs is None else paragraphs
        most = 100 if most is None else most
        if type(paragraphs) is int and type(most) is int and paragraphs * most > _MAX_LIPSUM_WORDS:
            raise _Refused(
                f"lipsum() of up to {paragraphs * most} words; the limit is {_MAX_LIPSUM_WORDS}"
            )
        return str(generate_lorem_ipsum(*args, **kwargs))

    def _guard_tree(tree: nodes.Template, filename: str | None) -> None:
        """Route every loop's iterable through the loop guard, every ``~`` through the concat
        guard, and every slice and filter result through the charge guard, so none of them runs
        unchecked; refuse templates too big or too deeply nested to compile quickly.

        What an ``{{ }}`` prints directly is charged by ``finalize``: it needs no guard, so
        ``{{ a ~ b }}`` and ``{{ x|upper }}`` cost nothing extra."""
        pending: list[tuple[nodes.Node, int]] = [(tree, 0)]
        charged: set[int] = set()  # nodes already wrapped (the wrapper is visited next)
        count = 0
        while pending:
            node, depth = pending.pop()
            count += 1
            if count > _MAX_NODES or depth > _MAX_NESTING:
                raise _too_complex(filename, node, count > _MAX_NODES)
            printed = isinstance(node, nodes.Output)
            # The guards this adds do not count as nesting: the author did not write them.
            inner = depth if isinstance(node, nodes.Filter) and node.name in _GUARDS else depth + 1
            for field, value in node.iter_fields():
                if isinstance(value, nodes.Node):
                    value = _guarded_node(value, charged, printed)
                    setattr(node, field, value)
                    pending.append((value, inner))
                elif isinstance(value, list):
                    for index, item in enumerate(value):
                        if isinstance(item, nodes.Node):
                            value[index] = item = _guarded_node(item, charged, printed)
                            pending.append((item, inner))

    def _guarded_node(node: nodes.Node, charged: set[int], printed: bool) -> nodes.Node:
        if isinstance(node, nodes.For):
            weight = nodes.Const(_literal_weight(node.body), lineno=node.lineno)
            node.iter = nodes.Filter(
                node.iter, _LOOP_FILTER, [weight], [], None, None, lineno=node.iter.lineno
            )
        elif isinstance(node, nodes.FilterBlock):
            # A filter block's output is computed from the values inside it (a `replace` could
            # turn a value's text into a new line): it is printed like a value, inert.
            node.filter = nodes.Filter(
                node.filter, _PRINT_FILTER, [], [], None, None, lineno=node.lineno
            )
        elif printed or id(node) in charged:
            pass
        elif isinstance(node, nodes.Concat):
            items = nodes.List(node.nodes, lineno=node.lineno)
            return nodes.Filter(items, _CONCAT_FILTER, [], [], None, None, lineno=node.lineno)
        elif (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice)) or (
            isinstance(node, nodes.Filter)
            and node.name not in _UNCHARGED_FILTERS
            and node.name not in _GUARDS
        ):
            # A filter's result, or a slice: Jinja compiles slices to plain Python, past the
            # sandbox's hooks, and a slice is a copy.
            charged.add(id(node))
            return nodes.Filter(node, _CHARGE_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def _literal_weight(body: list[nodes.Node]) -> int:
        """Characters of literal text one step of a loop body writes, at most. Nested loops
        charge their own steps; macro and call-block bodies are charged when called."""
        total = 0
        pending = list(body)
        while pending:
            node = pending.pop()
            if isinstance(node, nodes.TemplateData):
                total += len(node.data)
            elif isinstance(node, nodes.For):
                pending.extend(node.else_)
            elif not isinstance(node, (nodes.Macro, nodes.CallBlock)):
                pending.extend(node.iter_child_nodes())
        return total

    class NoSourceLoader(BaseLoader):
        """For prompts parsed from a string: there is nowhere to read an include from."""

        def get_source(
            self, environment: Environment, template: str
        ) -> tuple[str, str | None, Callable[[], bool] | None]:
            raise TemplateNotFound(template)

    class ResolverLoader(BaseLoader):
        """Loads included files through the prompt's source, frontmatter removed."""

        def __init__(self, resolver: IncludeResolver) -> None:
            self.resolver = resolver
            self.body_lines: dict[str, int] = {}

        def get_source(
            self, environment: Environment, template: str
        ) -> tuple[str, str | None, Callable[[], bool] | None]:
            try:
                text, filename, uptodate = self.resolver(template)
            except PromptNotFoundError as exc:
                # TemplateNotFound keeps `{% include ... ignore missing %}` working.
                raise TemplateNotFound(template) from exc
            try:
                body, body_line = _include_body(text)
            except PromptSyntaxError as exc:  # the splitter does not know the file's name
                raise PromptSyntaxError(
                    f"{filename} (included file): {exc}", path=filename, line=exc.line
                ) from None
            self.body_lines[filename] = body_line
            return body, filename, uptodate

    def make(resolver: IncludeResolver | None, strict: bool) -> Environment:
        env = SandboxEnvironment(
            autoescape=False,
            keep_trailing_newline=True,
            optimized=False,
            trim_blocks=False,
            lstrip_blocks=False,
            undefined=StrictUndefined if strict else Undefined,
            finalize=_neutralise,
            loader=NoSourceLoader() if resolver is None else ResolverLoader(resolver),
        )
        env.filters["json"] = _json_filter
        for name, check in _FILTER_CHECKS.items():
            env.filters[name] = _checked_filter(env.filters[name], check, name)
        env.filters[_LOOP_FILTER] = _loop_guard
        env.filters[_CONCAT_FILTER] = _concat_guard
        env.filters[_CHARGE_FILTER] = _charge_guard
        env.filters[_PRINT_FILTER] = _neutralise
        env.globals["range"] = _range
        env.globals["lipsum"] = _lipsum
        return env

    return make


def _too_deep(filename: str | None, reason: str) -> PromptSyntaxError:
    where = filename or "the template"
    return PromptSyntaxError(
        f"{where}: the template nests blocks or expressions too deeply to compile ({reason}); "
        "flatten it: fewer {% if %}/{% for %} inside each other, shorter filter chains, fewer "
        "nested parentheses",
        path=filename,
    )


def _too_complex(filename: str | None, node: Any, too_many: bool) -> PromptSyntaxError:
    where = filename or "the template"
    line = getattr(node, "lineno", None)
    problem = (
        f"has more than {_MAX_NODES} expressions and tags, too many to compile quickly; "
        "split it into included files"
        if too_many
        else f"nests blocks and expressions more than {_MAX_NESTING} levels deep at line "
        f"{line}; flatten it"
    )
    return PromptSyntaxError(f"{where}: the template {problem}", path=filename, line=line)


def _include_body(text: str) -> tuple[str, int]:
    """An included file's template text without its frontmatter, and the file line it starts at."""
    if "---" in text:
        from promptdock.prompt_file import split_frontmatter

        split = split_frontmatter(text)
        if split.yaml_text is None:
            return split.body, split.body_line
        # The parser trims a body's trailing whitespace; an included file that ends with a
        # newline must still end its last line, or the includer's next line would join it.
        ends_line = text.endswith(("\n", "\r"))
        return (split.body + "\n" if ends_line and split.body else split.body), split.body_line
    # Cannot hold frontmatter; normalise the way the parser does for whole files.
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, 1


# ---------------------------------------------------------------------------------------------
# Errors


def _reason(exc: Exception) -> str:
    """A Jinja2 error's message, ready to be followed by "; how to fix it"."""
    return str(getattr(exc, "message", None) or exc).rstrip(".")


def _syntax_error(
    exc: TemplateSyntaxError, prompt: PromptFile, body_lines: Mapping[str, int]
) -> PromptSyntaxError:
    filename = exc.filename
    if filename is None or filename == prompt.location:
        filename, first = prompt.location, prompt.body_line
    else:
        first = body_lines.get(filename, 1)
    line = first + exc.lineno - 1
    via = "" if filename == prompt.location else f" (included by prompt {prompt.id!r})"
    return PromptSyntaxError(
        f"{filename}, line {line}{via}: template syntax error: {_reason(exc)}; fix the Jinja2 "
        "syntax there (check that every {% if %}/{% for %} is closed and every {{ has its }})",
        path=filename,
        line=line,
    )


def _failing_line(exc: BaseException, prompt: PromptFile, state: _Compiled) -> str:
    """``"file, line N"`` for the innermost template frame of ``exc``'s traceback."""
    found = prompt.location
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename == prompt.location:
            found = f"{filename}, line {prompt.body_line + tb.tb_lineno - 1}"
        elif filename in state.body_lines:
            found = f"{filename}, line {state.body_lines[filename] + tb.tb_lineno - 1}"
        tb = tb.tb_next
    return found


def _render_failure(exc: Exception, prompt: PromptFile, state: _Compiled) -> PromptdockError:
    from jinja2.exceptions import (
        SecurityError,
        TemplateNotFound,
        TemplateSyntaxError,
        UndefinedError,
    )

    if isinstance(exc, TemplateSyntaxError):
        return _syntax_error(exc, prompt, state.body_lines)
    where = f"prompt {prompt.id!r} ({_failing_line(exc, prompt, state)})"
    if isinstance(exc, _LimitExceeded):
        return TemplateSecurityError(f"{where}: {exc}")
    if isinstance(exc, SecurityError | _Refused):
        return TemplateSecurityError(
            f"{where}: the template sandbox refused an operation: {exc}; templates may only "
            "format values, not reach into Python objects or build huge values"
        )
    if isinstance(exc, UndefinedError):
        return RenderError(
            f"{where}: {_reason(exc)}; pass that variable, give it a default under input.default, "
            "or guard it in the template with {% if ... is defined %}"
        )
    if isinstance(exc, TemplateNotFound):
        if prompt.include_resolver is None:
            return RenderError(
                f"{where}: cannot include {exc.name!r}: includes need a source, and this prompt "
                "was not loaded from one; load it through a PromptDock source or pass "
                "include_resolver to parse_prompt"
            )
        if isinstance(exc.__cause__, UnsafePromptIdError):
            return RenderError(
                f"{where}: the include name {exc.name!r} is not allowed ({exc.__cause__}); an "
                "include must name a file inside the prompt's own source"
            )
        reason = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        return RenderError(
            f"{where}: the included file {exc.name!r} does not exist in the prompt's "
            f"source{reason}; fix the name in the {{% include %}} or add the file"
        )
    if isinstance(exc, RecursionError):
        return RenderError(
            f"{where}: the template recursed too deeply; look for files that include each other "
            "or a macro that calls itself"
        )
    return RenderError(f"{where}: the template failed: {type(exc).__name__}: {exc}")


def _check_length(prompt: PromptFile, text: str, limit: int) -> None:
    length = len(text) - text.count(_VALUE)  # value markers are not output
    if length > limit:
        raise RenderError(
            f"prompt {prompt.id!r} ({prompt.location}) rendered to {length} characters, more "
            f"than max_output_chars={limit}; shorten the variables or raise the limit in "
            "RenderOptions"
        )
