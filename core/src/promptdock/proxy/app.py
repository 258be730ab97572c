"""The proxy as a raw ASGI application: routing, authentication, errors, lifespan.

``ProxyApp(config)`` is everything ``promptdock serve`` runs; tests and embedders can serve it
with any ASGI server. Routes:

=======================================  =======  ===========================================
path                                     method   key
=======================================  =======  ===========================================
``/v1/chat/completions``,                POST     yes
``/chat/completions``
``/v1/models``, ``/models``              GET      yes
``/v1/prompts``, ``/v1/prompts/{id}``    GET      yes
``/health/liveliness``,                  GET      no
``/health/liveness``,
``/health/readiness``
``/webhooks/bitbucket``                  POST     no (the delivery's HMAC signature instead)
=======================================  =======  ===========================================

At start-up (ASGI lifespan) the app opens its pooled upstream session; at shutdown it closes
it. Building the app reads no remote source.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from promptdock._dock import PromptDock
from promptdock.config import ProxyConfig
from promptdock.errors import PromptdockError
from promptdock.proxy.access_log import AccessLog, LogFormat
from promptdock.proxy.asgi import Exchange, Receive, Scope, Send, header, read_body
from promptdock.proxy.auth import KeyRing, Principal, check_listen_address
from promptdock.proxy.catalog import PROMPTS_PREFIX, Catalog
from promptdock.proxy.completions import Completions
from promptdock.proxy.errors import ApiError, Redactor, api_error
from promptdock.proxy.events import EVENTS_ENV, SharedEvents
from promptdock.proxy.health import LIVELINESS_BODY, Health
from promptdock.proxy.routing import build_routes
from promptdock.proxy.webhook import BitbucketWebhook

__all__ = ["DEFAULT_MAX_BODY", "ProxyApp"]

DEFAULT_MAX_BODY = 1 << 20
"""Bytes: the largest request body accepted unless ``max_request_size_mb`` says otherwise."""

_LOG = logging.getLogger("promptdock.proxy")
_MIB = 1 << 20
_POLL_SECONDS = 0.5

Endpoint = Callable[[Exchange], Awaitable[None]]


class ProxyApp:
    """The OpenAI-compatible proxy for one config, as an ASGI 3 application.

    :param config: the loaded ``config.yaml``.
    :param host: the address it will listen on (``sk-1234`` is refused beyond loopback).
    :param dock: the dock to serve from (default: one over the config's sources).
    :param access_log: the access log writer (default: ``key=value`` lines).
    :param access_log_format: the default writer's format, ``"text"`` or ``"json"``.
    :param events_folder: the directory shared by the workers of one server (default:
        ``$PROMPTDOCK_PROXY_EVENTS``; none for a single process).
    :raises ConfigError: the config may not be served on ``host``.
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        host: str = "127.0.0.1",
        dock: PromptDock | None = None,
        access_log: AccessLog | None = None,
        access_log_format: LogFormat = "text",
        events_folder: str | None = None,
    ) -> None:
        self.config = config
        self.warnings = check_listen_address(config, host)
        self.dock = dock if dock is not None else config.make_dock()
        self.keys = KeyRing.from_config(config)
        self.routes = build_routes(config, self.dock)
        self.warnings.extend(self.routes.problems)
        self.redact = Redactor(_secrets(config))
        self.max_body = (
            int(config.max_request_size_mb * _MIB)
            if config.max_request_size_mb
            else DEFAULT_MAX_BODY
        )
        self.access_log = access_log or AccessLog(access_log_format)
        self.webhook = BitbucketWebhook(
            config.webhook_secret, config.source_configs, self.dock, self.redact
        )
        folder = events_folder or os.environ.get(EVENTS_ENV)
        self.events = SharedEvents(folder, self.webhook.invalidate) if folder else None
        self.webhook.events = self.events
        self.completions = Completions(
            self.dock,
            self.routes,
            self.redact,
            self.events.catch_up if self.events is not None else None,
        )
        self.catalog = Catalog(self.dock, self.routes, self.redact, int(time.time()))
        self.health = Health(config, self.dock, self.redact)
        self._warming: asyncio.Future[list[str]] | None = None
        self._warm_pending = False
        self._polling: asyncio.Task[None] | None = None
        completions = self._completions
        self._routes: dict[str, dict[str, Endpoint]] = {
            "/v1/chat/completions": {"POST": completions},
            "/chat/completions": {"POST": completions},
            "/v1/models": {"GET": self._models},
            "/models": {"GET": self._models},
            "/v1/prompts": {"GET": self._prompts},
            "/health/liveliness": {"GET": self._liveliness},
            "/health/liveness": {"GET": self._liveliness},
            "/health/readiness": {"GET": self._readiness},
            "/webhooks/bitbucket": {"POST": self._bitbucket},
        }

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http`` or ``lifespan``)."""
        kind = scope["type"]
        if kind == "http":
            await self._http(Exchange(scope, receive, send, time.perf_counter()))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, exchange: Exchange) -> None:
        if self._warm_pending:
            self._warm_pending = False
            self._warming = asyncio.ensure_future(asyncio.to_thread(self.warm))
            self._warming.add_done_callback(_freeze_heap)
        path: str = exchange.scope["path"]
        methods = self._routes.get(path)
        if methods is None and path.startswith(PROMPTS_PREFIX):
            methods = {"GET": self._prompt}
        try:
            if methods is None:
                raise ApiError(
                    404, f"no endpoint {path}; see docs/proxy.md", code="unknown_endpoint"
                )
            endpoint = methods.get(exchange.scope["method"])
            if endpoint is None:
                raise ApiError(
                    405,
                    f"{path} accepts {', '.join(methods)}, not {exchange.scope['method']}",
                    code="method_not_allowed",
                    headers=[(b"allow", ", ".join(methods).encode())],
                )
            await endpoint(exchange)
        except ApiError as error:
            await self._fail(exchange, error)
        except PromptdockError as exc:
            await self._fail(exchange, api_error(exc, self.redact))
        except Exception:
            _LOG.exception("internal error while answering %s", path)
            await self._fail(
                exchange,
                ApiError(
                    500,
                    "internal error in the proxy; its log has the details",
                    code="internal_error",
                ),
            )
        finally:
            self.access_log.record(exchange)

    async def _fail(self, exchange: Exchange, error: ApiError) -> None:
        if exchange.status:
            # The answer has started (a stream): nothing more can be said in HTTP terms.
            _LOG.warning("%s after the answer started: %s", exchange.scope["path"], error)
            return
        await exchange.respond_error(error)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Open the pooled upstream session (called by the ASGI lifespan).

        Local prompts are warmed (loaded once, in a worker thread) when the first request
        arrives, typically a health probe: start-up does not wait for it, and the first
        completion finds its prompt parsed. Remote sources are left alone; they load on first
        use.
        """
        from promptdock.dispatch import openai_async

        await openai_async.open_session()
        # What start-up made (modules, config, plugins) lives as long as the process: keeping
        # it out of the garbage collector's scans shortens the pauses requests see.
        gc.freeze()
        self._warm_pending = True
        if self.events is not None:
            self._polling = asyncio.create_task(self._poll(self.events))

    async def shutdown(self) -> None:
        """Close the pooled upstream session (called by the ASGI lifespan)."""
        from promptdock.dispatch import openai_async

        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._polling
        if self._warming is not None:
            with contextlib.suppress(Exception):
                await self._warming
        await openai_async.close_session()
        self.access_log.flush()

    @staticmethod
    async def _poll(events: SharedEvents) -> None:
        """Apply the other workers' pushes while idle (requests also catch up themselves)."""
        while True:
            await asyncio.sleep(_POLL_SECONDS)
            try:
                await asyncio.to_thread(events.catch_up)
            except Exception:
                _LOG.exception("applying the other workers' pushes failed")

    def warm(self) -> list[str]:
        """Load every local deployment prompt once; returns the ids that loaded.

        Failures are ignored here: requests and ``/health/readiness`` report them.
        """
        loaded = []
        for route in self.routes.routes.values():
            for target in route.targets:
                prompt_id = target.deployment.prompt_id
                if not target.inline or target.source is None or prompt_id is None:
                    continue
                try:
                    self.dock.get_prompt(
                        prompt_id, source=target.source, version=target.deployment.prompt_version
                    )
                except PromptdockError:
                    continue
                loaded.append(prompt_id)
        return loaded

    # -- endpoints -----------------------------------------------------------------------

    def _authenticate(self, exchange: Exchange) -> Principal:
        scope = exchange.scope
        principal = self.keys.authenticate(
            header(scope, b"authorization"), header(scope, b"x-api-key")
        )
        exchange.team = principal.team
        return principal

    async def _completions(self, exchange: Exchange) -> None:
        principal = self._authenticate(exchange)
        body = await read_body(exchange, self.max_body)
        await self.completions(exchange, principal, body)

    async def _models(self, exchange: Exchange) -> None:
        await exchange.respond(200, self.catalog.models(self._authenticate(exchange)))

    async def _prompts(self, exchange: Exchange) -> None:
        listing = await self.catalog.prompts(self._authenticate(exchange))
        await exchange.respond_json(200, listing)

    async def _prompt(self, exchange: Exchange) -> None:
        principal = self._authenticate(exchange)
        prompt_id = exchange.scope["path"][len(PROMPTS_PREFIX) :]
        exchange.prompt_id = prompt_id
        query: bytes = exchange.scope.get("query_string", b"")
        await exchange.respond_json(200, await self.catalog.prompt(principal, prompt_id, query))

    async def _liveliness(self, exchange: Exchange) -> None:
        await exchange.respond(200, LIVELINESS_BODY)

    async def _readiness(self, exchange: Exchange) -> None:
        status, report = await self.health.readiness()
        await exchange.respond_json(status, report)

    async def _bitbucket(self, exchange: Exchange) -> None:
        scope = exchange.scope
        body = await read_body(exchange, self.max_body)
        event = header(scope, b"x-event-key")
        delivery = header(scope, b"x-request-uuid") or header(scope, b"x-request-id")
        answer = await self.webhook.handle(
            event.decode("latin-1") if event is not None else None,
            delivery.decode("latin-1") if delivery is not None else None,
            header(scope, b"x-hub-signature"),
            body,
        )
        await exchange.respond_json(200, answer)


def _freeze_heap(_: object) -> None:
    # The prompts just loaded (parsed files, compiled templates) live as long as the process,
    # like what start-up made: out of the collector's scans too.
    gc.freeze()


def _secrets(config: ProxyConfig) -> list[str | None]:
    """Every secret value of ``config``: what must never reach a response or a log."""
    from promptdock.models import is_secret_key

    found: list[str | None] = [config.master_key, config.webhook_secret]
    found.extend(key.key for key in config.team_keys)
    found.extend(d.api_key for d in config.deployments)
    for source in config.source_configs.values():
        found.extend(_secret_values(source.options, is_secret_key))
    return found


def _secret_values(options: Mapping[str, Any], is_secret: Callable[[str], bool]) -> list[str]:
    values: list[str] = []
    for key, value in options.items():
        if isinstance(value, str) and is_secret(str(key)):
            values.append(value)
        elif isinstance(value, Mapping):
            values.extend(_secret_values(value, is_secret))
    return values
