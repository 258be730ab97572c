"""The OpenAI-compatible proxy behind ``promptdock serve --config config.yaml``.

A raw ASGI application (:class:`~promptdock.proxy.app.ProxyApp`) served by uvicorn, calling
upstreams through the async dispatcher (:mod:`promptdock.dispatch.openai_async`). Needs the
``[proxy]`` extra; nothing here is imported by ``import promptdock``.

Modules, each doing one thing:

- :mod:`~promptdock.proxy.app`: the ASGI application, routing and lifespan.
- :mod:`~promptdock.proxy.asgi`: ASGI types, reading request bodies within a limit, answers.
- :mod:`~promptdock.proxy.chat`: parsing a ``/v1/chat/completions`` request body.
- :mod:`~promptdock.proxy.routing`: ``model_list`` deployments resolved for serving.
- :mod:`~promptdock.proxy.completions`: the completion endpoint, plain and streaming.
- :mod:`~promptdock.proxy.catalog`: ``/v1/models`` and ``/v1/prompts``.
- :mod:`~promptdock.proxy.health`: liveliness and readiness.
- :mod:`~promptdock.proxy.auth`: the master key, team keys and the listen-address check.
- :mod:`~promptdock.proxy.errors`: errors in the OpenAI JSON shape, secrets scrubbed.
- :mod:`~promptdock.proxy.webhook`: the Bitbucket push webhook.
- :mod:`~promptdock.proxy.access_log`: one structured line per request.
- :mod:`~promptdock.proxy.server`: running it all under uvicorn.

See ``docs/proxy.md`` for what users see.
"""

from __future__ import annotations

__all__: list[str] = []
