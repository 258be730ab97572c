"""One structured line per request on the ``promptdock.proxy.access`` logger.

Each line carries method, path, status, model, team, prompt id, version, source, commit SHA,
whether the answer streamed, the client address and the latency, as ``key=value`` pairs
(values with spaces or quotes are JSON-quoted) or as one JSON object. The same fields are on
the log record as ``record.access`` (a dict) for handlers that format records themselves.

No field can hold a secret: keys, tokens and request bodies are never logged.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Literal

from promptdock.proxy.asgi import Exchange

__all__ = ["ACCESS_LOGGER", "AccessLog", "LogFormat"]

ACCESS_LOGGER = logging.getLogger("promptdock.proxy.access")
"""Where the access lines go (level ``INFO``)."""

LogFormat = Literal["text", "json"]
"""``"text"`` for ``key=value`` pairs, ``"json"`` for one JSON object per line."""


class AccessLog:
    """Writes the access line of a finished :class:`~promptdock.proxy.asgi.Exchange`.

    :param format: ``"text"`` (``key=value``) or ``"json"``.
    :param logger: the logger to write to.
    """

    def __init__(
        self,
        format: LogFormat = "text",
        logger: logging.Logger = ACCESS_LOGGER,
    ) -> None:
        self.format = format
        self.logger = logger

    def record(self, exchange: Exchange) -> None:
        """Log ``exchange`` (skipped cheaply when ``INFO`` is disabled for the logger)."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        scope = exchange.scope
        client = scope.get("client")
        fields: dict[str, Any] = {
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": exchange.status,
            "model": exchange.model,
            "team": exchange.team,
            "prompt_id": exchange.prompt_id,
            "version": exchange.prompt_version,
            "source": exchange.source,
            "sha": exchange.sha,
            "stream": exchange.stream,
            "client": f"{client[0]}:{client[1]}" if client else None,
            "latency_ms": round((time.perf_counter() - exchange.started) * 1000.0, 3),
        }
        if self.format == "json":
            line = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        else:
            # One f-string over known types: this runs for every request.
            line = (
                f"method={_text(fields['method'])} path={_text(fields['path'])} "
                f"status={exchange.status} model={_text(exchange.model)} "
                f"team={_text(exchange.team)} prompt_id={_text(exchange.prompt_id)} "
                f"version={'-' if exchange.prompt_version is None else exchange.prompt_version} "
                f"source={_text(exchange.source)} sha={_text(exchange.sha)} "
                f"stream={'true' if exchange.stream else 'false'} "
                f"client={_text(fields['client'])} latency_ms={fields['latency_ms']}"
            )
        # makeRecord + handle is logger.info without its search of the stack for the caller's
        # file and line, which an access line does not need and which costs the most.
        logger = self.logger
        logger.handle(
            logger.makeRecord(
                logger.name, logging.INFO, __file__, 0, line, (), None, extra={"access": fields}
            )
        )


# Printable ASCII except space, '"', '=' and '\\': such values need no quotes.
_PLAIN = re.compile(r"[!#-<>-\[\]-~]+")


def _text(value: str | None) -> str:
    if value is None:
        return "-"
    if _PLAIN.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False)
