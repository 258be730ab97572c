"""The built-in dispatchers, registered as ordinary plugins of the ``dispatch`` hooks.

- :mod:`promptdock.dispatch.mock` (plugin name ``mock``): answers offline, sync and async,
  when a request carries ``mock_response`` or names a ``mock/...`` model.
- :mod:`promptdock.dispatch.openai_http` (plugin name ``openai``): posts to any
  OpenAI-compatible ``/chat/completions`` endpoint with ``requests``; registered ``trylast``,
  so it answers whatever no other dispatcher took.
- :mod:`promptdock.dispatch.openai_async` (plugin name ``openai-async``): the same for async
  callers and the proxy (``adispatch``), on pooled keep-alive connections
  (:mod:`~promptdock.dispatch._async_http`); it declines when httptools (the ``[proxy]``
  extra) is not installed.
- ``_async_http``: the small HTTP/1.1 client of the async dispatcher.
- ``_openai_wire``: what the two HTTP dispatchers share (request building, retry policy,
  error messages, server-sent events), so they differ only in how they move bytes.

None is imported here: the plugin manager imports them when it first loads plugins, and the
HTTP dispatchers import their client libraries only on first use.
"""

from __future__ import annotations

__all__: list[str] = []
