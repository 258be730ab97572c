"""Loading a LiteLLM proxy ``config.yaml``: deployments, sources, env references, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from promptdock import ConfigError, PromptDock, SourceConfig
from promptdock.config import (
    REQUEST_PARAMS,
    Deployment,
    TeamKey,
    UnresolvedEnv,
    load_config,
    missing_env,
    unresolved_env,
)
from promptdock.prompt_file import KNOWN_PARAMS
from tests.support.seed import SEED_CONFIG


def _write(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    return "sk-test-secret-value"


def test_seed_config_deployment(tmp_path: Path, api_key: str) -> None:
    config = load_config(_write(tmp_path, SEED_CONFIG))

    assert config.deployments == (
        Deployment(
            model_name="my-dotprompt-model",
            model="dotprompt/gpt-4",
            prompt_id="hello",
            api_key=api_key,
            key="model_list[0]",
        ),
    )
    deployment = config.deployments[0]
    assert deployment.source == "dotprompt"
    assert deployment.prompt_version is None
    assert dict(deployment.params) == {}
    assert config.deployments_named("my-dotprompt-model") == (deployment,)
    assert config.deployments_named("other") == ()


def test_seed_config_sources_resolve_the_folder_against_the_config_file(
    tmp_path: Path, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(_write(tmp_path, SEED_CONFIG))

    assert config.sources() == {
        "dotprompt": SourceConfig("dotprompt", "filesystem", {"path": str(tmp_path / "prompts")}),
        "bitbucket": SourceConfig(
            "bitbucket",
            "bitbucket",
            {
                "workspace": "your-workspace",
                "repository": "your-repo",
                "access_token": "your-access-token",
                "branch": "main",
            },
        ),
    }
    assert config.master_key == "sk-1234"
    assert config.unused_keys == ()
    assert config.unresolved_env == ()
    assert config.unused_keys_warning() is None


def test_seed_config_line_numbers(tmp_path: Path, api_key: str) -> None:
    config = load_config(_write(tmp_path, SEED_CONFIG))

    assert config.line_of("model_list[0].litellm_params.prompt_id") == 5
    assert config.line_of("litellm_settings.global_prompt_directory") == 9
    assert config.line_of("general_settings.master_key") == 17
    # an unknown key falls back to its closest known parent
    assert config.line_of("model_list[0].litellm_params.nothing") == 3


def test_secrets_are_not_in_reprs(tmp_path: Path, api_key: str) -> None:
    config = load_config(_write(tmp_path, SEED_CONFIG))

    text = repr(config)
    assert api_key not in text
    assert "sk-1234" not in text
    assert "your-access-token" not in text
    assert "my-dotprompt-model" in text  # the repr still says something useful
    assert "api_key='***'" in repr(config.deployments[0])


def test_make_dock_serves_the_config_sources(tmp_path: Path, api_key: str) -> None:
    pytest.importorskip("promptdock_filesystem", reason="serving needs the filesystem plugin")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "hello.prompt").write_text("User: {{ user_message }}\n")
    config = load_config(_write(tmp_path, SEED_CONFIG))

    dock = config.make_dock(load_entrypoints=True)

    assert isinstance(dock, PromptDock)
    assert dock.source_names == ["bitbucket", "dotprompt"]
    rendered = dock.render("hello", {"user_message": "Hi"}, source="dotprompt")
    assert rendered.messages == [{"role": "user", "content": "Hi"}]


def test_params_versions_and_unused_keys(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            """\
model_list:
  - model_name: triage
    model_info: {id: 1}
    litellm_params:
      model: team-a/gpt-4o
      prompt_id: support/triage
      prompt_version: "2"
      api_base: http://127.0.0.1:9/v1
      temperature: 0.2
      max_tokens: 99
      timeout: 5
      rpm: 10
  - model_name: plain
    litellm_params:
      model: gpt-4o-mini
router_settings:
  routing_strategy: simple-shuffle
litellm_settings:
  drop_params: true
general_settings:
  database_url: postgres://x
sources:
  team-a:
    kind: filesystem
    path: team-a-prompts
""",
        )
    )

    triage, plain = config.deployments
    assert triage.prompt_version == 2
    assert triage.api_base == "http://127.0.0.1:9/v1"
    assert dict(triage.params) == {"temperature": 0.2, "max_tokens": 99, "timeout": 5}
    assert triage.source == "team-a"
    assert plain.source is None
    assert plain.prompt_id is None
    assert config.unused_keys == (
        "router_settings",
        "model_list[0].model_info",
        "model_list[0].litellm_params.rpm",
        "litellm_settings.drop_params",
        "general_settings.database_url",
    )
    warning = config.unused_keys_warning()
    assert warning is not None
    assert "router_settings" in warning
    assert "model_list[0].litellm_params.rpm" in warning
    assert config.sources()["team-a"] == SourceConfig(
        "team-a", "filesystem", {"path": str(tmp_path / "team-a-prompts")}
    )


def test_request_params_are_the_prompt_params_plus_caller_settings() -> None:
    # One list of OpenAI parameters for prompt files and deployments, so they cannot drift.
    assert KNOWN_PARAMS <= REQUEST_PARAMS
    only_callers = REQUEST_PARAMS - KNOWN_PARAMS
    assert only_callers == {"metadata", "stream_options", "extra_headers", "max_retries", "timeout"}


def test_every_prompt_parameter_is_a_deployment_parameter(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            "model_list:\n  - model_name: x\n    litellm_params:\n      model: gpt-4o\n"
            "      prompt_cache_key: k1\n      safety_identifier: s1\n",
        )
    )

    assert dict(config.deployments[0].params) == {
        "prompt_cache_key": "k1",
        "safety_identifier": "s1",
    }
    assert config.unused_keys == ()


def test_nested_secrets_of_deployment_params_are_not_in_reprs(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            "model_list:\n  - model_name: x\n    litellm_params:\n      model: gpt-4o\n"
            "      extra_headers: {Authorization: Bearer nested-secret-1, X-Trace: t-1}\n",
        )
    )

    shown = repr(config.deployments[0])
    assert "nested-secret-1" not in shown
    assert "'extra_headers': {'Authorization': '***', 'X-Trace': 't-1'}" in shown


def test_absolute_and_home_folders_are_kept(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            """\
litellm_settings:
  global_prompt_directory: ~/prompts
sources:
  abs: {kind: dotprompt, path: /srv/prompts}
""",
        )
    )

    sources = config.sources()
    assert sources["dotprompt"].options["path"] == os.path.expanduser("~/prompts")
    assert sources["abs"].options["path"] == "/srv/prompts"


def test_env_references_anywhere_are_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BB_TOKEN", "bb-secret")
    monkeypatch.setenv("MASTER", "sk-master")
    config = load_config(
        _write(
            tmp_path,
            """\
litellm_settings:
  global_bitbucket_config:
    workspace: acme
    repository: prompts
    access_token: os.environ/BB_TOKEN
general_settings:
  master_key: os.environ/MASTER
""",
        )
    )

    assert config.sources()["bitbucket"].options["access_token"] == "bb-secret"
    assert config.master_key == "sk-master"
    assert "bb-secret" not in repr(config)


def test_unset_env_variable_is_an_error_naming_variable_key_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = _write(tmp_path, SEED_CONFIG)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key == "model_list[0].litellm_params.api_key"
    assert str(caught.value) == (
        f"{path}:6: model_list[0].litellm_params.api_key: environment variable OPENAI_API_KEY "
        f"is not set. Export it before starting promptdock, or write the value in the config"
    )


def test_resolve_env_false_keeps_markers_and_reports_every_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("BB_TOKEN_UNSET", raising=False)
    monkeypatch.setenv("SET_ONE", "value")
    path = _write(
        tmp_path,
        SEED_CONFIG.replace('"your-access-token"', "os.environ/BB_TOKEN_UNSET").replace(
            "sk-1234", "os.environ/SET_ONE"
        ),
    )

    config = load_config(path, resolve_env=False)

    expected = [
        ("model_list[0].litellm_params.api_key", "OPENAI_API_KEY"),
        ("litellm_settings.global_bitbucket_config.access_token", "BB_TOKEN_UNSET"),
    ]
    assert list(config.unresolved_env) == expected
    assert missing_env(path) == expected
    assert config.master_key == "value"
    api_key = config.deployments[0].api_key
    assert isinstance(api_key, UnresolvedEnv)
    assert api_key == "os.environ/OPENAI_API_KEY"
    assert (api_key.var, api_key.key) == ("OPENAI_API_KEY", "model_list[0].litellm_params.api_key")
    markers = unresolved_env(config.sources()["bitbucket"].options)
    assert [(m.var, m.key) for m in markers] == [
        ("BB_TOKEN_UNSET", "litellm_settings.global_bitbucket_config.access_token")
    ]
    assert unresolved_env(config.sources()["dotprompt"].options) == []


def test_empty_env_reference_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "general_settings:\n  master_key: os.environ/\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, resolve_env=False)

    assert caught.value.key == "general_settings.master_key"
    assert str(caught.value) == (
        f"{path}:2: general_settings.master_key: 'os.environ/' names no variable: "
        f"write os.environ/NAME"
    )


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "model_list:\n  - model_name: x\n    litellm_params: [a\nb: 1\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}:4: invalid YAML: ")
    assert "while parsing a flow sequence" in message
    assert "Fix the syntax at that line" in message


def test_duplicate_key_names_the_key_but_not_the_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "general_settings:\n  master_key: sk-one\n  master_key: sk-two\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == (
        f"{path}:3: duplicate key 'master_key': a key may appear once per mapping; "
        f"remove or rename one of them"
    )


def test_non_mapping_model_list_entry(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "model_list:\n  - model_name: ok\n    litellm_params: {model: gpt-4}\n  - just-a-name\n",
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key == "model_list[1]"
    assert str(caught.value) == (
        f"{path}:4: model_list[1]: each model_list entry must be a mapping with model_name and "
        f"litellm_params, got a string"
    )


@pytest.mark.parametrize(
    ("text", "key", "line", "problem"),
    [
        ("model_list: {a: 1}\n", "model_list", 1, "must be a list of deployments, got a mapping"),
        (
            "model_list:\n  - litellm_params: {model: gpt-4}\n",
            "model_list[0].model_name",
            2,
            "must be a non-empty string, got nothing",
        ),
        (
            "model_list:\n  - model_name: x\n",
            "model_list[0].litellm_params",
            2,
            "is missing: add litellm_params with at least 'model'",
        ),
        (
            "model_list:\n  - model_name: x\n    litellm_params:\n      model: 4\n",
            "model_list[0].litellm_params.model",
            4,
            "must be a non-empty string, got a number",
        ),
        (
            "model_list:\n  - model_name: x\n    litellm_params:\n      model: a/b\n"
            "      prompt_version: v2\n",
            "model_list[0].litellm_params.prompt_version",
            5,
            "must be a version number N (for <prompt_id>.vN.prompt)",
        ),
        (
            "litellm_settings: [1]\n",
            "litellm_settings",
            1,
            "must be a mapping of settings, got a list",
        ),
        (
            "litellm_settings:\n  global_bitbucket_config: token\n",
            "litellm_settings.global_bitbucket_config",
            2,
            "must be a mapping of options, got a string",
        ),
        (
            "sources:\n  team-a: {path: x}\n",
            "sources.team-a.kind",
            2,
            "must be a non-empty string, got nothing",
        ),
    ],
)
def test_wrong_types_name_key_and_line(
    tmp_path: Path, text: str, key: str, line: int, problem: str
) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key == key
    assert str(caught.value) == f"{path}:{line}: {key}: {problem}"


def test_wrong_type_message_does_not_echo_a_secret(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "model_list:\n  - model_name: x\n    litellm_params:\n      model: a/b\n"
        "      api_key: [sk-very-secret]\n",
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert "sk-very-secret" not in str(caught.value)
    assert caught.value.key == "model_list[0].litellm_params.api_key"


def test_source_defined_twice(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "litellm_settings:\n  global_prompt_directory: p\n"
        "sources:\n  dotprompt: {kind: filesystem}\n",
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == (
        f"{path}:4: sources.dotprompt: source 'dotprompt' is also defined by "
        f"litellm_settings.global_prompt_directory (line 2): rename one of them"
    )


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, "- a\n- b\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == (
        f"{path}:1: the config must be a mapping with keys such as model_list and "
        f"litellm_settings, got a list"
    )


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "# nothing yet\n"))

    assert config.deployments == ()
    assert config.sources() == {}
    assert config.master_key is None


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == f"config file {path} not found: pass the path of your config.yaml"


def test_anchors_and_merge_keys_are_understood(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            """\
common: &common
  model: dotprompt/gpt-4
  temperature: 0.1
model_list:
  - model_name: a
    litellm_params:
      <<: *common
      prompt_id: a
""",
        )
    )

    (deployment,) = config.deployments
    assert deployment.model == "dotprompt/gpt-4"
    assert dict(deployment.params) == {"temperature": 0.1}
    assert config.unused_keys == ("common",)
    assert (
        config.line_of("model_list[0].litellm_params.model") == 6
    )  # merged keys: their mapping's line


# -- proxy settings: team keys, webhook secret, limits ---------------------------------------

TEAM_CONFIG = """\
model_list:
  - model_name: triage
    litellm_params: {model: team-a/gpt-4o, prompt_id: support/triage}
  - model_name: support-chat
    litellm_params: {model: openai/gpt-4o-mini}
  - model_name: triage
    litellm_params: {model: team-b/gpt-4o, prompt_id: support/triage}
litellm_settings:
  request_timeout: 30
general_settings:
  master_key: os.environ/PROXY_MASTER
  bitbucket_webhook_secret: os.environ/PROXY_HOOK_SECRET
  max_request_size_mb: 0.5
keys:
  - key: os.environ/PROXY_TEAM_A
    team: a
    models: [triage, "support-*"]
    prompts: ["support/*"]
    key_alias: for-humans
  - key: team-b-key-literal
"""


@pytest.fixture
def team_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_MASTER", "sk-master-0123456789")
    monkeypatch.setenv("PROXY_HOOK_SECRET", "hook-secret-0123456789")
    monkeypatch.setenv("PROXY_TEAM_A", "sk-team-a-0123456789")


def test_team_keys_webhook_secret_and_limits(tmp_path: Path, team_env: None) -> None:
    config = load_config(_write(tmp_path, TEAM_CONFIG))

    assert config.team_keys == (
        TeamKey(
            "sk-team-a-0123456789",
            "a",
            models=("triage", "support-*"),
            prompts=("support/*",),
            path="keys[0]",
        ),
        TeamKey("team-b-key-literal", "keys[1]", path="keys[1]"),
    )
    assert config.webhook_secret == "hook-secret-0123456789"
    assert config.request_timeout == 30.0
    assert config.max_request_size_mb == 0.5
    assert config.unused_keys == ("keys[0].key_alias",)
    assert config.line_of("keys[0].prompts") == 18


def test_secrets_of_keys_and_webhook_are_not_in_reprs(tmp_path: Path, team_env: None) -> None:
    config = load_config(_write(tmp_path, TEAM_CONFIG))

    text = repr(config)
    for secret in ("sk-master-0123456789", "hook-secret-0123456789", "sk-team-a-0123456789"):
        assert secret not in text
    assert "team='a'" in text


def test_deployment_index_groups_model_names_in_file_order(tmp_path: Path, team_env: None) -> None:
    config = load_config(_write(tmp_path, TEAM_CONFIG))

    assert config.model_names == ("triage", "support-chat")
    triage = config.deployments_named("triage")
    assert [d.model for d in triage] == ["team-a/gpt-4o", "team-b/gpt-4o"]
    assert config.deployment_index["support-chat"] == (config.deployments[1],)
    assert config.deployments_named("nothing") == ()


@pytest.mark.parametrize(
    ("keys", "key", "line", "problem"),
    [
        ("keys: {key: x}\n", "keys", 3, "must be a list of {key: ..., team: ..., models: [...]}"),
        ("keys:\n  - team: a\n", "keys[0].key", 4, "must be a non-empty string, got nothing"),
        (
            "keys:\n  - key: sk-one-0123456789\n  - key: sk-one-0123456789\n",
            "keys[1].key",
            5,
            "is the same key as keys[0].key: give every team its own key",
        ),
        (
            "keys:\n  - key: sk-master-0123456789\n",
            "keys[0].key",
            4,
            "is the same key as general_settings.master_key: give every team its own key",
        ),
        (
            "keys:\n  - key: k-0123456789\n    models: []\n",
            "keys[0].models",
            5,
            "is empty: list at least one model, or leave the key out to allow every model",
        ),
        (
            "keys:\n  - key: k-0123456789\n    models: [plain, trige]\n",
            "keys[0].models[1]",
            5,
            "no model_list entry is named 'trige' (model_name values: plain); fix the name "
            "or use a glob such as 'support-*'",
        ),
        (
            "keys:\n  - key: k-0123456789\n    prompts: {a: 1}\n",
            "keys[0].prompts",
            5,
            "must be a list of prompt id names or globs, got a mapping",
        ),
    ],
)
def test_team_key_errors_name_key_and_line(
    tmp_path: Path, keys: str, key: str, line: int, problem: str
) -> None:
    text = (
        "general_settings: {master_key: sk-master-0123456789}\n"
        "model_list: [{model_name: plain, litellm_params: {model: gpt-4o}}]\n" + keys
    )
    path = _write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key == key
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: {problem}")
    assert "sk-one-0123456789" not in message
    assert "sk-master-0123456789" not in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("litellm_settings: {request_timeout: 0}\n", "litellm_settings.request_timeout"),
        ("litellm_settings: {request_timeout: soon}\n", "litellm_settings.request_timeout"),
        (
            "general_settings: {max_request_size_mb: -1}\n",
            "general_settings.max_request_size_mb",
        ),
    ],
)
def test_limits_must_be_positive_numbers(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.key == key
    assert str(caught.value).startswith(f"{path}:1: {key}: must be a positive number, got a ")


def test_limits_given_as_strings_are_numbers(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "litellm_settings: {request_timeout: '2.5'}\n"))

    assert config.request_timeout == 2.5
    assert config.max_request_size_mb is None
    assert config.team_keys == ()
    assert config.webhook_secret is None


def test_hostile_yaml_is_a_config_error(tmp_path: Path) -> None:
    laughs = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    laughs += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 7)]
    cases = {
        "model_list: " + "[" * 400 + "]" * 400 + "\n": "nested too deeply",
        "&a x: &a y\n": "the anchor &a is defined twice",
        "litellm_settings:\n  x: 1\n" + "\n".join(laughs) + "\n": "alias bomb",
        "litellm_settings:\n  x: " + "[" * 70 + "]" * 70 + "\n": "nested more than 64 levels",
    }
    for text, message in cases.items():
        path = tmp_path / "config.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
