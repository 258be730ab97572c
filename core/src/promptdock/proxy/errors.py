"""Errors as the proxy answers them: OpenAI's JSON shape, the right status, no secrets.

Every failure becomes ``{"error": {"message", "type", "param", "code"}}``. promptdock's own
errors map to statuses as follows (documented in ``docs/proxy.md``):

====================================  ======  ==============================================
error                                 status  why
====================================  ======  ==============================================
``UnsafePromptIdError``               400     the caller's ``prompt_id`` tries to leave its source
``PromptNotFoundError``               404     no such prompt (or version)
``InputValidationError``              400     a variable is missing or invalid; ``param`` names it
``RenderError``                       400     the template failed on the caller's variables
``PromptSyntaxError``                 500     the prompt file is broken: the operator must fix it
``SourceAuthError``                   503     the proxy's own source credentials were refused
``SourceUnavailableError``            503     the source is unreachable and nothing is cached
``UpstreamTimeoutError``              504     the model server did not answer in time
``DispatchError`` with a 4xx status   same    the model server refused the request itself
                                              (except 401, 403 and 407, the proxy's own key
                                              or network setup: those are 502)
other ``DispatchError``               502     the model server failed or could not be reached
``ConfigError``, ``PluginLoadError``  500     the proxy's configuration or plugins are broken
====================================  ======  ==============================================

A ``SourceAuthError`` is 503, not 502: the client can do nothing about the proxy's token, and
from its side the prompt is simply unavailable until the operator fixes the credentials.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from promptdock.errors import (
    ConfigError,
    DispatchError,
    InputValidationError,
    PluginLoadError,
    PromptdockError,
    PromptNotFoundError,
    PromptSyntaxError,
    RenderError,
    SourceAuthError,
    SourceUnavailableError,
    UnsafePromptIdError,
    UpstreamTimeoutError,
)

__all__ = ["ApiError", "Redactor", "api_error", "error_type"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}

# Upstream statuses that say something about the proxy's own setup (its upstream key, its
# network), never about the client's request: passing them on would blame the client.
_NOT_THE_CLIENTS = frozenset({401, 403, 407})
_MIN_SECRET_LENGTH = 6


def error_type(status: int) -> str:
    """The OpenAI ``error.type`` for an HTTP status (``server_error`` for other 5xx)."""
    found = _TYPES.get(status)
    if found is not None:
        return found
    return "server_error" if status >= 500 else "invalid_request_error"


class ApiError(Exception):
    """An error answer: status, message and the OpenAI error fields.

    Raised inside the proxy to stop handling a request; the app turns it into the response.

    :ivar status: the HTTP status.
    :ivar message: what went wrong and how to fix it (already free of secrets).
    :ivar type: OpenAI's ``error.type`` (derived from the status unless given).
    :ivar param: the request field at fault (``"prompt_variables.user_message"``), if any.
    :ivar code: a stable machine-readable code (``"model_not_found"``), if any.
    :ivar headers: extra response headers.
    :ivar close: close the connection after answering (the body was not read).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.param = param
        self.code = code
        self.headers = headers
        self.close = close

    def as_dict(self) -> dict[str, dict[str, str | None]]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        """:meth:`as_dict` as JSON bytes."""
        return json.dumps(self.as_dict(), ensure_ascii=False).encode()


class Redactor:
    """Replaces known secrets (keys, tokens) with ``***`` in text bound for clients or logs.

    Messages are built without secrets in the first place; this is the second line of defence,
    for text that quotes a server or a plugin. Very short values are skipped: replacing
    ``"x"`` everywhere would garble every message and protects nothing.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = tuple(sorted(found, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def api_error(exc: PromptdockError, redact: Redactor) -> ApiError:
    """The answer for a promptdock error raised while serving a request (see the table above)."""
    message = redact(str(exc))
    if isinstance(exc, UnsafePromptIdError):
        return ApiError(400, message, param="prompt_id", code="invalid_prompt_id")
    if isinstance(exc, PromptNotFoundError):
        return ApiError(404, message, param="prompt_id", code="prompt_not_found")
    if isinstance(exc, InputValidationError):
        param = f"prompt_variables.{exc.field}" if exc.field else "prompt_variables"
        return ApiError(400, message, param=param, code="invalid_prompt_variables")
    if isinstance(exc, PromptSyntaxError):
        return ApiError(500, message, code="prompt_syntax_error")
    if isinstance(exc, RenderError):
        return ApiError(400, message, param="prompt_variables", code="render_error")
    if isinstance(exc, SourceAuthError):
        return ApiError(503, message, code="source_auth_failed")
    if isinstance(exc, SourceUnavailableError):
        return ApiError(503, message, code="source_unavailable")
    if isinstance(exc, UpstreamTimeoutError):
        return ApiError(504, message, code="upstream_timeout")
    if isinstance(exc, DispatchError):
        status = exc.status_code
        if status is not None and 400 <= status < 500 and status not in _NOT_THE_CLIENTS:
            return ApiError(status, message, code="upstream_rejected")
        return ApiError(502, message, code="upstream_error")
    if isinstance(exc, ConfigError | PluginLoadError):
        return ApiError(500, message, code="config_error")
    return ApiError(500, message, code="internal_error")
