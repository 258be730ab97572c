"""pytest fixtures around the local test servers (registered from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.openai_server import OpenAIServer

# -- OpenAI-compatible upstream ----------------------------------------------------------


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A started :class:`~tests.support.openai_server.OpenAIServer`, closed after the test.

    Its ``base_url`` (``http://127.0.0.1:PORT/v1``) is what a client's ``api_base`` should be.
    """
    with OpenAIServer() as server:
        yield server
