"""The built-in renderer: a prompt's Jinja2 body, rendered in a sandbox, split into chat messages.

Rendering a :class:`~promptdock.models.PromptFile` takes four steps: merge ``input.default``
under the caller's variables, validate them against ``input.schema``, render the body in an
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (autoescape off, trailing newline kept,
undefined variables empty unless ``strict_undefined``), then split the text into messages at
role lines (``System:``, ``User:``, ``Assistant:``, any case, see :func:`split_messages`).

**Role boundaries come only from text the template author wrote.** Every value printed by
``{{ ... }}`` passes through the environment's ``finalize`` hook, which marks where the value
starts and swaps its newlines for a private character, so no line of a value can be read as a
role line. The markers are removed after splitting, so values come out verbatim, inside the
message they were written into. Literal template text and included files keep their
role lines. The one consequence for authors: anything printed *through* ``{{ }}`` is inert,
including the output of macros, ``caller()``, ``super()`` and ``{% set %}`` blocks, so a role
line must be written as template text (or come from an include), never produced by an
expression. The private characters U+E000 and U+E001 are reserved: U+E001 is dropped from
values and U+E000 in a value comes out as a newline.

Jinja2 is imported on the first render, not with this module, so tools that never render (a
prompt listing) do not pay for it.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
import unicodedata
import weakref
from collections.abc import Callable, Mapping
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
from promptdock.models import IncludeResolver, PromptFile, RenderedPrompt, RenderOptions

if TYPE_CHECKING:
    from jinja2 import Environment, Template
    from jinja2.exceptions import TemplateSyntaxError

__all__ = ["hookimpl", "render", "render_prompt", "split_messages"]

hookimpl = pluggy.HookimplMarker("promptdock")
"""The ``promptdock`` hook marker (the same one :mod:`promptdock` re-exports)."""

_NEWLINE = "\ue000"  # a newline inside a printed value
_VALUE = "\ue001"  # the start of a printed value: never the start of a role line

_MAX_REPEAT = 1_000_000  # longest str/list a template may build with `*`
_MAX_POWER_BITS = 100_000  # largest int a template may build with `**`
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_FORMAT_METHODS = frozenset({"format", "format_map"})
_WIDTH = re.compile(r"[0-9]{7,}")  # a width or precision of a million or more in a format


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
    :raises TemplateSecurityError: the template tried something the sandbox forbids.
    :raises RenderError: the template failed, or the text exceeds ``max_output_chars``.
    """
    state = _compiled(prompt, options.strict_undefined)
    values = {**prompt.input_defaults, **variables} if prompt.input_defaults else variables
    if state.validate is not None:
        state.validate(values)
    if options.reject_role_lines:
        _reject_role_lines(prompt, variables)
    try:
        text = state.template.render(values)
        model = prompt.model
        if state.model_template is not None:
            model = _plain(state.model_template.render(values)).strip() or None
    except PromptdockError:
        raise
    except Exception as exc:
        raise _render_failure(exc, prompt, state) from exc
    if len(text) > options.max_output_chars:
        _check_length(prompt, text, options.max_output_chars)
    return RenderedPrompt(_split(text), model, _fresh(prompt.params), prompt)


def _fresh(params: Mapping[str, Any]) -> dict[str, Any]:
    """A per-render copy of the prompt's params: callers and dispatchers may change theirs
    without touching the cached prompt. Nested values (``response_format``, ``tools``) are
    copied too; scalars, the common case, cost one dict copy."""
    return {
        key: copy.deepcopy(value) if isinstance(value, dict | list) else value
        for key, value in params.items()
    }


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
# Role splitting


# A role line: optional spaces/tabs, a role name in any ASCII case, a colon, and one optional
# space that is not part of the content. MULTILINE `^` matches after "\n" only, never after
# \r, U+2028 or U+0085. One C-level split beats a Python loop over lines (measured), since
# most lines are not role lines.
_ROLE_LINE = re.compile(r"^[ \t]*(system|user|assistant):[ ]?", re.M | re.I | re.A)


def _split(text: str) -> list[dict[str, str]]:
    marked = _VALUE in text or _NEWLINE in text
    # [text before the first role line, role, content, role, content, ...]
    parts = _ROLE_LINE.split(text)
    first = _trim(_plain(parts[0]) if marked else parts[0])
    messages = [{"role": "user", "content": first}] if first else []
    for i in range(1, len(parts), 2):
        content = parts[i + 1]
        messages.append(
            {"role": parts[i].lower(), "content": _trim(_plain(content) if marked else content)}
        )
    if not messages:
        messages.append({"role": "user", "content": ""})
    return messages


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
    """``finalize`` hook: make a printed value unable to start a role line."""
    text = value if type(value) is str else str(value)
    if not text:
        return text
    if _VALUE in text:
        text = text.replace(_VALUE, "")
        if not text:
            return text
    if "\n" in text:
        # U+E000 already in the text is left alone: it is a newline of a value printed
        # earlier (inside a macro or a {% set %} block) and must come out as one.
        text = text.replace("\n", _NEWLINE)
    return _VALUE + text


# ---------------------------------------------------------------------------------------------
# reject_role_lines


_INVISIBLE: dict[int, str | None] = {
    ord(c): None for c in "\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff"
}
_INVISIBLE.update({ord(c): ":" for c in "\u0589\u05c3\u02f8\u2236\ua789"})  # colon look-alikes
_ROLE_LIKE = re.compile(
    r"[\s#>*_`~-]*(?:system|user|assistant|developer)[*_`~]*\s*(?:\[[^\]]*\])?[*_`~]*\s*:",
    re.IGNORECASE,
)
_MAX_DEPTH = 32


def _role_like_line(text: str) -> str | None:
    """The first line of ``text`` that would read as a role line to a person or a model."""
    # NFKC folds full-width letters and colons (U+FF1A) to ASCII; splitlines() breaks at \r,
    # U+2028, U+2029 and U+0085 as well as \n.
    cleaned = unicodedata.normalize("NFKC", text.translate(_INVISIBLE))
    for line in cleaned.splitlines():
        if _ROLE_LIKE.match(line):
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
    return json.dumps(value, ensure_ascii=False, indent=indent, default=fallback)


@functools.cache
def _environment_factory() -> Callable[[IncludeResolver | None, bool], Environment]:
    """Import Jinja2 and define the classes that need it, once."""
    from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound, Undefined
    from jinja2.exceptions import SecurityError
    from jinja2.runtime import Context
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class SandboxEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox, stricter: unsafe attributes fail loudly, huge values are refused."""

        intercepted_binops = frozenset({"*", "**", "%"})

        def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
            # The stock sandbox returns an undefined that only fails when used further;
            # a template reaching for internals is an attack or a bug either way.
            raise SecurityError(
                f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
            )

        def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
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
            elif operator == "%":
                if isinstance(left, str):
                    _check_widths(left, "'%' formatting")
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
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            # Padding methods and format strings take a width: refuse widths that would
            # build huge strings before they are built.
            name = getattr(__obj, "__name__", None)
            if name in _WIDTH_METHODS and isinstance(getattr(__obj, "__self__", None), str):
                _check_sizes(args, kwargs, f"str.{name}()")
            return super().call(__context, __obj, *args, **kwargs)

        def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
            # Jinja wraps str.format when it is looked up; check the format's widths there.
            f_self = getattr(value, "__self__", None)
            if isinstance(f_self, str) and getattr(value, "__name__", None) in _FORMAT_METHODS:
                _check_widths(f_self, "str.format()")
            return super().wrap_str_format(value)

    def _check_sizes(args: Any, kwargs: Any, what: str) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and value > _MAX_REPEAT:
                raise SecurityError(f"{what} with a width of {value}; the limit is {_MAX_REPEAT}")

    def _check_widths(fmt: str, what: str) -> None:
        for match in _WIDTH.finditer(fmt):
            if int(match.group()) > _MAX_REPEAT:
                raise SecurityError(
                    f"{what} with a width of {match.group()}; the limit is {_MAX_REPEAT}"
                )

    def _checked_filter(filter_function: Callable[..., Any], name: str) -> Callable[..., Any]:
        def checked(*args: Any, **kwargs: Any) -> Any:
            _check_sizes(args[1:], kwargs, f"the {name!r} filter")
            if name == "format" and args and isinstance(args[0], str):
                _check_widths(args[0], "the 'format' filter")
            return filter_function(*args, **kwargs)

        return checked

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
            trim_blocks=False,
            lstrip_blocks=False,
            undefined=StrictUndefined if strict else Undefined,
            finalize=_neutralise,
            loader=NoSourceLoader() if resolver is None else ResolverLoader(resolver),
        )
        env.filters["json"] = _json_filter
        for name in ("center", "indent", "format", "wordwrap", "truncate"):
            env.filters[name] = _checked_filter(env.filters[name], name)
        return env

    return make


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
    if isinstance(exc, SecurityError):
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
