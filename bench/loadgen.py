"""A lean HTTP/1.1 load generator on raw asyncio: keep-alive connections, one request in flight
per connection, a fixed number of requests.

On a 2-core machine the load generator shares the CPU with the servers it measures, so its
own cost per request caps what a fast server can show: a full HTTP client library spends a few
hundred microseconds of CPU per request, this one a few tens. Requests are prebuilt bytes;
responses are parsed only as far as the status, ``Content-Length`` or chunked framing, and
``Connection: close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import cast

__all__ = ["LoadResult", "close_all", "http_request", "open_connections", "run"]


@dataclass(frozen=True)
class LoadResult:
    """What a batch of requests did.

    :ivar latencies: seconds per successful (status 200) request, in completion order.
    :ivar errors: requests that failed, got another status or were not sent in time.
    :ivar elapsed: seconds from the first request to the last answer.
    """

    latencies: list[float]
    errors: int
    elapsed: float


def http_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one keep-alive ``POST``."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`exchange` sends a request and waits for its answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = self._complete()
        if status is not None and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def _complete(self) -> int | None:
        """The status once a whole response is buffered (and drop it), else ``None``."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        if at >= 0:
            line_end = head.find(b"\r\n", at)
            length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return None
        elif b"transfer-encoding: chunked" in head:
            done = self.buffer.find(b"\r\n0\r\n\r\n", end)
            if done < 0:
                return None
            total = done + 7
        else:
            return None  # no framing: read until close (not used by the servers measured)
        self.closing = b"connection: close" in head
        del self.buffer[:total]
        return int(head[9:12])

    async def exchange(self, request: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


async def _connect(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, host, port)
    return protocol


async def run(
    host: str,
    port: int,
    request: bytes,
    count: int,
    concurrency: int,
    timeout: float,
    keep: list[_Connection] | None = None,
) -> LoadResult:
    """Send ``request`` ``count`` times over ``concurrency`` connections; stop at ``timeout``.

    :param keep: open connections to reuse, as a client with a connection pool would; the
        connections still open at the end are left in it, open. Without it, every run opens
        its own and closes them at the end.
    """
    remaining = count
    latencies: list[float] = []
    errors = 0
    connections: list[_Connection] = []
    idle = [c for c in keep if c.transport is not None and not c.closing] if keep else []

    async def worker() -> None:
        nonlocal remaining, errors
        connection: _Connection | None = idle.pop() if idle else None
        if connection is not None:
            connections.append(connection)
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                if connection is None or connection.transport is None or connection.closing:
                    connection = await _connect(host, port)
                    connections.append(connection)
                status = await connection.exchange(request)
            except (OSError, ValueError):
                connection = None
                errors += 1
                continue
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except TimeoutError:
        errors += remaining + sum(1 for c in connections if c.waiter and not c.waiter.done())
        remaining = 0
    elapsed = time.perf_counter() - started
    if keep is not None:
        keep[:] = [c for c in (*connections, *idle) if c.transport is not None and not c.closing]
        return LoadResult(latencies, errors, elapsed)
    for connection in connections:
        if connection.transport is not None:
            with contextlib.suppress(RuntimeError):
                connection.transport.close()
    return LoadResult(latencies, errors, elapsed)


async def open_connections(host: str, port: int, keep: list[_Connection], count: int) -> None:
    """Make ``keep`` hold ``count`` open connections (dropping closed ones), before a timed
    run: a pooled client in steady state has them, and connecting is not the server's
    per-request cost."""
    keep[:] = [c for c in keep if c.transport is not None and not c.closing]
    missing = count - len(keep)
    if missing > 0:
        keep.extend(await asyncio.gather(*(_connect(host, port) for _ in range(missing))))


def close_all(connections: list[_Connection]) -> None:
    """Close the connections a run kept (see ``keep``)."""
    for connection in connections:
        if connection.transport is not None:
            with contextlib.suppress(RuntimeError):
                connection.transport.close()
    connections.clear()
