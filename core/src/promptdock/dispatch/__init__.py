"""The built-in dispatchers, registered as ordinary plugins of the ``dispatch`` hook.

- :mod:`promptdock.dispatch.mock` (plugin name ``mock``): answers offline when a request
  carries ``mock_response`` or names a ``mock/...`` model.
- :mod:`promptdock.dispatch.openai_http` (plugin name ``openai``): posts to any
  OpenAI-compatible ``/chat/completions`` endpoint; registered ``trylast``, so it answers
  whatever no other dispatcher took.

Neither is imported here: the plugin manager imports them when it first loads plugins, and the
HTTP dispatcher imports ``requests`` only on its first call.
"""

from __future__ import annotations

__all__: list[str] = []
