"""``POST /v1/chat/completions``: find the deployment, render its prompt, call the upstream.

Parameters merge with this precedence: the request body > the deployment's
``litellm_params`` > the prompt's frontmatter > defaults. A prompt deployment's messages come
from its prompt (the client's ``messages`` are ignored unless ``append_messages`` is true); a
pass-through deployment sends the client's messages to its model, without LiteLLM's
``openai/`` provider prefix.

Every answer for a prompt carries its provenance as ``x-promptdock-*`` headers. A streamed
answer is relayed event by event as it arrives; an upstream failure after the first event
ends the stream with an ``error`` event (the status line is already sent by then), and a
client that hangs up stops the upstream call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from promptdock._dock import PromptDock
from promptdock.dispatch._openai_wire import upstream_body
from promptdock.errors import PromptdockError
from promptdock.models import CompletionRequest, Provenance
from promptdock.proxy.asgi import Exchange, Headers, Receive, dumps
from promptdock.proxy.auth import Principal
from promptdock.proxy.chat import ChatRequest, parse_chat_request
from promptdock.proxy.errors import ApiError, Redactor, api_error
from promptdock.proxy.routing import PROVIDER_PREFIX, RouteTable, Target
from promptdock.response import AsyncCompletionStream, ModelResponse

__all__ = ["PROVENANCE_HEADERS", "Completions", "provenance_headers"]

PROVENANCE_HEADERS = (
    "x-promptdock-prompt-id",
    "x-promptdock-prompt-version",
    "x-promptdock-source",
    "x-promptdock-ref",
    "x-promptdock-sha",
    "x-promptdock-stale",
)
"""The provenance headers of a prompt's answer; one whose value is unknown is left out."""

_SSE_HEADERS: Headers = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies in front (nginx) must pass each event on at once.
    (b"x-accel-buffering", b"no"),
)
_DONE = b"data: [DONE]\n\n"
_CLIENT_GONE = 499  # nginx's status for "the client closed the connection"
_MAX_CACHED = 1024

_header_cache: dict[Provenance, list[tuple[bytes, bytes]]] = {}


def provenance_headers(provenance: Provenance) -> list[tuple[bytes, bytes]]:
    """The ``x-promptdock-*`` headers for ``provenance`` (built once per distinct value)."""
    headers = _header_cache.get(provenance)
    if headers is None:
        values = (
            provenance.prompt_id,
            provenance.version,
            provenance.source,
            provenance.ref,
            provenance.sha,
            "true" if provenance.is_stale else "false",
        )
        headers = [
            (name.encode(), _header_value(str(value)))
            for name, value in zip(PROVENANCE_HEADERS, values, strict=True)
            if value is not None
        ]
        if len(_header_cache) >= _MAX_CACHED:
            _header_cache.clear()
        _header_cache[provenance] = headers
    return headers


def _header_value(text: str) -> bytes:
    # Header values must be printable ASCII; anything else (a non-ASCII branch name) is
    # percent-encoded, which keeps it readable and unambiguous.
    if text.isascii() and text.isprintable():
        return text.encode()
    return quote(text, safe="/:@-._~+").encode()


class Completions:
    """The chat completion endpoint of one proxy.

    :param dock: the prompt sources and plugins.
    :param routes: the deployments.
    :param redact: scrubs secrets from error messages.
    :param catch_up: run before preparing a request from a remote source, in its worker
        thread: applies pushes other worker processes received.
    """

    def __init__(
        self,
        dock: PromptDock,
        routes: RouteTable,
        redact: Redactor,
        catch_up: Callable[[], object] | None = None,
    ) -> None:
        self.dock = dock
        self.routes = routes
        self.redact = redact
        self.catch_up = catch_up

    async def __call__(self, exchange: Exchange, principal: Principal, body: bytes) -> None:
        """Answer one request (errors are raised, for the app to answer)."""
        chat = parse_chat_request(body)
        exchange.model = chat.model
        exchange.stream = chat.stream
        target = self._target(chat.model, principal)
        prompt_id = self._prompt_id(chat, target, principal)
        exchange.prompt_id = prompt_id
        request = await self._prepare(chat, target, prompt_id)
        headers: Headers = ()
        provenance = request.provenance
        if provenance is not None:
            exchange.prompt_version = provenance.version
            exchange.source = provenance.source
            exchange.sha = provenance.sha
            headers = provenance_headers(provenance)
        result = await self.dock.asend(request)
        if isinstance(result, ModelResponse):
            await exchange.respond(200, self._answer(result), headers)
        else:
            await self._relay(exchange, result, headers)

    def _answer(self, response: ModelResponse) -> bytes:
        """The body of a whole answer: the upstream's own bytes while they still say what
        ``response`` says (no dispatch wrapper could have changed it), else ``response`` encoded.

        Encoding the answer again cost about a tenth of the proxy's work per request.
        """
        body = upstream_body(response)
        if body is None or self.dock.plugin_host.dispatch_wrapped():
            return dumps(response)
        return body

    # -- steps ---------------------------------------------------------------------------

    def _target(self, model: str, principal: Principal) -> Target:
        route = self.routes.get(model)
        if route is None:
            visible = [n for n in self.routes.routes if principal.may_use_model(n)]
            raise ApiError(
                404,
                f"model {model!r} is not served by this proxy; its models: "
                f"{', '.join(visible) or 'none'} (GET /v1/models lists them)",
                param="model",
                code="model_not_found",
            )
        if not principal.may_use_model(model):
            raise ApiError(
                403,
                f"{principal.label} may not use model {model!r}; ask for it to be added to "
                f"the key's models in the proxy's config",
                param="model",
                code="model_not_allowed",
            )
        target = route.pick()
        if target.problem is not None:
            raise ApiError(500, target.problem, code="config_error")
        return target

    @staticmethod
    def _prompt_id(chat: ChatRequest, target: Target, principal: Principal) -> str | None:
        if target.source is None:
            if chat.prompt_id is not None:
                raise ApiError(
                    400,
                    f"model {chat.model!r} passes messages straight to "
                    f"{target.model!r} and has no prompt source, so it cannot use prompt_id "
                    f"{chat.prompt_id!r}; pick a prompt model (GET /v1/models)",
                    param="prompt_id",
                    code="invalid_value",
                )
            if not chat.messages:
                raise ApiError(
                    400,
                    f"model {chat.model!r} passes messages straight to the model: send "
                    f"'messages', a non-empty list",
                    param="messages",
                    code="invalid_value",
                )
            return None
        prompt_id = chat.prompt_id or target.deployment.prompt_id
        if prompt_id is None:
            raise ApiError(
                400,
                f"model {chat.model!r} renders prompts of source {target.source!r} but names "
                f"no prompt: send 'prompt_id' (GET /v1/prompts lists them)",
                param="prompt_id",
                code="invalid_value",
            )
        if not principal.may_use_prompt(prompt_id):
            raise ApiError(
                403,
                f"{principal.label} may not use prompt {prompt_id!r}; its prompts: "
                f"{', '.join(principal.prompts or ())}",
                param="prompt_id",
                code="prompt_not_allowed",
            )
        return prompt_id

    async def _prepare(
        self, chat: ChatRequest, target: Target, prompt_id: str | None
    ) -> CompletionRequest:
        options: Mapping[str, Any] = (
            {**target.options, **chat.params} if chat.params else target.options
        )
        version = chat.prompt_version
        if version is None:
            version = target.deployment.prompt_version
        arguments = {
            "prompt_id": prompt_id,
            "prompt_variables": chat.prompt_variables,
            "prompt_version": version,
            "stream": chat.stream,
            "mock_response": chat.mock_response,
            "append_messages": chat.append_messages,
            **options,
        }
        if target.inline:
            request = self.dock.prepare_request(target.model, chat.messages, **arguments)
        else:
            # May read a remote source (a cold or expired cache): off the event loop.
            request = await asyncio.to_thread(self._prepare_remote, target, chat, arguments)
        if request.model.startswith(PROVIDER_PREFIX):
            request = replace(request, model=request.model.removeprefix(PROVIDER_PREFIX))
        return request

    def _prepare_remote(
        self, target: Target, chat: ChatRequest, arguments: Mapping[str, Any]
    ) -> CompletionRequest:
        if self.catch_up is not None:
            self.catch_up()
        return self.dock.prepare_request(target.model, chat.messages, **arguments)

    # -- streaming -----------------------------------------------------------------------

    async def _relay(
        self, exchange: Exchange, stream: AsyncCompletionStream, headers: Headers
    ) -> None:
        relay = asyncio.ensure_future(self._send_events(exchange, stream, headers))
        watch = asyncio.ensure_future(_disconnect(exchange.receive))
        try:
            await asyncio.wait((relay, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, watch):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            # A relay cancelled before it ran never reached its own ``finally``: the
            # upstream connection is freed here (closing twice is harmless).
            await stream.aclose()
        if relay.cancelled():
            exchange.status = _CLIENT_GONE
        else:
            relay.result()

    async def _send_events(
        self, exchange: Exchange, stream: AsyncCompletionStream, headers: Headers
    ) -> None:
        send = exchange.send
        tail = _DONE
        try:
            await exchange.start(200, [*_SSE_HEADERS, *headers])
            async for chunk in stream:
                event = b"data: " + dumps(chunk) + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
        except PromptdockError as exc:
            # The status line is gone: the error travels as an event, as OpenAI sends them.
            error = api_error(exc, self.redact)
            exchange.status = error.status
            tail = b"data: " + error.body() + b"\n\n"
        finally:
            await stream.aclose()
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _disconnect(receive: Receive) -> None:
    """Return when the client hangs up (the request body has already been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
