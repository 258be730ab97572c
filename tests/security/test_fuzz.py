"""Fuzzing: hostile bytes into every parser raise only promptdock's errors, and never hang.

Property tests over ``parse_prompt`` (bytes, and text built from frontmatter and template
fragments), rendering of arbitrary templates, Picoschema, input validation, prompt ids,
``config.yaml`` loading and the Bitbucket webhook handler. The default suite tries a few
hundred inputs per property; ``nox -s fuzz`` sets ``PROMPTDOCK_FUZZ_EXAMPLES`` for a long run.
Every render runs under the render time limit, so no input can hang a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import posixpath
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptdock import (
    ConfigError,
    PromptDock,
    PromptdockError,
    RenderOptions,
    SourceConfig,
    UnsafePromptIdError,
    check_prompt_id,
    parse_prompt,
    rendering,
)
from promptdock._validation import compile_validator
from promptdock.config import load_config
from promptdock.picoschema import picoschema_to_json_schema
from promptdock.prompt_file import split_frontmatter
from promptdock.rendering import render_prompt
from tests.security.figures import count

EXAMPLES = int(os.environ.get("PROMPTDOCK_FUZZ_EXAMPLES", "150"))
"""Inputs per property: a few hundred in the default suite, many more under ``nox -s fuzz``."""

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@contextlib.contextmanager
def _fast_clock() -> Iterator[RenderOptions]:
    # A generated template may loop for a long time: stop it well before the default limit
    # (through RenderOptions once it has the field, else through the module default).
    if "max_render_seconds" in RenderOptions.__dataclass_fields__:
        field: dict[str, Any] = {"max_render_seconds": 0.05}
        yield RenderOptions(**field)
        return
    saved = rendering.MAX_RENDER_SECONDS
    rendering.MAX_RENDER_SECONDS = 0.05
    try:
        yield RenderOptions()
    finally:
        rendering.MAX_RENDER_SECONDS = saved


_FRONTMATTER = (
    "---\n", "---", "model: ", "gpt-4", "'{{ m }}'", "temperature: ", "0.5", "config:\n",
    "  maxOutputTokens: ", "input:\n", "  schema:\n", "    q: ", "string", "integer?",
    "object", "(array", ", a note", "  default:\n", "output:\n", "  format: json\n",
    "metadata: ", "&a ", "*a", "<<: ", "!!binary ", "!!python/object ", "%YAML 1.1\n", "[",
    "]", "{", "}", ":", ": ", "- ", "\n", "  ", "\t", "#", "'", '"', "|\n", ">\n", "\ufeff",
    "\r\n", "\r", "\x00", "\u2028", "~", "null", "yes", "1e999", "-0", "0x1F", "2026-01-01",
)  # fmt: skip
_TEMPLATE = (
    "{{ ", " }}", "{% ", " %}", "{# ", " #}", "{%- ", " -%}", "x", "q", "m", "loop", "self",
    "cycler", "range(", "(", ")", "[", "]", "{", "}", ",", ".", "|", "~", "*", "**", "+",
    "%", "/", "-", "==", " if ", " else ", " in ", " is ", "defined", "for ", "endfor",
    "if ", "endif", "set ", "endset", "macro m(a)", "endmacro", "call m(1)", "endcall",
    "filter upper", "endfilter", "raw", "endraw", "include 'x'", "import 'x' as y",
    "extends 'x'", "block b", "endblock", "upper", "join(', ')", "replace('a', 'bb')",
    "format(1)", "'a'", '"b"', "1", "100000", "10 ** 9", "__class__", "_x", "System:",
    "User:", "\n", " ", "\ue000", "\ue001", "caller()", "lipsum(", "namespace(", "dict(",
)  # fmt: skip


def _assembled(fragments: tuple[str, ...], size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(fragments), max_size=size).map("".join)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _check_parse(data: str | bytes) -> None:
    try:
        prompt = parse_prompt(data, name="fuzz", path="fuzz.prompt")
    except PromptdockError:
        return
    with _fast_clock() as options, contextlib.suppress(PromptdockError):
        render_prompt(prompt, {"q": "value", "x": [1, 2], "m": "gpt-4"}, options)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_parse_prompt_on_arbitrary_bytes(data: bytes) -> None:
    count("fuzz: parse_prompt inputs (bytes)")
    _check_parse(data)


@FUZZ
@given(
    text=st.tuples(_assembled(_FRONTMATTER, 40), _assembled(_TEMPLATE, 30)).map(
        lambda parts: "---\n" + parts[0] + "\n---\n" + parts[1]
    )
)
def test_parse_prompt_on_frontmatter_and_template_fragments(text: str) -> None:
    count("fuzz: parse_prompt inputs (fragments)")
    _check_parse(text)


@FUZZ
@given(body=_assembled(_TEMPLATE, 60))
def test_rendering_arbitrary_templates_raises_only_promptdock_errors(body: str) -> None:
    count("fuzz: templates rendered")
    _check_parse(body)


@FUZZ
@given(text=st.text(max_size=400))
def test_split_frontmatter_never_fails_unexpectedly(text: str) -> None:
    count("fuzz: split_frontmatter inputs")
    try:
        split = split_frontmatter(text, path="fuzz.prompt")
    except PromptdockError:
        return
    assert split.body_line >= 1


@FUZZ
@given(schema=_json, value=_json)
def test_picoschema_and_validation_raise_only_promptdock_errors(schema: Any, value: Any) -> None:
    count("fuzz: schemas and values")
    try:
        compiled = picoschema_to_json_schema(schema, root="input.schema")
    except PromptdockError:
        return
    if not isinstance(compiled, dict):
        return
    try:
        validate = compile_validator(compiled, prompt_id="fuzz")
        validate({"q": value} if not isinstance(value, dict) else value)
    except PromptdockError:
        pass


@FUZZ
@given(prompt_id=st.text(max_size=40) | _assembled(("..", ".", "/", "\\", "%2e", "a", ":"), 8))
def test_an_accepted_id_never_leaves_its_folder(prompt_id: str) -> None:
    count("fuzz: prompt ids")
    try:
        accepted = check_prompt_id(prompt_id)
    except UnsafePromptIdError:
        return
    joined = posixpath.normpath(posixpath.join("/srv/prompts", accepted + ".prompt"))
    assert joined.startswith("/srv/prompts/")
    assert "\\" not in accepted
    assert "\x00" not in accepted


@pytest.fixture(scope="module")
def config_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


_CONFIG = (
    "model_list:\n", "  - model_name: m\n", "    litellm_params:\n", "      model: ",
    "dotprompt/gpt-4", "os.environ/NOPE", "      prompt_id: ", "hello", "litellm_settings:\n",
    "  global_prompt_directory: ", "./prompts", "general_settings:\n", "  master_key: ",
    "sk-1", "keys:\n", "  - key: k\n", "    models: ", "[a, b]", "sources:\n", "  t:\n",
    "    kind: ", "bitbucket", "filesystem", "&a ", "*a", "<<: *a", "{", "}", "[", "]", ": ",
    "- ", "\n", "  ", "\t", "'", '"', "null", "1", "-1", "true", "!!binary x", "%TAG ! x\n",
)  # fmt: skip


@pytest.mark.filterwarnings(
    # Reported for config.py (see test_bombs.py): a reused anchor warns instead of failing.
    "ignore::ruamel.yaml.error.ReusedAnchorWarning"
)
@FUZZ
@given(data=st.binary(max_size=1024) | _assembled(_CONFIG, 50).map(lambda text: text.encode()))
def test_config_loading_raises_only_config_errors(config_dir: Path, data: bytes) -> None:
    count("fuzz: config files")
    path = config_dir / "config.yaml"
    path.write_bytes(data)
    try:
        config = load_config(path)
    except ConfigError:
        return
    with contextlib.suppress(PromptdockError):
        config.make_dock()


# -- the webhook handler --------------------------------------------------------------------

SECRET = "fuzz-webhook-secret-2b9c"


def _webhook() -> Any:
    # Imported here: the proxy is an optional extra, the rest of this module does not need it.
    from promptdock.proxy.errors import Redactor
    from promptdock.proxy.webhook import BitbucketWebhook

    config = SourceConfig("t", "bitbucket", {"workspace": "acme", "repository": "prompts"})
    return BitbucketWebhook(SECRET, {"t": config}, PromptDock(), Redactor([SECRET]))


def _signed(body: bytes) -> bytes:
    return b"sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest().encode()


_PUSH = json.dumps(
    {"repository": {"full_name": "acme/prompts"}, "push": {"changes": [{"new": {"name": "main"}}]}}
)


@FUZZ
@given(
    body=st.binary(max_size=1024)
    | _json.map(lambda value: json.dumps(value).encode())
    | st.just(_PUSH.encode()),
    event=st.sampled_from(["repo:push", "repo:refs_changed", "diagnostics:ping", None, "x"]),
    delivery=st.none() | st.text(max_size=10),
    signed=st.booleans(),
)
def test_webhook_handler_answers_or_refuses_any_delivery(
    body: bytes, event: str | None, delivery: str | None, signed: bool
) -> None:
    from promptdock.proxy.errors import ApiError

    count("fuzz: webhook deliveries")
    hook = _webhook()
    signature = _signed(body) if signed else b"sha256=" + b"0" * 64
    status = 200
    try:
        answer = asyncio.run(hook.handle(event, delivery, signature, body))
    except ApiError as exc:
        status, answer = exc.status, {}
    assert status in (200, 400, 401)
    if status != 200:
        return
    assert signed
    assert isinstance(answer, dict)
    assert answer["status"] in {"ok", "ignored", "duplicate", "invalidated"}


def test_webhook_refuses_a_deeply_nested_body() -> None:
    from promptdock.proxy.errors import ApiError

    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ApiError) as info:
        asyncio.run(_webhook().handle("repo:push", "deep", _signed(body), body))
    assert info.value.status == 400
