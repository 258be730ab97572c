"""What both OpenAI-compatible dispatchers share: calls, messages, retry policy, SSE lines.

The transports are tested end to end against a real server (``test_dispatch_openai.py``,
``tests/proxy/test_dispatch_async.py``); these tests pin the shared pieces directly,
including the messages no local server can provoke (TLS failures, unusable URLs).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from promptdock.dispatch._openai_wire import (
    DONE,
    Call,
    EventLines,
    Failure,
    compact_json,
    is_final,
    object_decoder,
    tries,
    upstream_body,
)
from promptdock.errors import DispatchError, UpstreamTimeoutError
from promptdock.models import CompletionRequest, Provenance
from promptdock.response import ModelResponse, ObjectDict

KEY = "sk-wire-test-0d1e2f3a"
BASE = "http://127.0.0.1:9/v1"


def _call(**overrides: object) -> Call:
    fields: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "api_base": BASE,
        "api_key": KEY,
        "timeout": 30,
        **overrides,
    }
    return Call.build(CompletionRequest(**fields))  # type: ignore[arg-type]


# -- building ------------------------------------------------------------------------------


def test_build_resolves_url_headers_body_and_timeouts() -> None:
    prov = Provenance(source="dotprompt", kind="filesystem", prompt_id="hi", path="hi.prompt")
    call = _call(stream=True, extra_headers={"X-Api-Key": "header-secret-1"}, provenance=prov)

    assert call.url == f"{BASE}/chat/completions"
    assert call.what == "model 'gpt-4o-mini' (prompt 'hi' from hi.prompt)"
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    assert call.headers["Accept"] == "text/event-stream"
    assert call.data == (
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}'
    )
    assert call.timeout == (10.0, 30.0)
    assert call.secrets == (KEY, "header-secret-1")
    assert KEY not in repr(call)


def test_build_sets_every_field_as_the_constructor_would() -> None:
    call = _call(max_retries=-1)

    assert list(vars(call)) == [field.name for field in dataclasses.fields(Call)]
    assert Call(**vars(call)) == call
    assert call.max_retries == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.url = "elsewhere"  # type: ignore[misc]


def test_credentials_in_the_base_url_are_hidden_and_scrubbed() -> None:
    call = _call(api_base="http://user:pa55word-long@127.0.0.1:9/v1/")

    assert call.url == "http://user:pa55word-long@127.0.0.1:9/v1/chat/completions"
    assert call.api_base == "http://***@127.0.0.1:9/v1"
    error = call.error("server said user:pa55word-long")
    assert str(error) == "server said ***"


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "retryable"),
    [
        (Failure.CONNECT_TIMEOUT, True),
        (Failure.HUNG_UP, True),
        (Failure.UNREACHABLE, True),
        (Failure.BROKEN, True),
        (Failure.READ_TIMEOUT, False),
        (Failure.TLS, False),
        (Failure.BAD_URL, False),
        (Failure.OTHER, False),
    ],
)
def test_retry_policy_per_failure(kind: Failure, retryable: bool) -> None:
    assert kind.retryable is retryable


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            Failure.CONNECT_TIMEOUT,
            f"could not connect to the model server at {BASE} within 10 s (after 3 attempts); "
            "check api_base and that the server is up",
        ),
        (
            Failure.READ_TIMEOUT,
            f"the model server at {BASE} did not answer model 'gpt-4o-mini' within 30 s; "
            "raise timeout=... or check the server's load",
        ),
        (
            Failure.TLS,
            f"TLS failed with the model server at {BASE}: boom; check the URL's scheme and the "
            "certificate (CA_VAR for a private CA)",
        ),
        (
            Failure.HUNG_UP,
            f"the model server at {BASE} closed the connection without answering model "
            "'gpt-4o-mini': boom (after 3 attempts); check the server's logs",
        ),
        (
            Failure.UNREACHABLE,
            f"cannot reach the model server at {BASE}: boom (after 3 attempts); check api_base "
            "(or OPENAI_BASE_URL) and that the server is running",
        ),
        (
            Failure.BROKEN,
            f"the connection to the model server at {BASE} broke while reading the answer for "
            "model 'gpt-4o-mini': boom (after 3 attempts)",
        ),
        (
            Failure.BAD_URL,
            f"api_base '{BASE}' is not a usable URL (boom); it should look like "
            "'http://127.0.0.1:8000/v1' or 'https://api.openai.com/v1'",
        ),
        (Failure.OTHER, f"the request for model 'gpt-4o-mini' to {BASE} failed: boom"),
    ],
)
def test_failure_messages(kind: Failure, message: str) -> None:
    error = _call().failure(kind, "boom", 2, ca_variable="CA_VAR")

    assert str(error) == message
    timed_out = kind in (Failure.CONNECT_TIMEOUT, Failure.READ_TIMEOUT)
    assert isinstance(error, UpstreamTimeoutError) is timed_out
    assert error.status_code is None


def test_failure_reason_echoing_the_key_is_scrubbed() -> None:
    error = _call().failure(Failure.OTHER, f"rejected {KEY}")

    assert KEY not in str(error)
    assert str(error).endswith("failed: rejected ***")


def test_tries_counts_attempts_only_after_a_retry() -> None:
    assert (tries(0), tries(1), tries(4)) == ("", " (after 2 attempts)", " (after 5 attempts)")


@pytest.mark.parametrize(
    ("status", "location", "hint"),
    [
        (302, None, "redirects are not followed: set api_base to the final URL (Location: ?)"),
        (308, "http://x/v1", "set api_base to the final URL (Location: http://x/v1)"),
        (429, None, "the server is rate limiting: wait, or allow more retries"),
        (503, None, "the model server failed: try again later"),
    ],
)
def test_status_failure_hints(status: int, location: str | None, hint: str) -> None:
    error = _call().status_failure(status, b"", location, 0)

    assert str(error).startswith(
        f"the model server at {BASE} answered HTTP {status} for model 'gpt-4o-mini': "
        "(empty body). Hint: "
    )
    assert hint in str(error)
    assert error.status_code == status


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b'{"error": {"message": "nope"}}', "nope"),
        (b'{"error": "flat"}', "flat"),
        (b'{"detail": "fastapi style"}', "fastapi style"),
        (b'{"message": "plain"}', "plain"),
        (b"  <html>down</html>  ", "<html>down</html>"),
    ],
)
def test_status_failure_quotes_the_servers_message(body: bytes, shown: str) -> None:
    assert f": {shown}. Hint:" in str(_call().status_failure(400, body, None, 0))


# -- answers -------------------------------------------------------------------------------


def test_completion_objects_are_object_dicts_all_the_way_down() -> None:
    raw = b'{"choices": [{"message": {"content": "hi"}}], "usage": {"total_tokens": 2}}'

    reply = _call().completion(raw, 200)

    assert isinstance(reply, ModelResponse)
    assert reply.prompt is None
    assert type(reply.choices[0]) is ObjectDict
    assert reply.choices[0].message.content == "hi"
    assert reply.to_dict() == {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"total_tokens": 2},
    }


def test_completion_keeps_the_body_it_was_parsed_from() -> None:
    raw = b'{"choices": [], "note": "caf\\u00e9 \xc3\xa9"}'

    reply = _call().completion(raw, 200)

    assert upstream_body(reply) is raw
    assert reply.note == "caf\u00e9 \u00e9"
    assert upstream_body(ModelResponse(reply)) is None  # made elsewhere: nothing to send


@pytest.mark.parametrize(
    "raw",
    [
        '{"choices": []}'.encode("utf-16"),  # parsed, but not as the UTF-8 a client expects
        b'\xef\xbb\xbf{"choices": []}',  # a byte order mark JSON forbids
        b' {"choices": []}',
    ],
)
def test_only_plain_utf8_bodies_are_kept(raw: bytes) -> None:
    reply = _call().completion(raw, 200)

    assert reply.choices == []
    assert upstream_body(reply) is None


def test_request_bodies_that_are_not_json_values() -> None:
    looped: list[object] = []
    looped.append(looped)
    cases = [
        ({"temperature": float("nan")}, "Out of range float values are not JSON compliant"),
        ({"tools": {1, 2}}, "Object of type set is not JSON serializable"),
        ({"tools": looped}, "maximum recursion depth exceeded"),
    ]
    for params, reason in cases:
        with pytest.raises(DispatchError) as info:
            _call(params=params)

        assert str(info.value).startswith(
            f"cannot send the request for model 'gpt-4o-mini': {reason}"
        )
        assert str(info.value).endswith(
            ". Messages and parameters must be JSON values (strings, finite numbers, "
            "booleans, None, lists and dicts)"
        )


def test_compact_json() -> None:
    value = {"a": [1, 2.5, None, True], "é": "\u2028\n"}

    assert compact_json(allow_nan=False)(value) == '{"a":[1,2.5,null,true],"é":"\u2028\\n"}'
    assert compact_json(allow_nan=True)(float("inf")) == "Infinity"
    with pytest.raises(ValueError, match="Out of range float"):
        compact_json(allow_nan=False)(float("inf"))


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2.5, {"b": null}], "c": "\\u00e9"}',
        '{"a": 1} \n\t\r ',
        '{"a": 1} x',
        '{"a": 1}\n{"b": 2}',
        '{"a": 1,}',
        '{"a": NaN, "b": -Infinity}',
        "{",
        "{}}",
        "",
        " {}",
        "[1]",
    ],
)
def test_object_decoder_decodes_as_json_does(text: str) -> None:
    expected: object
    try:
        expected = json.JSONDecoder(object_hook=tuple).decode(text)
    except json.JSONDecodeError as exc:
        expected = exc

    try:
        decoded: object = object_decoder(tuple)(text)
    except json.JSONDecodeError as exc:
        decoded = exc

    if isinstance(expected, json.JSONDecodeError):
        assert isinstance(decoded, json.JSONDecodeError)
        assert (decoded.msg, decoded.pos, str(decoded)) == (
            expected.msg,
            expected.pos,
            str(expected),
        )
    else:
        assert decoded == expected


def test_completion_error_bodies() -> None:
    with pytest.raises(DispatchError) as info:
        _call().completion(b"[1]", 200)

    assert str(info.value) == (
        f"the model server at {BASE} answered model 'gpt-4o-mini' with JSON that is not a chat "
        "completion (no 'choices' list): '[1]'"
    )
    assert info.value.__context__ is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"[1, 2]", "sent a stream event for model 'gpt-4o-mini' that is not a JSON object: "),
        (b"nope", "sent a stream event for model 'gpt-4o-mini' that is not JSON: 'nope'"),
        (b'{"error": {"message": "late"}}', "reported an error while streaming model"),
    ],
)
def test_bad_chunks(data: bytes, problem: str) -> None:
    with pytest.raises(DispatchError) as info:
        _call().chunk(data)

    assert problem in str(info.value)
    assert info.value.__context__ is None


def test_chunks_and_their_end() -> None:
    call = _call()
    first = call.chunk(b'{"choices": [{"delta": {"content": "a"}, "finish_reason": null}]}')
    last = call.chunk(b'{"choices": [{"delta": {}, "finish_reason": "stop"}]}')

    assert type(first) is ObjectDict
    assert first.choices[0].delta.content == "a"
    assert (is_final(first), is_final(last), is_final(ObjectDict({"choices": "x"}))) == (
        False,
        True,
        False,
    )


def test_stream_messages() -> None:
    call = _call()

    assert isinstance(call.stream_silent(), UpstreamTimeoutError)
    assert str(call.stream_silent()) == (
        f"the model server at {BASE} went silent for more than 30 s while streaming model "
        "'gpt-4o-mini'; raise timeout=..."
    )
    assert str(call.stream_broken("reset")) == (
        f"the stream from the model server at {BASE} for model 'gpt-4o-mini' broke: reset"
    )
    assert "ended before the answer was complete" in str(call.stream_unfinished())
    json_answer = call.json_instead_of_events(b'{"error": {"message": "no streams"}}', 200)
    assert str(json_answer).endswith("with JSON instead of server-sent events: no streams")
    assert json_answer.status_code == 200


# -- server-sent events --------------------------------------------------------------------


def test_event_lines_across_blocks() -> None:
    lines = EventLines()
    stream = [
        b': comment\r\n\r\nevent: message\r\ndata: {"a"',
        b": 1}\r\n",
        b"\nid: 3\nretry: 9\ndata:{}\n\ndata: [DONE]",
        b"\n",
    ]

    payloads = [payload for block in stream for payload in lines.feed(block)]

    assert payloads == [b'{"a": 1}', b"{}", DONE]
    assert lines.end() == []


def test_event_lines_keep_a_last_line_without_newline() -> None:
    lines = EventLines()

    assert lines.feed(b"data: one\ndata:  two") == [b"one"]
    assert lines.end() == [b" two"]  # only the one space after the colon is dropped
    assert lines.end() == []
