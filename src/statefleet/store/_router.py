"""Where each Redis command goes: the node that serves its key, over one pipelined connection per node.

The Redis store sends every command through a :class:`RedisRouter` with the key it is about (``execute(key,
*args)``); the router picks the node and hands the command to that node's
:class:`~statefleet.store._resp.PipelinedConnection`, so commands issued in one event-loop iteration for one
node travel in one write.

Errors a caller sees:

- ``ReplyError``: Redis answered with an error. Replies that say "not executed, ask elsewhere or later"
  (``MOVED``, ``ASK``, ``NOSCRIPT``, …) are handled here and never reach the caller unless they persist.
- ``ConnectionClosed``: no reply within the timeout, or the connection dropped. The command may or may not have
  run: the caller decides (the engine resolves such commits through the message's receipt).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection

from ..errors import InvalidStoreUrl, StoreUnavailable
from . import redact_url
from ._resp import ConnectionClosed, PipelinedConnection, ReplyError

#: Seconds to wait for a connection, and for a reply, unless the URL sets
#: ``?socket_connect_timeout=`` / ``?socket_timeout=``.
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 5.0

Arg = str | bytes | int


def _ssl_context(kwargs: dict[str, Any], connection_class: type) -> ssl.SSLContext | None:
    """The TLS context for ``rediss://`` URLs (certificate checks as redis-py would do them), else None."""
    if not issubclass(connection_class, SSLConnection):
        return None
    context = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
    if kwargs.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if kwargs.get("ssl_certfile"):
        context.load_cert_chain(kwargs["ssl_certfile"], kwargs.get("ssl_keyfile"))
    return context


class RedisRouter:
    """One standalone Redis (``redis://`` / ``rediss://``): every key lives on the one node.

    The interface the store uses: ``open``, ``register_script``, ``execute``, ``each_primary``, ``scan``,
    ``close``, ``description``.
    """

    def __init__(self, url: str, kwargs: dict[str, Any], connection_class: type) -> None:
        #: The URL with its password hidden, for messages.
        self.description = redact_url(url)
        self._kwargs = kwargs
        self._ssl = _ssl_context(kwargs, connection_class)
        self._connect_timeout = float(kwargs.get("socket_connect_timeout") or CONNECT_TIMEOUT)
        self._reply_timeout = float(kwargs.get("socket_timeout") or REPLY_TIMEOUT)
        self._scripts: dict[str, str] = {}
        self._conn: PipelinedConnection | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    async def open(cls, url: str) -> RedisRouter:
        """Parse ``url``, connect and check that the server answers (``StoreUnavailable`` if not)."""
        try:
            client = Redis.from_url(url)
        except ValueError as exc:
            raise InvalidStoreUrl(f"store URL {redact_url(url)!r} is not a valid Redis URL: {exc}") from exc
        pool = client.connection_pool
        router = cls(url, dict(pool.connection_kwargs), pool.connection_class)
        try:
            await router.execute(None, "PING")
        except (ConnectionClosed, ReplyError) as exc:
            raise StoreUnavailable(
                f"cannot reach the Redis store at {router.description}: {exc}; check the URL, the password "
                "and that Redis 7+ is running"
            ) from exc
        return router

    def register_script(self, source: str) -> str:
        """Remember a Lua script; returns its SHA1 for ``EVALSHA``. Loaded wherever a node lacks it."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return sha

    async def execute(self, key: str | None, *args: Arg) -> Any:
        """Run one command on the node that serves ``key`` (any primary when None)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect()
        try:
            return await conn.execute(*args)
        except ReplyError as exc:
            if not (args[0] == "EVALSHA" and str(exc).startswith("NOSCRIPT")):
                raise
        # The server lost its scripts (restart, SCRIPT FLUSH): load this one, then run it (it did not run).
        await conn.execute("SCRIPT", "LOAD", self._scripts[str(args[1])])
        return await conn.execute(*args)

    async def each_primary(self, *args: Arg) -> list[Any]:
        """Run one command on every primary (here: the one node); their replies."""
        return [await self.execute(None, *args)]

    async def scan(self, match: str, *, type_: str, count: int = 1000) -> AsyncIterator[list[str]]:
        """Every key matching ``match`` of type ``type_`` on every primary, a batch at a time (SCAN semantics:
        a key present for the whole scan is seen at least once)."""
        cursor = "0"
        while True:
            cursor, keys = await self.execute(None, "SCAN", cursor, "MATCH", match, "COUNT", count, "TYPE", type_)
            if keys:
                yield keys
            if cursor == "0":
                return

    async def _connect(self) -> PipelinedConnection:
        async with self._connecting:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            kwargs = self._kwargs
            try:
                conn = await PipelinedConnection.connect(
                    host=kwargs.get("host"), port=int(kwargs.get("port", 6379)), path=kwargs.get("path"),
                    ssl_context=self._ssl, connect_timeout=self._connect_timeout, reply_timeout=self._reply_timeout,
                )
            except (OSError, TimeoutError) as exc:
                raise ConnectionClosed(f"cannot connect to Redis: {exc}") from exc
            if kwargs.get("password"):
                auth = [kwargs["username"], kwargs["password"]] if kwargs.get("username") else [kwargs["password"]]
                await conn.execute("AUTH", *auth)
            if int(kwargs.get("db", 0) or 0):
                await conn.execute("SELECT", int(kwargs["db"]))
            self._conn = conn
            return conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
