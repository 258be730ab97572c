"""The app's start-up, its factory for worker processes, and the server's settings."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptdock import ConfigError
from promptdock.config import load_config
from promptdock.proxy.access_log import FLUSH_SECONDS, AccessLineHandler, AccessLog
from promptdock.proxy.app import ProxyApp
from promptdock.proxy.asgi import Exchange
from promptdock.proxy.server import CONFIG_ENV, FORMAT_ENV, build_app, create_app, log_config
from tests.proxy.conftest import CONFIG, RunningProxy, ServeConfig, config_text, write_prompts
from tests.support.openai_server import OpenAIServer


def test_building_the_app_reads_no_prompt(tmp_path: Path, upstream: OpenAIServer) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config_text(upstream))  # its prompt folder does not even exist

    app = ProxyApp(load_config(path))

    assert app.warnings == []
    assert list(app.routes.routes) == [
        "my-dotprompt-model",
        "support-bot",
        "any-prompt",
        "gpt-4o-plain",
    ]
    plain = app.routes.routes["gpt-4o-plain"].targets[0]
    assert (plain.source, plain.model, plain.inline) == (None, "gpt-4o", True)
    hello = app.routes.routes["my-dotprompt-model"].targets[0]
    assert (hello.source, hello.model, hello.inline) == ("dotprompt", "dotprompt/gpt-4", True)
    assert hello.options["timeout"] == 5.0  # litellm_settings.request_timeout


def test_warm_loads_the_local_deployment_prompts(
    tmp_path: Path, upstream: OpenAIServer, prompts_folder: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config_text(upstream))
    (prompts_folder / "hello.prompt").unlink()  # a broken deployment is left to requests

    assert ProxyApp(load_config(path)).warm() == ["support/triage"]


def test_warming_starts_with_the_first_request(proxy: RunningProxy) -> None:
    before = proxy.app._warming

    proxy.request("GET", "/health/liveliness", key=None)

    assert before is None
    warming = proxy.app._warming
    assert warming is not None
    deadline = time.monotonic() + 10
    while not warming.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert warming.result() == ["hello", "support/triage"]


def test_several_deployments_of_one_model_take_turns(
    serve_config: ServeConfig, upstream: OpenAIServer
) -> None:
    twice = CONFIG.replace(
        "  - model_name: support-bot\n",
        "  - model_name: gpt-4o-plain\n    litellm_params:\n      model: gpt-4o-mini\n"
        "      api_key: {upstream_key}\n      api_base: {upstream}\n"
        "  - model_name: support-bot\n",
    )
    proxy = serve_config(config_text(upstream, twice))

    for _ in range(4):
        proxy.chat({"model": "gpt-4o-plain", "messages": [{"role": "user", "content": "x"}]})

    assert [r.body["model"] for r in upstream.requests] == [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o",
    ]


def test_worker_factory_reads_the_environment(
    tmp_path: Path, upstream: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_prompts(tmp_path / "prompts")
    path = tmp_path / "config.yaml"
    path.write_text(config_text(upstream))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv(FORMAT_ENV, "json")

    app = create_app()

    assert app.config.path == str(path)
    assert app.access_log.format == "json"


def test_worker_factory_without_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    with pytest.raises(ConfigError) as caught:
        create_app()

    assert str(caught.value) == (
        "PROMPTDOCK_PROXY_CONFIG is not set: start the proxy with 'promptdock serve --config FILE'"
    )


def test_missing_extra_is_a_clear_error(
    tmp_path: Path, upstream: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config_text(upstream))
    monkeypatch.setitem(sys.modules, "httptools", None)  # as if it were not installed

    with pytest.raises(ConfigError) as caught:
        build_app(load_config(path))

    assert str(caught.value) == (
        "the proxy needs the [proxy] extra (httptools is missing): pip install 'promptdock[proxy]'"
    )


def test_log_config_sends_access_lines_to_stdout() -> None:
    config = log_config("warning")

    access = config["loggers"]["promptdock.proxy.access"]
    assert access["handlers"] == ["stdout"]
    assert access["level"] == "WARNING"
    assert config["handlers"]["stdout"]["stream"] == "ext://sys.stdout"
    assert log_config("debug")["loggers"]["promptdock.proxy.access"]["level"] == "INFO"


def _exchange(**fields: object) -> Exchange:
    scope = {"method": "POST", "path": "/v1/chat/completions", "client": ("127.0.0.1", 5000)}
    exchange = Exchange(scope, None, None, time.perf_counter())  # type: ignore[arg-type]
    for name, value in fields.items():
        setattr(exchange, name, value)
    return exchange


def test_access_line_quotes_what_needs_quotes(caplog: pytest.LogCaptureFixture) -> None:
    exchange = _exchange(status=200, model='my "model" = x', prompt_id="support/triage")

    with caplog.at_level(logging.INFO, logger="promptdock.proxy.access"):
        AccessLog().record(exchange)

    (record,) = caplog.records
    line = record.getMessage()
    assert line.startswith(
        'method=POST path=/v1/chat/completions status=200 model="my \\"model\\" = x" team=- '
        "prompt_id=support/triage version=- source=- sha=- stream=false client=127.0.0.1:5000 "
        "latency_ms="
    )


def test_access_line_values_are_written_the_same_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    long = "x y " * 100  # longer than the values the log remembers
    models = ['my "model"', 'my "model"', long, long, "plain", "plain"]

    with caplog.at_level(logging.INFO, logger="promptdock.proxy.access"):
        for model in models:
            AccessLog().record(_exchange(status=200, model=model))

    written = [
        record.getMessage().partition(" model=")[2].partition(" team=")[0]
        for record in caplog.records
    ]
    assert written == [*['"my \\"model\\""'] * 2, *[json.dumps(long)] * 2, "plain", "plain"]


def test_access_line_as_json(caplog: pytest.LogCaptureFixture) -> None:
    exchange = _exchange(status=503, model="m", team="a", stream=True)

    with caplog.at_level(logging.INFO, logger="promptdock.proxy.access"):
        AccessLog("json").record(exchange)

    (record,) = caplog.records
    fields = json.loads(record.getMessage())
    assert fields == {**record.access, "latency_ms": fields["latency_ms"]}  # type: ignore[attr-defined]
    assert (fields["status"], fields["team"], fields["stream"]) == (503, "a", True)


def test_access_log_costs_nothing_when_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="promptdock.proxy.access"):
        AccessLog().record(_exchange(status=200))

    assert caplog.records == []


class _Stream(io.StringIO):
    """A text stream that counts its flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


@pytest.fixture
def line_logger() -> Iterator[tuple[logging.Logger, _Stream]]:
    """A fresh logger whose only handler is an AccessLineHandler, as ``serve`` sets it up."""
    stream = _Stream()
    logger = logging.getLogger(f"promptdock.test.access.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = AccessLineHandler(stream)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_access_lines_are_batched_inside_an_event_loop(
    line_logger: tuple[logging.Logger, _Stream],
) -> None:
    logger, stream = line_logger
    log = AccessLog(logger=logger)

    async def serve_three() -> tuple[str, str]:
        for status in (200, 404, 500):
            log.record(_exchange(status=status))
        before = stream.getvalue()
        await asyncio.sleep(FLUSH_SECONDS * 3)
        return before, stream.getvalue()

    before, after = asyncio.run(serve_three())

    assert before == ""  # held for one write...
    lines = after.splitlines()
    assert [line.split()[2] for line in lines] == ["status=200", "status=404", "status=500"]
    assert after.endswith("\n")
    assert stream.flushes == 1  # ...of all three


def test_access_lines_outside_a_loop_and_at_shutdown_are_written_at_once(
    line_logger: tuple[logging.Logger, _Stream],
) -> None:
    logger, stream = line_logger
    log = AccessLog(logger=logger)

    log.record(_exchange(status=201))
    assert "status=201" in stream.getvalue()

    async def record_then_flush() -> str:
        log.record(_exchange(status=202))
        log.flush()  # what the app's shutdown does
        return stream.getvalue()

    assert "status=202" in asyncio.run(record_then_flush())


def test_an_added_handler_sees_records_with_their_fields(
    line_logger: tuple[logging.Logger, _Stream],
) -> None:
    logger, stream = line_logger
    seen: list[logging.LogRecord] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Recorder()
    logger.addHandler(extra)
    try:
        AccessLog(logger=logger).record(_exchange(status=200, model="m"))
    finally:
        logger.removeHandler(extra)

    (record,) = seen
    assert record.access["model"] == "m"  # type: ignore[attr-defined]
    assert "model=m" in stream.getvalue()  # the line handler still wrote it, via logging


def test_readiness_of_a_kind_whose_plugin_reports_nothing(serve_config: ServeConfig) -> None:
    from tests.proxy.test_errors import FAILING, FailingSource

    proxy = serve_config(FAILING, plugins=[("failing", FailingSource())])

    report = proxy.request("GET", "/health/readiness", key=None).json()

    assert report["status"] == "unknown"
    assert report["sources"]["down"] == {"kind": "failing", "ready": None, "state": "unknown"}
