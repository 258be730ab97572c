"""One structured line per request on the ``promptdock.proxy.access`` logger.

Each line carries method, path, status, model, team, prompt id, version, source, commit SHA,
whether the answer streamed, the client address and the latency, as ``key=value`` pairs
(values with spaces or quotes are JSON-quoted) or as one JSON object. The same fields are on
the log record as ``record.access`` (a dict) for handlers that format records themselves.

No field can hold a secret: keys, tokens and request bodies are never logged.

``promptdock serve`` writes the lines with :class:`AccessLineHandler`, which batches them: a
line reaches the stream at most :data:`FLUSH_SECONDS` after its request ended, with one
``write`` for all the lines of that interval instead of one per request. While that handler
is the logger's only one, :meth:`AccessLog.record` hands it the line directly and skips
building a :class:`logging.LogRecord`; with any other handler or filter attached, every line
goes through :mod:`logging` as usual.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from typing import IO, Any, Literal

from promptdock.proxy.asgi import Exchange

__all__ = ["ACCESS_LOGGER", "FLUSH_SECONDS", "AccessLineHandler", "AccessLog", "LogFormat"]

ACCESS_LOGGER = logging.getLogger("promptdock.proxy.access")
"""Where the access lines go (level ``INFO``)."""

LogFormat = Literal["text", "json"]
"""``"text"`` for ``key=value`` pairs, ``"json"`` for one JSON object per line."""

FLUSH_SECONDS = 0.05
"""How long :class:`AccessLineHandler` may hold a line before writing it out."""


class AccessLineHandler(logging.StreamHandler[IO[str]]):
    """Writes each access line as it is (formatters are ignored), batching the writes.

    Inside a running event loop, lines are buffered and flushed by a timer
    :data:`FLUSH_SECONDS` later, so a busy proxy makes one ``write`` per interval rather than
    one per request. Outside an event loop each line is flushed at once. :meth:`flush` (called
    at shutdown and by :func:`logging.shutdown`) writes whatever is pending.

    :param stream: where the lines go (default: ``sys.stderr``, as for
        :class:`logging.StreamHandler`; ``promptdock serve`` passes stdout).
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(sys.stderr if stream is None else stream)
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record``'s message as one line."""
        try:
            self.write_line(record.getMessage())
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Queue ``line`` (no newline) for the stream."""
        with self.lock:  # type: ignore[union-attr]  # made by the Handler constructor
            self._pending.append(line)
            if self._timer is not None:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None:
                self._write_pending()
            else:
                self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write every queued line and flush the stream."""
        with self.lock:  # type: ignore[union-attr]
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._pending:
                self._write_pending()

    def _write_pending(self) -> None:
        lines, self._pending = self._pending, []
        lines.append("")
        self.stream.write("\n".join(lines))
        self.stream.flush()


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

    def flush(self) -> None:
        """Write out the lines the logger's handlers are holding (at shutdown)."""
        for handler in self.logger.handlers:
            handler.flush()

    def record(self, exchange: Exchange) -> None:
        """Log ``exchange`` (skipped cheaply when ``INFO`` is disabled for the logger)."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        latency_ms = round((time.perf_counter() - exchange.started) * 1000.0, 3)
        handler = _direct_handler(logger)
        if handler is not None and self.format == "text":
            # What the logging path would do, without the record and its fields nobody reads.
            handler.write_line(_text_line(exchange, latency_ms))
            return
        fields = _fields(exchange, latency_ms)
        if self.format == "json":
            line = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        else:
            line = _text_line(exchange, latency_ms)
        if handler is not None:
            handler.write_line(line)
            return
        # makeRecord + handle is logger.info without its search of the stack for the caller's
        # file and line, which an access line does not need and which costs the most.
        logger.handle(
            logger.makeRecord(
                logger.name, logging.INFO, __file__, 0, line, (), None, extra={"access": fields}
            )
        )


def _direct_handler(logger: logging.Logger) -> AccessLineHandler | None:
    """The logger's one handler, if it is an :class:`AccessLineHandler` that every ``INFO``
    record reaches unchanged (no filter, no other handler): lines may go to it directly."""
    handlers = logger.handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (
        type(handler) is AccessLineHandler
        and not handler.filters
        and handler.level <= logging.INFO
        and not logger.filters
        and not logger.propagate
    ):
        return handler
    return None


def _fields(exchange: Exchange, latency_ms: float) -> dict[str, Any]:
    """The access fields of ``exchange``, for JSON lines and ``record.access``."""
    scope = exchange.scope
    client = scope.get("client")
    return {
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
        "latency_ms": latency_ms,
    }


def _text_line(exchange: Exchange, latency_ms: float) -> str:
    """The ``key=value`` line of ``exchange``: the fields of :func:`_fields`, in their order."""
    scope = exchange.scope
    client = scope.get("client")
    version = exchange.prompt_version
    # One f-string over known types: this runs for every request.
    return (
        f"method={_text(scope.get('method'))} path={_text(scope.get('path'))} "
        f"status={exchange.status} model={_text(exchange.model)} "
        f"team={_text(exchange.team)} prompt_id={_text(exchange.prompt_id)} "
        f"version={'-' if version is None else version} "
        f"source={_text(exchange.source)} sha={_text(exchange.sha)} "
        f"stream={'true' if exchange.stream else 'false'} "
        f"client={_text(f'{client[0]}:{client[1]}') if client else '-'} latency_ms={latency_ms}"
    )


# Printable ASCII except space, '"', '=' and '\\': such values need no quotes.
_PLAIN = re.compile(r"[!#-<>-\[\]-~]+")


# Values as written in lines, by value: most (method, path, model, prompt id...) repeat from
# request to request, and a dictionary look-up costs a fraction of the pattern's match. Bounded,
# as clients choose some of them; long values are not kept.
_written: dict[str, str] = {}
_MAX_WRITTEN = 4096
_MAX_KEPT_LENGTH = 256


def _text(value: str | None) -> str:
    if value is None:
        return "-"
    text = _written.get(value)
    if text is None:
        text = value if _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)
        if len(value) <= _MAX_KEPT_LENGTH:
            if len(_written) >= _MAX_WRITTEN:
                _written.clear()
            _written[value] = text
    return text
