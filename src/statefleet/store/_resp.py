"""A Redis connection on which the commands of concurrent callers travel together.

redis-py gives each concurrent call a connection of its own and a write and a read of its own; on a busy
instance that per-call cost, not Redis, is the ceiling. Here every command issued in one event-loop iteration
is written in one ``write`` on one connection, and replies (which Redis sends in order) resolve the callers'
futures in order: implicit pipelining. Parsing and packing are hiredis's.

Only the hot path (script calls) goes through this; everything else uses redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any, cast

import hiredis


class ReplyError(Exception):
    """Redis answered a command with an error."""


class ConnectionClosed(ConnectionError):
    """The connection closed (or timed out) before the reply came."""


class PipelinedConnection(asyncio.Protocol):
    """One connection; ``execute`` may be called by many tasks at once."""

    def __init__(self, reply_timeout: float) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", errors="surrogatepass", notEnoughData=False)
        self._waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outbox: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._closed: BaseException | None = None
        self._reply_timeout = reply_timeout
        #: How often the oldest waiting reply is checked against ``reply_timeout``.
        self._watch_every = min(1.0, reply_timeout / 4)
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    async def connect(
        cls,
        *,
        host: str | None = None,
        port: int = 6379,
        path: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float,
        reply_timeout: float,
    ) -> PipelinedConnection:
        loop = asyncio.get_running_loop()
        protocol = cls(reply_timeout)
        if path is not None:
            coro = loop.create_unix_connection(lambda: protocol, path)
        else:
            coro = loop.create_connection(lambda: protocol, host or "127.0.0.1", port, ssl=ssl_context)
        async with asyncio.timeout(connect_timeout):
            await coro
        return protocol

    # -- asyncio.Protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._watchdog = self._loop.call_later(self._watch_every, self._check_timeouts)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        while (reply := reader.gets()) is not False:
            future = waiters.popleft()[0]
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(ReplyError(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionClosed(f"connection to Redis lost: {exc or 'closed'}"))

    # -- use -----------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def execute(self, *args: str | bytes | int) -> asyncio.Future[Any]:
        """Send one command; the future resolves with its reply (``ReplyError`` on an error reply)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._closed is not None:
            future.set_exception(self._closed)
            return future
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(hiredis.pack_command(args))  # type: ignore[arg-type]
        self._waiters.append((future, time.monotonic()))
        return future

    def _flush(self) -> None:
        if self._transport is None or self._closed is not None:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._transport.write(data)

    def _check_timeouts(self) -> None:
        if self._closed is not None:
            return
        if self._waiters and time.monotonic() - self._waiters[0][1] > self._reply_timeout:
            self._fail(ConnectionClosed(f"Redis did not reply within {self._reply_timeout} s"))
            return
        self._watchdog = self._loop.call_later(self._watch_every, self._check_timeouts)

    def _fail(self, exc: BaseException) -> None:
        if self._closed is None:
            self._closed = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
        while self._waiters:
            future = self._waiters.popleft()[0]
            if not future.done():
                future.set_exception(self._closed)
        self._outbox.clear()
        if self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        self._fail(ConnectionClosed("connection closed by statefleet"))
