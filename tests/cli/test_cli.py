"""The ``promptdock`` command, driven through click's CliRunner over real files in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from promptdock.cli import main
from promptdock.errors import ConfigError
from promptdock.lint import Finding, check_files
from tests.support.openai_server import OpenAIServer
from tests.support.seed import SEED_CONFIG

HELLO = """\
---
model: gpt-4
temperature: 0.7
max_tokens: 150
description: Says hello
input:
  schema:
    user_message: string
---
System: You are a helpful assistant.

User: {{user_message}}
"""

HELLO_V2 = """\
---
description: Second take
---
User: v2 {{ user_message }}
"""

NO_MODEL = "User: {{ topic }}\n"


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working folder, with ./prompts holding the example prompts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTDOCK_PROMPT_DIR", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _write(
        tmp_path / "prompts",
        {
            "hello.prompt": HELLO,
            "hello.v2.prompt": HELLO_V2,
            "support/no_model.prompt": NO_MODEL,
        },
    )
    return tmp_path


def invoke(*args: str, env: Mapping[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=dict(env or {}), catch_exceptions=False)


def assert_one_error_line(result: Result, text: str, exit_code: int) -> None:
    """The error contract: exactly one ``error: ...`` line on stderr, no traceback."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith("error: ")
    assert text in lines[0]
    assert "Traceback" not in result.output


# -- list ----------------------------------------------------------------------------------


def test_list_shows_ids_versions_and_descriptions(workdir: Path) -> None:
    result = invoke("list")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "hello             default,v2  Says hello",
        "support/no_model  default",
    ]


def test_list_json(workdir: Path) -> None:
    result = invoke("list", "--json")

    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed[0] == {
        "id": "hello",
        "source": "dotprompt",
        "versions": [2],
        "has_unversioned": True,
        "path": "hello.prompt",
        "description": "Says hello",
        "error": None,
    }
    assert [entry["id"] for entry in listed] == ["hello", "support/no_model"]


def test_list_shows_broken_files_and_exits_1(workdir: Path) -> None:
    _write(workdir / "prompts", {"broken.prompt": "---\nmodel: [gpt\n---\nHi\n"})

    result = invoke("list")

    assert result.exit_code == 1
    broken = result.stdout.splitlines()[0]
    assert broken.startswith("broken ")
    assert "ERROR: " in broken
    assert "broken.prompt:2" in broken
    assert "hello" in result.stdout  # the healthy prompts are still listed


def test_prompt_dir_option_and_environment_variable(workdir: Path) -> None:
    _write(workdir / "other", {"only.prompt": "Hi\n"})

    by_option = invoke("--prompt-dir", "other", "list")
    by_env = invoke("list", env={"PROMPTDOCK_PROMPT_DIR": str(workdir / "other")})

    assert by_option.stdout == "only  default\n"
    assert by_env.stdout == "only  default\n"


# -- show ----------------------------------------------------------------------------------


def test_show_prints_metadata_and_body(workdir: Path) -> None:
    result = invoke("show", "hello")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "model: gpt-4\n" in out
    assert 'params: {"temperature": 0.7, "max_tokens": 150}\n' in out
    assert "description: Says hello\n" in out
    assert '"required": [\n    "user_message"\n  ]' in out  # the schema as JSON Schema
    assert "provenance: source=dotprompt kind=filesystem prompt_id=hello path=hello.prompt" in out
    assert out.endswith("---\nSystem: You are a helpful assistant.\n\nUser: {{user_message}}\n")


def test_show_json_with_version(workdir: Path) -> None:
    result = invoke("show", "hello", "--version", "2", "--json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["version"] == 2
    assert shown["description"] == "Second take"
    assert shown["body"] == "User: v2 {{ user_message }}"
    assert shown["provenance"]["path"] == "hello.v2.prompt"
    assert shown["provenance"]["version"] == 2
    assert shown["model"] is None


def test_show_input_schema_json(workdir: Path) -> None:
    shown = json.loads(invoke("show", "hello", "--json").stdout)

    assert shown["input_schema"] == {
        "type": "object",
        "properties": {"user_message": {"type": "string"}},
        "required": ["user_message"],
        "additionalProperties": False,
    }
    assert shown["params"] == {"temperature": 0.7, "max_tokens": 150}
    assert shown["path"] == "prompts/hello.prompt"  # relative to the working directory


# -- render --------------------------------------------------------------------------------


def test_render_prints_model_params_and_messages(workdir: Path) -> None:
    result = invoke("render", "hello", "--var", "user_message=Hi there")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "model": "gpt-4",
        "params": {"temperature": 0.7, "max_tokens": 150},
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hi there"},
        ],
    }


def test_render_vars_json_gives_typed_values_and_var_wins(workdir: Path) -> None:
    _write(workdir / "prompts", {"typed.prompt": "{{ n + 1 }} {{ who }}\n"})

    result = invoke(
        "render", "typed", "--vars-json", '{"n": 41, "who": "json"}', "--var", "who=cli"
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["messages"] == [{"role": "user", "content": "42 cli"}]


def test_render_vars_file(workdir: Path) -> None:
    (workdir / "vars.json").write_text('{"user_message": "from a file"}')

    result = invoke("render", "hello", "--vars-file", "vars.json")

    assert json.loads(result.stdout)["messages"][1] == {"role": "user", "content": "from a file"}


def test_render_version(workdir: Path) -> None:
    result = invoke("render", "hello", "--version", "2", "--var", "user_message=x")

    assert json.loads(result.stdout)["messages"] == [{"role": "user", "content": "v2 x"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--var", "no-equals-sign"), "'no-equals-sign' is not NAME=VALUE"),
        (("--vars-json", "[1, 2]"), "must be a JSON object of variables, got list"),
        (("--vars-json", "{nope"), "invalid JSON"),
        (("--vars-json", "{}", "--vars-file", "vars.json"), "pass --vars-json or --vars-file"),
    ],
)
def test_render_variable_usage_errors(workdir: Path, args: tuple[str, ...], message: str) -> None:
    (workdir / "vars.json").write_text("{}")

    result = invoke("render", "hello", *args)

    assert result.exit_code == 2
    assert message in result.stderr


def test_render_strict_fails_on_undefined_variables(workdir: Path) -> None:
    lenient = invoke("render", "support/no_model")
    strict = invoke("render", "support/no_model", "--strict")

    assert lenient.exit_code == 0
    assert_one_error_line(strict, "'topic' is undefined", 1)


def test_render_input_validation_error(workdir: Path) -> None:
    result = invoke("render", "hello", "--vars-json", '{"user_message": 5}')

    assert_one_error_line(result, "user_message", 1)


# -- run -----------------------------------------------------------------------------------


def test_run_offline_with_mock_echo(workdir: Path) -> None:
    result = invoke("run", "hello", "--var", "user_message=Hi", "--model", "mock/echo")

    assert result.exit_code == 0, result.output
    assert result.stdout == "system: You are a helpful assistant.\n\nuser: Hi\n"
    (provenance,) = result.stderr.splitlines()
    assert provenance.startswith("provenance: source=dotprompt kind=filesystem prompt_id=hello ")
    assert "content_hash=" in provenance


def test_run_mock_text_and_stream(workdir: Path) -> None:
    plain = invoke("run", "support/no_model", "--mock", "canned answer here")
    streamed = invoke("run", "support/no_model", "--mock", "one two three four five", "--stream")

    assert plain.stdout == "canned answer here\n"
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == "one two three four five\n"
    assert "prompt_id=support/no_model" in streamed.stderr


def test_run_against_an_openai_compatible_server(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLI_TEST_KEY", "sk-cli-test")
    with OpenAIServer(api_key="sk-cli-test") as server:
        result = invoke(
            "run",
            "hello",
            "--var",
            "user_message=Hi",
            "--api-base",
            server.base_url,
            "--api-key-env",
            "CLI_TEST_KEY",
        )
        streamed = invoke(
            "run",
            "hello",
            "--var",
            "user_message=stream me please",
            "--stream",
            "--api-base",
            server.base_url,
            "--api-key-env",
            "CLI_TEST_KEY",
        )
        requests = server.requests

    assert result.exit_code == 0, result.output
    assert result.stdout == "echo: Hi\n"
    assert "prompt_id=hello" in result.stderr
    assert streamed.stdout == "echo: stream me please\n"
    body = requests[0].body
    assert body["model"] == "gpt-4"  # the prompt's model
    assert body["temperature"] == 0.7
    assert body["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi"},
    ]
    assert requests[0].headers["authorization"] == "Bearer sk-cli-test"
    assert requests[1].body["stream"] is True


def test_run_model_option_is_used_when_the_prompt_has_none(workdir: Path) -> None:
    with OpenAIServer() as server:
        result = invoke(
            "run",
            "support/no_model",
            "--var",
            "topic=cats",
            "--model",
            "gpt-4o-mini",
            "--api-base",
            server.base_url,
            env={"OPENAI_API_KEY": "sk-env"},
        )
        body = server.requests[0].body

    assert result.stdout == "echo: cats\n"
    assert body["model"] == "gpt-4o-mini"


def test_run_without_any_model_is_a_usage_error(workdir: Path) -> None:
    result = invoke("run", "support/no_model")

    assert result.exit_code == 2
    assert "prompt 'support/no_model' names no model: pass --model, e.g. --model gpt-4o-mini" in (
        result.stderr
    )


PICKER = """\
---
model: "{{ preferred_model }}"
temperature: 0.5
---
User: {{ question }}
"""


def test_run_sends_the_rendered_model_of_a_templated_one(workdir: Path) -> None:
    _write(workdir / "prompts", {"picker.prompt": PICKER})
    question = ("--var", "question=Why?")
    with OpenAIServer() as server:
        base = ("--api-base", server.base_url)
        chosen = invoke("run", "picker", *question, "--var", "preferred_model=gpt-x", *base)
        fallback = invoke(
            "run", "picker", *question, "--var", "preferred_model=", "--model", "m2", *base
        )
        sent = [request.body["model"] for request in server.requests]

    assert chosen.exit_code == 0, chosen.output
    assert fallback.exit_code == 0, fallback.output
    assert sent == ["gpt-x", "m2"]  # never the template text '{{ preferred_model }}'


def test_run_templated_model_that_renders_empty(workdir: Path) -> None:
    _write(workdir / "prompts", {"picker.prompt": PICKER})

    offline = invoke(
        "run", "picker", "--var", "preferred_model=", "--var", "question=q", "--mock", "ok"
    )
    failing = invoke("run", "picker", "--var", "preferred_model=", "--var", "question=q")

    assert offline.exit_code == 0, offline.output
    assert offline.stdout == "ok\n"
    assert failing.exit_code == 2
    assert (
        "prompt 'picker' names no model: its model '{{ preferred_model }}' rendered empty; "
        "set the variables it uses, or pass --model, e.g. --model gpt-4o-mini" in failing.stderr
    )


def test_run_api_key_env_must_be_set(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLI_UNSET_KEY", raising=False)

    result = invoke("run", "hello", "--model", "mock/echo", "--api-key-env", "CLI_UNSET_KEY")

    assert_one_error_line(
        result, "error: environment variable CLI_UNSET_KEY (from --api-key-env) is not set", 2
    )


def test_run_upstream_failure_is_one_line(workdir: Path) -> None:
    with OpenAIServer() as server:
        server.enqueue(status=400, body={"error": {"message": "bad model", "type": "x"}})
        result = invoke(
            "run",
            "hello",
            "--var",
            "user_message=x",
            "--api-base",
            server.base_url,
            env={"OPENAI_API_KEY": "sk-env"},
        )

    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert "400" in result.stderr


DEPLOYMENTS = """\
model_list:
  - model_name: fast
    litellm_params:
      model: dotprompt/gpt-4o-mini
      api_base: {base}
      api_key: os.environ/CLI_DEPLOYMENT_KEY
      temperature: 0.3
      max_retries: 0
  - model_name: fast
    litellm_params:
      model: dotprompt/second-of-the-same-name
  - model_name: plain
    litellm_params:
      model: openai/gpt-plain
      api_base: {base}
litellm_settings:
  global_prompt_directory: prompts
"""


def test_run_with_a_deployment_of_the_config(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLI_DEPLOYMENT_KEY", "sk-deployment")
    with OpenAIServer() as server:
        _write(workdir, {"config.yaml": DEPLOYMENTS.format(base=server.base_url)})
        config = ("--config", "config.yaml")
        no_model = invoke(*config, "run", "support/no_model", "--var", "topic=t", "--model", "fast")
        own_model = invoke(*config, "run", "hello", "--var", "user_message=u", "--model", "fast")
        plain = invoke(*config, "run", "support/no_model", "--var", "topic=t", "--model", "plain")
        sent = server.requests

    assert [r.exit_code for r in (no_model, own_model, plain)] == [0, 0, 0], no_model.output
    assert no_model.stdout == "echo: t\n"
    # the first deployment of that name; its litellm_params over the prompt's frontmatter
    assert sent[0].body["model"] == "gpt-4o-mini"
    assert sent[0].body["temperature"] == 0.3
    assert sent[0].headers["authorization"] == "Bearer sk-deployment"
    assert sent[1].body["model"] == "gpt-4"  # the prompt's own model still wins
    assert sent[1].body["temperature"] == 0.3
    assert sent[1].body["max_tokens"] == 150
    assert sent[2].body["model"] == "gpt-plain"  # LiteLLM's provider prefix dropped
    assert "authorization" not in sent[2].headers


def test_run_options_override_the_deployment(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLI_DEPLOYMENT_KEY", raising=False)
    monkeypatch.setenv("CLI_OTHER_KEY", "sk-other")
    _write(workdir, {"config.yaml": DEPLOYMENTS.format(base="http://127.0.0.1:9/v1")})
    with OpenAIServer() as server:
        result = invoke(
            "--config",
            "config.yaml",
            "run",
            "support/no_model",
            "--model",
            "fast",
            "--api-base",
            server.base_url,
            "--api-key-env",
            "CLI_OTHER_KEY",
        )
        (sent,) = server.requests

    assert result.exit_code == 0, result.output
    assert sent.headers["authorization"] == "Bearer sk-other"
    assert sent.body["temperature"] == 0.3


def test_run_deployment_needing_an_unset_variable(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLI_DEPLOYMENT_KEY", raising=False)
    _write(workdir, {"config.yaml": DEPLOYMENTS.format(base="http://127.0.0.1:9/v1")})

    result = invoke("--config", "config.yaml", "run", "support/no_model", "--model", "fast")

    assert_one_error_line(
        result,
        "error: config.yaml:6: model_list[0].litellm_params.api_key: environment variable "
        "CLI_DEPLOYMENT_KEY is not set, and deployment 'fast' needs it; export it first",
        2,
    )


def test_run_model_that_is_no_deployment_is_the_upstream_model(workdir: Path) -> None:
    _write(workdir, {"config.yaml": DEPLOYMENTS.format(base="http://127.0.0.1:9/v1")})
    with OpenAIServer() as server:
        result = invoke(
            "--config",
            "config.yaml",
            "run",
            "support/no_model",
            "--model",
            "gpt-direct",
            "--api-base",
            server.base_url,
        )
        (sent,) = server.requests

    assert result.exit_code == 0, result.output
    assert sent.body == {"model": "gpt-direct", "messages": [{"role": "user", "content": ""}]}


# -- errors --------------------------------------------------------------------------------


def test_missing_prompt_is_one_error_line_with_exit_1(workdir: Path) -> None:
    result = invoke("show", "helo")

    assert_one_error_line(result, "error: prompt 'helo' not found in source 'dotprompt'", 1)
    assert "Did you mean: hello?" in result.stderr


def test_broken_prompt_is_one_error_line(workdir: Path) -> None:
    _write(workdir / "prompts", {"broken.prompt": "---\nmodel: gpt-4\n"})

    result = invoke("show", "broken")

    assert_one_error_line(result, "prompts/broken.prompt:1: unterminated frontmatter", 1)


def test_config_problem_exits_2(workdir: Path) -> None:
    result = invoke("--source", "nowhere", "list")

    assert_one_error_line(
        result, "error: unknown source 'nowhere' (--source); the sources are: dotprompt", 2
    )


def test_missing_prompt_folder_exits_2(workdir: Path) -> None:
    result = invoke("--prompt-dir", "absent", "list")

    assert_one_error_line(result, "prompt folder 'absent' of source 'dotprompt' does not exist", 2)


def test_click_usage_errors_as_usual(workdir: Path) -> None:
    result = invoke("show")

    assert result.exit_code == 2
    assert "Missing argument 'ID'" in result.stderr


# -- --config ------------------------------------------------------------------------------


def test_seed_config_serves_its_prompt_directory(workdir: Path) -> None:
    _write(workdir, {"conf/config.yaml": SEED_CONFIG, "conf/prompts/hi.prompt": "Hi {{ x }}\n"})

    listed = invoke("--config", "conf/config.yaml", "list")
    rendered = invoke("--config", "conf/config.yaml", "render", "hi", "--var", "x=there")

    # The bitbucket source is configured too, but 'dotprompt' is the default one.
    assert listed.exit_code == 0, listed.output
    assert listed.stdout == "hi  default\n"
    assert json.loads(rendered.stdout)["messages"] == [{"role": "user", "content": "Hi there"}]


def test_config_unused_keys_are_one_warning(workdir: Path) -> None:
    config = SEED_CONFIG + "router_settings:\n  routing_strategy: simple-shuffle\n"
    _write(workdir, {"config.yaml": config})

    result = invoke("--config", "config.yaml", "list")

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "warning: config.yaml: promptdock ignores these keys: router_settings (LiteLLM settings "
        "it does not implement; harmless)\n"
    )


def test_config_source_needing_an_unset_variable(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLI_UNSET_DIR", raising=False)
    _write(
        workdir,
        {
            "config.yaml": (
                "sources:\n  team:\n    kind: filesystem\n    path: os.environ/CLI_UNSET_DIR\n"
            )
        },
    )

    result = invoke("--config", "config.yaml", "list")

    assert_one_error_line(
        result,
        "error: config.yaml:4: sources.team.path: environment variable CLI_UNSET_DIR is not "
        "set, and source 'team' needs it; export it first",
        2,
    )


def test_config_with_several_sources_needs_source(workdir: Path) -> None:
    config = "sources:\n  a: {kind: filesystem, path: prompts}\n  b: {kind: filesystem, path: x}\n"
    _write(workdir, {"config.yaml": config})

    ambiguous = invoke("--config", "config.yaml", "list")
    chosen = invoke("--config", "config.yaml", "--source", "a", "list")

    assert_one_error_line(ambiguous, "pick one with --source NAME", 2)
    assert chosen.exit_code == 0
    assert chosen.stdout.startswith("hello ")


def test_malformed_config_exits_2_with_its_line(workdir: Path) -> None:
    _write(workdir, {"config.yaml": "model_list:\n  - [\n"})

    result = invoke("--config", "config.yaml", "list")

    assert_one_error_line(result, "error: config.yaml:3: invalid YAML", 2)


# -- check ---------------------------------------------------------------------------------


def check(workdir: Path, files: Mapping[str, str], *args: str) -> Result:
    """Run ``promptdock check`` on ./prompts holding only ``files``."""
    for old in (workdir / "prompts").rglob("*.prompt"):
        old.unlink()
    _write(workdir / "prompts", files)
    return invoke("check", *args)


def test_check_clean_files_pass(workdir: Path) -> None:
    result = invoke("check")

    assert result.exit_code == 0, result.output
    assert result.stdout == "checked 3 prompt files: 0 errors, 0 warnings\n"


def test_check_yaml_error_with_line(workdir: Path) -> None:
    result = check(workdir, {"bad.prompt": "---\nmodel: gpt-4\nconfig: [1\n---\nHi\n"})

    assert result.exit_code == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith("prompts/bad.prompt:3: error: invalid YAML in frontmatter: ")
    assert result.stdout.endswith("checked 1 prompt file: 1 error, 0 warnings\n")


def test_check_unterminated_frontmatter(workdir: Path) -> None:
    result = check(workdir, {"bad.prompt": "\n---\nmodel: gpt-4\n"})

    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith(
        "prompts/bad.prompt:2: error: unterminated frontmatter: the '---' on line 2"
    )


def test_check_template_syntax_error_points_into_the_file(workdir: Path) -> None:
    text = "---\nmodel: gpt-4\n---\n\nHello\n{% if x %}\nno end\n"

    result = check(workdir, {"bad.prompt": text})

    assert result.exit_code == 1
    line = result.stdout.splitlines()[0]
    # Jinja2 reports an unclosed block where the text after it starts
    assert line.startswith("prompts/bad.prompt:6: error: template syntax error: Unexpected end")


def test_check_unknown_filter_is_a_syntax_error_but_json_is_known(workdir: Path) -> None:
    text = "{{ x | json }}\n{{ x | no_such_filter }}\n"

    result = check(workdir, {"f.prompt": text})

    assert result.stdout.splitlines() == [
        "prompts/f.prompt:2: error: template syntax error: No filter named 'no_such_filter'; "
        "fix the Jinja2 syntax (every {% if %}/{% for %} closed, every {{ with its }})",
        "checked 1 prompt file: 1 error, 0 warnings",
    ]


def test_check_unknown_frontmatter_key_is_a_warning_only(workdir: Path) -> None:
    result = check(workdir, {"w.prompt": "---\nmodel: gpt-4\ncolour: blue\n---\nHi\n"})

    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "prompts/w.prompt:3: warning: unknown frontmatter key 'colour' is kept as metadata and "
        "not sent upstream",
        "checked 1 prompt file: 0 errors, 1 warning",
    ]


def test_check_undeclared_and_unused_variables(workdir: Path) -> None:
    text = """\
---
model: gpt-4
input:
  schema:
    user_message: string
    tone?: string, how to answer
---
System: Be brief.
{% set greeting = "Hi" %}
{% for item in items %}{{ loop.index }} {{ item }} {{ range(2) | list }}{% endfor %}
User: {{ greeting }} {{ user_mesage }}
"""

    result = check(workdir, {"v.prompt": text})

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "prompts/v.prompt:5: warning: variable 'user_message' is declared in input.schema but "
        "never used in the template",
        "prompts/v.prompt:6: warning: variable 'tone' is declared in input.schema but never used "
        "in the template",
        "prompts/v.prompt:10: error: variable 'items' is used in the template but not declared "
        "in input.schema; declare it (e.g. 'items?: string')",
        "prompts/v.prompt:11: error: variable 'user_mesage' is used in the template but not "
        "declared in input.schema; did you mean 'user_message'? Otherwise declare it "
        "(e.g. 'user_mesage?: string')",
        "checked 1 prompt file: 2 errors, 2 warnings",
    ]


def test_check_variables_in_model_template_and_includes_count_as_used(workdir: Path) -> None:
    files = {
        "_partials/sig.prompt": "---\ndescription: a partial\n---\n-- {{ signature }}\n",
        "p.prompt": """\
---
model: "{{ preferred_model }}"
input:
  schema:
    preferred_model: string
    signature: string
---
Hello
{% include "_partials/sig.prompt" %}
""",
    }

    result = check(workdir, files)

    assert result.exit_code == 0, result.output
    assert result.stdout == "checked 2 prompt files: 0 errors, 0 warnings\n"


def test_check_variable_only_in_an_include_is_reported_there(workdir: Path) -> None:
    files = {
        "_partials/sig.prompt": "-- {{ signature }}\n",
        "p.prompt": "---\ninput:\n  schema:\n    name: string\n---\n{{ name }}\n"
        '{% include "_partials/sig" %}\n',
    }

    result = check(workdir, files)

    assert result.stdout.splitlines()[0] == (
        "prompts/p.prompt:7: error: variable 'signature' is used in the file '_partials/sig' "
        "included here but not declared in input.schema; declare it (e.g. 'signature?: string')"
    )


def test_check_include_that_does_not_resolve(workdir: Path) -> None:
    text = (
        'Hi\n{% include "_partials/missing.prompt" %}\n{% include "gone" ignore missing %}\n'
        '{% include "nope" %}\n{% include "../outside.prompt" %}\n'
    )
    (workdir / "outside.prompt").write_text("x")

    result = check(workdir, {"i.prompt": text})

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "prompts/i.prompt:2: error: included file '_partials/missing.prompt' not found (looked "
        "for prompts/_partials/missing.prompt); fix the name or add the file",
        "prompts/i.prompt:4: error: included file 'nope' not found (looked for prompts/nope and "
        "prompts/nope.prompt); fix the name or add the file",
        "prompts/i.prompt:5: error: include name '../outside.prompt' is not allowed: segment "
        "'..' is a dot segment or hidden; every render refuses it. Name the file by its path "
        "from the prompt folder, without '..' or '.' segments",
        "checked 1 prompt file: 3 errors, 0 warnings",
    ]


def test_check_refuses_include_names_that_every_render_refuses(workdir: Path) -> None:
    # The path stays inside the folder, but sources refuse '..' segments in names, so the
    # include fails at every render: check must say so before the commit.
    text = (
        "Hi\n"
        '{% include "_shared/tone.prompt" %}\n'
        '{% include "sub/../_shared/tone.prompt" %}\n'
        '{% include "./_shared/tone" ignore missing %}\n'
    )

    result = check(workdir, {"_shared/tone.prompt": "Be kind.\n", "t.prompt": text})

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "prompts/t.prompt:3: error: include name 'sub/../_shared/tone.prompt' is not allowed: "
        "segment '..' is a dot segment or hidden; every render refuses it. Name the file by its "
        "path from the prompt folder, without '..' or '.' segments",
        "prompts/t.prompt:4: error: include name './_shared/tone' is not allowed: segment '.' "
        "is a dot segment or hidden; every render refuses it. Name the file by its path from "
        "the prompt folder, without '..' or '.' segments",
        "checked 2 prompt files: 2 errors, 0 warnings",
    ]
    rendered = invoke("render", "t")
    assert_one_error_line(rendered, "the include name 'sub/../_shared/tone.prompt' is not", 1)


def test_check_include_through_a_link_out_of_the_folder(workdir: Path) -> None:
    (workdir / "secret.txt").write_text("outside\n")
    text = '{% include "_link.prompt" %}\n{% include "_link.prompt" ignore missing %}\n'
    check(workdir, {"l.prompt": text})
    (workdir / "prompts" / "_link.prompt").symlink_to(workdir / "secret.txt")

    result = invoke("check", "prompts/l.prompt")

    assert result.stdout.splitlines() == [
        "prompts/l.prompt:1: error: include '_link.prompt' points outside the prompt folder",
        "checked 1 prompt file: 1 error, 0 warnings",
    ]


def test_check_invalid_json_schema(workdir: Path) -> None:
    text = """\
---
model: gpt-4
input:
  schema:
    type: object
    properties:
      n: {type: 12}
---
{{ n }}
"""

    result = check(workdir, {"s.prompt": text})

    assert result.exit_code == 1
    line = result.stdout.splitlines()[0]
    assert line.startswith("prompts/s.prompt:3: error: input.schema")
    assert "is not a valid JSON Schema: 12 is not valid under any of the given schemas" in line


def test_check_single_file_resolves_includes_from_the_prompt_folder(workdir: Path) -> None:
    _write(
        workdir / "prompts",
        {"_partials/x.prompt": "x\n", "deep/a.prompt": '{% include "_partials/x.prompt" %}\n'},
    )

    result = invoke("check", "prompts/deep/a.prompt")

    assert result.exit_code == 0, result.output
    assert result.stdout == "checked 1 prompt file: 0 errors, 0 warnings\n"


def test_check_missing_prompt_folder_exits_2(workdir: Path) -> None:
    result = invoke("--prompt-dir", "absent", "check")

    assert_one_error_line(result, "prompt folder absent does not exist", 2)


def test_check_config_reports_env_variables_and_deployment_prompts(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(workdir, {"conf/config.yaml": SEED_CONFIG})
    (workdir / "conf" / "prompts").mkdir()

    failing = invoke("check", "--config", "conf/config.yaml")

    assert failing.exit_code == 1
    assert failing.stdout.splitlines() == [
        "conf/config.yaml:5: error: deployment 'my-dotprompt-model': prompt 'hello' not found "
        "in source 'dotprompt': no file hello.prompt under conf/prompts.",
        "conf/config.yaml:6: error: environment variable OPENAI_API_KEY is not set "
        "(model_list[0].litellm_params.api_key); export it before starting the proxy",
        "checked 0 prompt files and conf/config.yaml: 2 errors, 0 warnings",
    ]

    _write(workdir / "conf" / "prompts", {"hello.prompt": HELLO})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-set")
    passing = invoke("--config", "conf/config.yaml", "check")

    assert passing.exit_code == 0, passing.output
    assert passing.stdout == "checked 1 prompt file and conf/config.yaml: 0 errors, 0 warnings\n"
    assert passing.stderr == ""


def test_check_config_broken_deployment_prompt_and_bad_prefix(workdir: Path) -> None:
    config = """\
model_list:
  - model_name: broken
    litellm_params:
      model: dotprompt/gpt-4
      prompt_id: broken
  - model_name: unknown-source
    litellm_params:
      model: elsewhere/gpt-4
      prompt_id: hello
litellm_settings:
  global_prompt_directory: prompts
  drop_params: true
"""
    _write(workdir, {"config.yaml": config, "prompts/broken.prompt": "---\nx: [\n---\n"})

    result = invoke("check", "--config", "config.yaml", "prompts/hello.prompt")

    lines = result.stdout.splitlines()
    assert result.exit_code == 1
    assert lines[0].startswith(
        "config.yaml:5: error: deployment 'broken': prompts/broken.prompt:3:1: "
        "invalid YAML in frontmatter: "
    )
    assert lines[1] == (
        "config.yaml:8: error: deployment 'unknown-source': model 'elsewhere/gpt-4' must be "
        "'<source>/<model>' with a configured source (dotprompt)"
    )
    assert (
        lines[2]
        == "config.yaml:12: warning: litellm_settings.drop_params is not used by promptdock"
    )
    assert lines[3] == "checked 1 prompt file and config.yaml: 2 errors, 1 warning"


def test_check_malformed_config_is_a_finding(workdir: Path) -> None:
    _write(workdir, {"config.yaml": "model_list:\n  - model_name: x\n    litellm_params: 3\n"})

    result = invoke("check", "--config", "config.yaml", "prompts/hello.prompt")

    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        "config.yaml:3: error: model_list[0].litellm_params: must be a mapping of parameters, "
        "got a number"
    )


def test_finding_format() -> None:
    finding = Finding("prompts/a.prompt", 3, "warning", "something")

    assert str(finding) == "prompts/a.prompt:3: warning: something"
    later = Finding("prompts/a.prompt", 10, "error", "")
    assert sorted([later, finding, Finding("b", 1, "error", "")]) == [
        Finding("b", 1, "error", ""),
        finding,
        later,
    ]


def test_finding_from_an_error_takes_its_line() -> None:
    located = ConfigError("conf.yaml:7: model_list[0]: must be a mapping\nof parameters")
    unlocated = ConfigError("config file conf.yaml not found")

    assert Finding.from_error("conf.yaml", located) == Finding(
        "conf.yaml", 7, "error", "model_list[0]: must be a mapping of parameters"
    )
    assert Finding.from_error("conf.yaml", unlocated) == Finding(
        "conf.yaml", 1, "error", "config file conf.yaml not found"
    )


def test_check_files_api(workdir: Path) -> None:
    _write(workdir / "prompts", {"w.prompt": "---\ncolour: blue\n---\nHi\n"})

    findings, count = check_files(["prompts"])

    assert count == 4
    assert findings == [
        Finding(
            "prompts/w.prompt",
            2,
            "warning",
            "unknown frontmatter key 'colour' is kept as metadata and not sent upstream",
        )
    ]
    with pytest.raises(ConfigError) as info:
        check_files(["prompts", "nowhere"])
    assert str(info.value) == (
        "prompt folder nowhere does not exist: pass files or folders to check, or --prompt-dir DIR"
    )
    assert info.value.key == "prompt_dir"


# -- plugins -------------------------------------------------------------------------------


def test_plugins_lists_builtins_and_installed(workdir: Path) -> None:
    result = invoke("plugins")

    assert result.exit_code == 0, result.output
    assert "FAILED" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["jinja2", "builtin", "hooks:", "render"]
    assert any(line.split()[:2] == ["filesystem", "promptdock-filesystem"] for line in lines)


def test_plugins_json_and_load_errors(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real distribution on sys.path whose entry point cannot be imported.
    dist_info = workdir / "site" / "broken_plugin-1.2.3.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.2.3\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[promptdock]\nbroken = promptdock_cli_test_no_such_module\n"
    )
    monkeypatch.syspath_prepend(str(workdir / "site"))

    text = invoke("plugins")
    data = invoke("plugins", "--json")

    assert (text.exit_code, data.exit_code) == (1, 1)  # still listed in full, but failing
    broken_line = next(line for line in text.stdout.splitlines() if line.startswith("broken"))
    assert broken_line.split()[1:4] == ["broken-plugin", "1.2.3", "FAILED:"]
    assert "promptdock_cli_test_no_such_module" in broken_line
    assert text.stderr.startswith("warning: plugin 'broken' from broken-plugin 1.2.3 failed")
    records = {record["name"]: record for record in json.loads(data.stdout)}
    assert records["jinja2"] == {
        "name": "jinja2",
        "distribution": None,
        "version": None,
        "hooks": ["render"],
        "builtin": True,
        "error": None,
    }
    assert records["broken"]["distribution"] == "broken-plugin"
    assert records["broken"]["version"] == "1.2.3"
    assert "No module named 'promptdock_cli_test_no_such_module'" in records["broken"]["error"]


# -- startup -------------------------------------------------------------------------------


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from promptdock.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['jinja2', 'ruamel.yaml', 'requests', 'jsonschema']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.splitlines()[-1] == "[]"
    assert "Usage: " in result.stdout
