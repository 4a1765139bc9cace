"""One Redis server (``redis://``, ``rediss://``, ``unix://``): every key lives on the one node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ._redis_url import RedisUrl
from ._resp import Arg, PipelinedConnection, ReplyError
from ._routing import RouterBase, reply_kind


class StandaloneRouter(RouterBase):
    """Every command over one pipelined connection, reopened (once per call) when it closed."""

    def __init__(self, url: RedisUrl) -> None:
        super().__init__(url)
        self._conn: PipelinedConnection | None = None
        self._connecting = asyncio.Lock()

    async def start(self) -> None:
        await self.execute(None, "PING")

    async def execute(self, key: str | None, *args: Arg, timeout: float | None = None) -> Any:
        # The hot path: as little as possible between the caller and the pipelined write.
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect(timeout)
        try:
            return await conn.execute(*args, timeout=timeout)
        except ReplyError as exc:
            return await self._after_error_reply(exc, conn, args, timeout)

    async def _after_error_reply(
        self, exc: ReplyError, conn: PipelinedConnection, args: Sequence[Arg], timeout: float | None
    ) -> Any:
        """The result of a command Redis refused with ``exc``: run again if it did not run and can now, else raise."""
        if args[0] == "EVALSHA" and reply_kind(exc) == "NOSCRIPT":
            return await self._load_and_run(conn, args, timeout)
        raise exc

    async def _connect(self, timeout: float | None) -> PipelinedConnection:
        """The connection to use, opened if there is none (one attempt, within the connect timeout)."""
        async with self._connecting:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            url = self.url
            host, port = url.hosts[0] if url.hosts else (None, 0)
            self._conn = await self._open_node(host, port, path=url.path)
            return self._conn

    async def each_primary(self, *args: Arg) -> list[Any]:
        return [await self.execute(None, *args)]

    async def scan(self, match: str, *, type_: str, count: int = 1000) -> AsyncIterator[list[str]]:
        """SCAN semantics: a key present for the whole scan is seen at least once."""
        cursor = "0"
        while True:
            cursor, keys = await self.execute(None, "SCAN", cursor, "MATCH", match, "COUNT", count, "TYPE", type_)
            if keys:
                yield keys
            if cursor == "0":
                return

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
