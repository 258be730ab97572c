"""Run the proxy under uvicorn: what ``promptdock serve`` does.

uvicorn runs with uvloop and httptools (installed by the ``[proxy]`` extra) and the ASGI
lifespan on. With ``--workers N`` it starts N processes that each build the app from the
import string ``promptdock.proxy.server:create_app``, reading the config path and listen
address from environment variables, so each worker has its own event loop, upstream
connection pool and prompt caches.

On SIGINT or SIGTERM uvicorn stops accepting connections and lets in-flight requests finish
(streams included) for up to ``graceful_timeout`` seconds before cancelling them.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from promptdock.config import ProxyConfig, load_config
from promptdock.errors import ConfigError
from promptdock.proxy.access_log import LogFormat
from promptdock.proxy.events import EVENTS_ENV

if TYPE_CHECKING:
    from promptdock.proxy.app import ProxyApp

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_GRACEFUL_TIMEOUT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "FORMAT_ENV",
    "HOST_ENV",
    "build_app",
    "create_app",
    "log_config",
    "serve",
]

CONFIG_ENV = "PROMPTDOCK_PROXY_CONFIG"
"""Environment variable carrying the config path to worker processes."""

HOST_ENV = "PROMPTDOCK_PROXY_HOST"
"""Environment variable carrying the listen address to worker processes."""

FORMAT_ENV = "PROMPTDOCK_ACCESS_LOG_FORMAT"
"""Environment variable carrying the access log format (``text`` or ``json``) to workers."""

DEFAULT_HOST = "127.0.0.1"
"""Where the proxy listens unless told otherwise: this machine only."""

DEFAULT_PORT = 4000
"""LiteLLM's port, so clients configured for it need no change."""

DEFAULT_GRACEFUL_TIMEOUT = 30
"""Seconds in-flight requests get to finish after a shutdown signal."""


def build_app(
    config: ProxyConfig, host: str = DEFAULT_HOST, access_log_format: LogFormat = "text"
) -> ProxyApp:
    """The proxy app for a loaded config (imports the server stack: needs the extra).

    :raises ConfigError: the ``[proxy]`` extra is missing, or the config may not be served on
        ``host``.
    """
    _require_extra()
    from promptdock.proxy.app import ProxyApp

    return ProxyApp(config, host=host, access_log_format=access_log_format)


def create_app() -> ProxyApp:
    """The app of a worker process, from :data:`CONFIG_ENV` and :data:`HOST_ENV`.

    uvicorn calls it (``factory=True``) in each worker; start-up warnings were already shown
    once by the parent process.

    :raises ConfigError: :data:`CONFIG_ENV` is not set, or the config is broken.
    """
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(
            f"{CONFIG_ENV} is not set: start the proxy with 'promptdock serve --config FILE'",
            key="config",
        )
    host = os.environ.get(HOST_ENV, DEFAULT_HOST)
    log_format: LogFormat = "json" if os.environ.get(FORMAT_ENV) == "json" else "text"
    return build_app(load_config(path), host, log_format)


def _require_extra() -> None:
    try:
        import httptools  # noqa: F401 - checking that the extra is installed
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the proxy needs the [proxy] extra ({exc.name} is missing): "
            f"pip install 'promptdock[proxy]'",
            key="serve",
        ) from None


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's ``log_config``: server messages on stderr, access lines on stdout."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            },
            # Writes each access line as is, batched (see proxy.access_log).
            "stdout": {
                "class": "promptdock.proxy.access_log.AccessLineHandler",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "promptdock": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "promptdock.proxy.access": {
                "handlers": ["stdout"],
                "level": "INFO" if upper in ("DEBUG", "INFO") else upper,
                "propagate": False,
            },
        },
    }


def serve(
    app: ProxyApp,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
    log_level: str = "info",
    access_log_format: LogFormat = "text",
    graceful_timeout: int = DEFAULT_GRACEFUL_TIMEOUT,
) -> None:
    """Serve ``app`` (built by :func:`build_app` for ``host``) until SIGINT or SIGTERM.

    One worker runs ``app`` itself; several each run :func:`create_app` on ``app``'s config
    file, so each process has its own event loop, connections and caches.
    """
    import uvicorn

    from promptdock.proxy._http_server import HttpProtocol

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "lifespan": "on",
        "access_log": False,  # promptdock writes its own, with prompt provenance
        "log_config": log_config(log_level),
        "log_level": log_level,
        "timeout_graceful_shutdown": graceful_timeout,
        "server_header": False,
        # No WebSocket routes: skipping the protocol's import saves start-up time.
        "ws": "none",
        # promptdock's own HTTP/1.1 protocol: a fraction of the CPU of uvicorn's per request.
        "http": HttpProtocol,
    }
    if workers <= 1:
        uvicorn.run(app, **options)
        return
    os.environ[CONFIG_ENV] = os.path.abspath(app.config.path)
    os.environ[HOST_ENV] = host
    os.environ[FORMAT_ENV] = access_log_format
    # Where the workers tell each other about webhook pushes (see proxy.events).
    with tempfile.TemporaryDirectory(prefix="promptdock-proxy-") as folder:
        os.environ[EVENTS_ENV] = folder
        uvicorn.run("promptdock.proxy.server:create_app", factory=True, workers=workers, **options)
