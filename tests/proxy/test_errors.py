"""Every error status the proxy answers, in OpenAI's shape, with messages that help and leak
nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from promptdock import (
    ConfigError,
    DispatchError,
    InputValidationError,
    PluginLoadError,
    PromptdockError,
    PromptFile,
    PromptNotFoundError,
    PromptSyntaxError,
    RenderError,
    SourceAuthError,
    SourceConfig,
    SourceKind,
    SourceUnavailableError,
    UnsafePromptIdError,
    UpstreamTimeoutError,
    hookimpl,
)
from promptdock.proxy.errors import Redactor, api_error
from tests.proxy.conftest import (
    CONFIG,
    MASTER_KEY,
    SECRETS,
    TEAM_KEY,
    RunningProxy,
    ServeConfig,
    config_text,
)
from tests.support.openai_server import OpenAIServer

HELLO_BODY = {"model": "my-dotprompt-model", "prompt_variables": {"user_message": "hi"}}


def assert_error(
    response: requests.Response,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """The response is ``status`` with an OpenAI error whose message contains ``message``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"]
    if code is not None:
        assert error["code"] == code
    assert error["param"] == param
    if kind is not None:
        assert error["type"] == kind
    for secret in SECRETS:
        assert secret not in response.text
    return dict(error)


# -- 400 ---------------------------------------------------------------------------------


def test_missing_variable_is_400_naming_it(proxy: RunningProxy) -> None:
    response = proxy.chat({"model": "my-dotprompt-model", "messages": []})

    assert_error(
        response,
        400,
        "prompt 'hello': variable 'user_message' is required (expected string)",
        code="invalid_prompt_variables",
        param="prompt_variables.user_message",
        kind="invalid_request_error",
    )


def test_wrong_variable_type_is_400_naming_it(proxy: RunningProxy) -> None:
    response = proxy.chat({"model": "my-dotprompt-model", "prompt_variables": {"user_message": 3}})

    assert_error(
        response,
        400,
        "variable 'user_message' must be string",
        param="prompt_variables.user_message",
    )


@pytest.mark.parametrize(
    ("body", "message", "param", "code"),
    [
        (b"{not json", "the request body is not valid JSON", None, "invalid_json"),
        (b"[1, 2]", "the request body must be a JSON object", None, "invalid_json"),
        (b'{"messages": []}', "'model' is required", "model", "invalid_value"),
        (
            b'{"model": "my-dotprompt-model", "prompt_variables": [1]}',
            "'prompt_variables' must be a JSON object",
            "prompt_variables",
            "invalid_value",
        ),
        (
            b'{"model": "my-dotprompt-model", "stream": "yes"}',
            "'stream' must be true or false",
            "stream",
            "invalid_value",
        ),
        (
            b'{"model": "gpt-4o-plain", "messages": [{"role": "user"}], '
            b'"api_base": "http://evil.example/v1"}',
            "'api_base' may not be set in the request",
            "api_base",
            "param_not_allowed",
        ),
        (
            b'{"model": "gpt-4o-plain", "prompt_id": "hello"}',
            "model 'gpt-4o-plain' passes messages straight to 'gpt-4o'",
            "prompt_id",
            "invalid_value",
        ),
        (
            b'{"model": "gpt-4o-plain"}',
            "send 'messages', a non-empty list",
            "messages",
            "invalid_value",
        ),
        (
            b'{"model": "any-prompt"}',
            "model 'any-prompt' renders prompts of source 'dotprompt' but names no prompt",
            "prompt_id",
            "invalid_value",
        ),
        (
            b'{"model": "any-prompt", "prompt_id": "../secrets"}',
            "'../secrets'",
            "prompt_id",
            "invalid_prompt_id",
        ),
    ],
)
def test_bad_requests_are_400(
    proxy: RunningProxy, body: bytes, message: str, param: str | None, code: str
) -> None:
    response = proxy.request("POST", "/v1/chat/completions", data=body)

    assert_error(response, 400, message, param=param, code=code)


# -- 401 / 403 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message", "code"),
    [
        ({}, "no API key: send your promptdock key as 'Authorization: Bearer <key>'", None),
        ({"Authorization": "Bearer sk-wrong-key-0000"}, "invalid API key", "invalid_api_key"),
        ({"Authorization": f"Basic {MASTER_KEY}"}, "must be 'Bearer <key>'", "invalid_api_key"),
        ({"x-api-key": "sk-wrong-key-0000"}, "invalid API key", "invalid_api_key"),
    ],
)
def test_missing_or_bad_key_is_401(
    proxy: RunningProxy, headers: dict[str, str], message: str, code: str | None
) -> None:
    response = proxy.chat(HELLO_BODY, key=None, headers=headers)

    error = assert_error(response, 401, message, kind="authentication_error")
    assert code is None or error["code"] == code
    assert "sk-wrong-key-0000" not in response.text


def test_x_api_key_header_is_accepted(proxy: RunningProxy) -> None:
    response = proxy.chat(HELLO_BODY, key=None, headers={"x-api-key": MASTER_KEY})

    assert response.status_code == 200


def test_team_key_outside_its_models_is_403(proxy: RunningProxy) -> None:
    response = proxy.chat(HELLO_BODY, key=TEAM_KEY)

    assert_error(
        response,
        403,
        "the key of team 'a' may not use model 'my-dotprompt-model'",
        param="model",
        code="model_not_allowed",
        kind="permission_error",
    )


def test_team_key_outside_its_prompts_is_403(proxy: RunningProxy) -> None:
    body = {"model": "any-prompt", "prompt_id": "billing/refund", "prompt_variables": {}}

    response = proxy.chat(body, key=TEAM_KEY)

    assert_error(
        response,
        403,
        "the key of team 'a' may not use prompt 'billing/refund'; its prompts: support/*",
        param="prompt_id",
        code="prompt_not_allowed",
    )


def test_team_key_within_its_models_and_prompts_is_served(proxy: RunningProxy) -> None:
    client = openai.OpenAI(base_url=proxy.base_url, api_key=TEAM_KEY, max_retries=0)

    completion = client.chat.completions.create(
        model="any-prompt",
        messages=[{"role": "user", "content": "-"}],
        extra_body={"prompt_id": "support/triage", "prompt_variables": {"ticket": "late"}},
    )

    assert completion.choices[0].message.content == "echo: late"


# -- 404 / 405 ---------------------------------------------------------------------------


def test_unknown_model_is_404_listing_the_models_the_key_may_use(proxy: RunningProxy) -> None:
    body = {"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}

    master = proxy.chat(body)
    team = proxy.chat(body, key=TEAM_KEY)

    assert_error(
        master,
        404,
        "model 'gpt-5' is not served by this proxy; its models: my-dotprompt-model, "
        "support-bot, any-prompt, gpt-4o-plain",
        param="model",
        code="model_not_found",
        kind="not_found_error",
    )
    assert_error(team, 404, "its models: support-bot, any-prompt (", param="model")


def test_unknown_prompt_is_404_with_suggestions(proxy: RunningProxy) -> None:
    response = proxy.chat({"model": "any-prompt", "prompt_id": "helo"})

    error = assert_error(response, 404, "'helo'", param="prompt_id", code="prompt_not_found")
    assert "hello" in error["message"]


def test_unknown_endpoint_is_404_and_wrong_method_405(proxy: RunningProxy) -> None:
    missing = proxy.request("GET", "/v1/embeddings")
    wrong = proxy.request("GET", "/v1/chat/completions")

    assert_error(missing, 404, "no endpoint /v1/embeddings", code="unknown_endpoint")
    assert_error(wrong, 405, "/v1/chat/completions accepts POST, not GET")
    assert wrong.headers["allow"] == "POST"


# -- 413 ---------------------------------------------------------------------------------

SMALL_LIMIT = CONFIG.replace(
    "general_settings:\n", "general_settings:\n  max_request_size_mb: 0.001\n"
)


def test_body_over_the_limit_is_413(serve_config: ServeConfig, upstream: OpenAIServer) -> None:
    proxy = serve_config(config_text(upstream, SMALL_LIMIT))
    body = {**HELLO_BODY, "prompt_variables": {"user_message": "x" * 2000}}

    announced = proxy.chat(body)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b'{"model": "my-dotprompt-model", "user": "'
        for _ in range(20):
            yield b"y" * 100
        yield b'"}'

    streamed = proxy.request("POST", "/v1/chat/completions", data=chunks())  # type: ignore[arg-type]

    for response in (announced, streamed):
        assert_error(
            response,
            413,
            "the request body is larger than the proxy accepts (1048 bytes); send less, or "
            "raise general_settings.max_request_size_mb",
            code="request_too_large",
        )
        assert response.headers["connection"] == "close"
    assert upstream.requests == []


# -- upstream failures: 502, 504, passed-through 4xx ------------------------------------


def test_upstream_server_error_after_retries_is_502(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    upstream.enqueue(status=500, headers={"Retry-After": "0"}, times=3)

    response = proxy.chat(HELLO_BODY)

    assert_error(
        response,
        502,
        "answered HTTP 500 for model 'gpt-4' (prompt 'hello' from hello.prompt) (after 3 "
        "attempts): scripted error 500",
        code="upstream_error",
        kind="upstream_error",
    )
    assert len(upstream.requests) == 3


def test_upstream_client_error_is_passed_through(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    upstream.enqueue(status=400, body={"error": {"message": "context too long", "type": "invalid"}})

    response = proxy.chat(HELLO_BODY)

    assert_error(response, 400, "context too long", code="upstream_rejected")


def test_upstream_rate_limit_is_passed_through_as_429(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    upstream.enqueue(status=429, headers={"Retry-After": "0"}, times=3)

    response = proxy.chat(HELLO_BODY)

    assert_error(response, 429, "rate limiting", kind="rate_limit_error")


def test_upstream_refusing_the_proxys_key_is_502_not_401(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    upstream.enqueue(status=401, body={"error": {"message": "Incorrect API key provided"}})

    response = proxy.chat(HELLO_BODY)

    assert_error(response, 502, "answered HTTP 401", code="upstream_error")


def test_unreachable_upstream_is_502(serve_config: ServeConfig) -> None:
    with OpenAIServer() as gone:
        closed = gone.base_url  # a port nobody listens on once it is closed
    proxy = serve_config(config_text(closed))

    response = proxy.chat(HELLO_BODY)

    assert_error(response, 502, f"cannot reach the model server at {closed}")


def test_slow_upstream_is_504(serve_config: ServeConfig, upstream: OpenAIServer) -> None:
    fast_timeout = CONFIG.replace("request_timeout: 5", "request_timeout: 0.3")
    proxy = serve_config(config_text(upstream, fast_timeout))
    upstream.enqueue(delay=1.5)

    response = proxy.chat(HELLO_BODY)

    assert_error(
        response,
        504,
        "did not answer model 'gpt-4' (prompt 'hello' from hello.prompt) within 0.3 s",
        code="upstream_timeout",
        kind="timeout_error",
    )


def test_stream_broken_after_the_first_event_ends_with_an_error_event(
    proxy: RunningProxy, upstream: OpenAIServer
) -> None:
    upstream.enqueue(truncate=True)
    client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER_KEY, max_retries=0)

    stream = client.chat.completions.create(
        model="gpt-4o-plain",
        messages=[{"role": "user", "content": "one two three four five six"}],
        stream=True,
    )
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass

    assert "broke" in str(caught.value) or "ended before the answer was complete" in str(
        caught.value
    )


# -- 500 and 503: the proxy's own prompts and sources ------------------------------------


def test_broken_prompt_file_is_500_naming_file_and_line(
    proxy: RunningProxy, prompts_folder: Path
) -> None:
    (prompts_folder / "broken.prompt").write_text("---\nmodel: [gpt-4\n---\nHi\n")

    response = proxy.chat({"model": "any-prompt", "prompt_id": "broken"})

    error = assert_error(response, 500, "broken.prompt:2", code="prompt_syntax_error")
    assert error["type"] == "server_error"


def test_prompt_deployment_without_a_source_is_500_naming_the_config_line(
    serve_config: ServeConfig, upstream: OpenAIServer
) -> None:
    text = config_text(upstream) + (
        "  - key: sk-unused-0123456789\n"  # keeps keys valid; the deployment is the problem
    )
    text = text.replace(
        "model_list:\n",
        "model_list:\n  - model_name: orphan\n    litellm_params: {model: nowhere/gpt-4, "
        "prompt_id: hello}\n",
    )
    proxy = serve_config(text)

    response = proxy.chat({"model": "orphan", "messages": [{"role": "user", "content": "x"}]})

    assert_error(
        response,
        500,
        "config.yaml:3: model_list[0].litellm_params.model: model 'nowhere/gpt-4' of 'orphan' "
        "names no prompt source, yet prompt_id is set",
        code="config_error",
    )
    assert any("names no prompt source" in w for w in proxy.app.warnings)


class FailingSource:
    """Kind ``failing``: every load raises the error its ``error`` option names."""

    @hookimpl
    def source_kinds(self) -> list[SourceKind]:
        return [SourceKind("failing")]

    @hookimpl
    def load_prompt(
        self, source: SourceConfig, prompt_id: str, version: int | None
    ) -> PromptFile | None:
        if source.kind != "failing":
            return None
        token = source.options["access_token"]
        if source.options["error"] == "auth":
            # A careless plugin quoting its token: the proxy must still not show it.
            raise SourceAuthError(f"the repository refused token {token} (HTTP 401)")
        raise SourceUnavailableError(
            f"source {source.name!r} is unreachable and has no cached copy of {prompt_id!r}"
        )


FAILING = f"""\
model_list:
  - model_name: down
    litellm_params: {{model: down/gpt-4o, prompt_id: hello}}
  - model_name: locked
    litellm_params: {{model: locked/gpt-4o, prompt_id: hello}}
sources:
  down: {{kind: failing, error: unavailable, access_token: tok-down-0123456789}}
  locked: {{kind: failing, error: auth, access_token: tok-locked-0123456789}}
general_settings:
  master_key: {MASTER_KEY}
"""


def test_unavailable_or_refused_source_is_503(
    serve_config: ServeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = serve_config(FAILING, plugins=[("failing", FailingSource())])

    with caplog.at_level(logging.DEBUG):
        down = proxy.chat({"model": "down"})
        locked = proxy.chat({"model": "locked"})

    assert_error(
        down,
        503,
        "source 'down' is unreachable and has no cached copy of 'hello'",
        code="source_unavailable",
        kind="service_unavailable_error",
    )
    assert_error(
        locked, 503, "the repository refused token *** (HTTP 401)", code="source_auth_failed"
    )
    assert "tok-locked-0123456789" not in caplog.text


def test_no_secret_in_any_answer_or_log_line(
    proxy: RunningProxy, upstream: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    # An upstream that echoes the key it was sent, as some gateways do in their errors.
    from tests.proxy.conftest import UPSTREAM_KEY

    upstream.enqueue(status=400, body={"error": {"message": f"bad key {UPSTREAM_KEY} here"}})
    with caplog.at_level(logging.DEBUG):
        answers = [
            proxy.chat(HELLO_BODY),
            proxy.chat(HELLO_BODY, key="sk-guess-0000000"),
            proxy.chat(HELLO_BODY, key=TEAM_KEY),
            proxy.request("GET", "/v1/models"),
            proxy.request("GET", "/v1/prompts"),
            proxy.request("GET", "/health/readiness", key=None),
        ]

    assert [a.status_code for a in answers] == [400, 401, 403, 200, 200, 200]
    assert "bad key *** here" in answers[0].json()["error"]["message"]
    text = caplog.text + "".join(a.text for a in answers)
    for secret in SECRETS:
        assert secret not in text


# -- the mapping itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code", "param"),
    [
        (UnsafePromptIdError("bad id", prompt_id="../x"), 400, "invalid_prompt_id", "prompt_id"),
        (PromptNotFoundError("none", prompt_id="x"), 404, "prompt_not_found", "prompt_id"),
        (
            InputValidationError("bad", prompt_id="p", field="user.name"),
            400,
            "invalid_prompt_variables",
            "prompt_variables.user.name",
        ),
        (
            InputValidationError("bad", prompt_id="p", field=None),
            400,
            "invalid_prompt_variables",
            "prompt_variables",
        ),
        (RenderError("undefined"), 400, "render_error", "prompt_variables"),
        (PromptSyntaxError("broken", path="x.prompt", line=2), 500, "prompt_syntax_error", None),
        (SourceAuthError("refused"), 503, "source_auth_failed", None),
        (SourceUnavailableError("down"), 503, "source_unavailable", None),
        (UpstreamTimeoutError("slow"), 504, "upstream_timeout", None),
        (DispatchError("refused", status_code=422), 422, "upstream_rejected", None),
        (DispatchError("no key", status_code=403), 502, "upstream_error", None),
        (DispatchError("failed", status_code=503), 502, "upstream_error", None),
        (DispatchError("unreachable"), 502, "upstream_error", None),
        (ConfigError("bad config"), 500, "config_error", None),
        (PluginLoadError("broken", plugin="p"), 500, "config_error", None),
        (PromptdockError("other"), 500, "internal_error", None),
    ],
)
def test_promptdock_errors_map_to_statuses(
    error: PromptdockError, status: int, code: str, param: str | None
) -> None:
    answer = api_error(error, Redactor([]))

    assert (answer.status, answer.code, answer.param) == (status, code, param)
    assert answer.message == str(error)


def test_redactor_replaces_longest_secrets_first() -> None:
    redact = Redactor(["sk-abc-123456", "sk-abc-123456-long", "secret", None])

    assert redact("a sk-abc-123456-long b sk-abc-123456 c secret") == "a *** b *** c ***"
    assert Redactor(["x"])("x marks") == "x marks"  # too short to be a secret worth hiding
