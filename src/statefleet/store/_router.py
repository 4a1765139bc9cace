"""Where each Redis command goes: the node that serves its key, over one pipelined connection per node.

The Redis store sends every command through a :class:`RedisRouter` with the key it is about (``execute(key,
*args)``); the router picks the node and hands the command to that node's
:class:`~statefleet.store._resp.PipelinedConnection`, so commands issued in one event-loop iteration for one
node travel in one write. ``RedisRouter.open(url)`` picks the shape by scheme (see ``_redis_url`` for the URL
syntax and options): one server (``redis://``, ``rediss://``, ``unix://``), a primary found through Sentinel
(``redis+sentinel://``, ``rediss+sentinel://``) or a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``).

Errors a caller sees:

- ``ReplyError``: Redis answered with an error. Replies that say "not executed, ask elsewhere or later"
  (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``, ``NOSCRIPT``, ``READONLY``, ``MASTERDOWN``) are handled
  here and reach the caller only if they persist past the call's timeout.
- ``ConnectionClosed``: no reply, or the connection dropped. The command may or may not have run: the caller
  decides (the engine resolves such commits through the message's receipt). Its subclasses say why:
  ``ReplyTimeout`` (no reply within the call's timeout) and ``ReplicaAckMissing`` (``wait_replicas``: written on
  the primary but not acknowledged by enough replicas in time, so a failover may lose it).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

from ..errors import InvalidStoreUrl, StoreUnavailable
from ._cluster import ClusterRouter
from ._redis_url import parse_redis_url
from ._resp import Arg, ConnectionClosed, ReplicaAckMissing, ReplyError, ReplyTimeout
from ._routing import RouterBase
from ._sentinel import SentinelRouter
from ._standalone import StandaloneRouter

__all__ = ["ConnectionClosed", "RedisRouter", "ReplicaAckMissing", "ReplyError", "ReplyTimeout"]


class _Execute(Protocol):
    def __call__(self, key: str | None, /, *args: Arg, timeout: float | None = None) -> Awaitable[Any]: ...


class RedisRouter:
    """The store's way to Redis, whatever its shape: ``open``, ``register_script``, ``execute``,
    ``each_primary``, ``scan``, ``close``, ``description``.

    >>> router = await RedisRouter.open("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    >>> sha = router.register_script(source)
    >>> await router.execute("conv:{t:1}", "EVALSHA", sha, 1, "conv:{t:1}", "arg")
    """

    #: Run one command on the node that serves ``key`` (any primary when None) and return its reply.
    #: ``timeout`` (seconds, default the URL's ``socket_timeout``) bounds the wait for the reply and any retry
    #: of a command that did not run (redirections, failover, NOSCRIPT). Scripts registered with
    #: ``register_script`` are loaded on any node that lacks them.
    execute: _Execute

    def __init__(self, implementation: RouterBase) -> None:
        self._router = implementation
        #: The URL with its passwords hidden, for messages.
        self.description = implementation.description
        # The implementation's own bound method: the hot path pays for no extra call.
        self.execute = implementation.execute

    @classmethod
    async def open(cls, url: str) -> RedisRouter:
        """Parse ``url`` (``InvalidStoreUrl`` if malformed), connect and check that Redis answers
        (``StoreUnavailable`` if not)."""
        parsed = parse_redis_url(url)
        shapes: dict[str, type[RouterBase]] = {
            "standalone": StandaloneRouter, "sentinel": SentinelRouter, "cluster": ClusterRouter,
        }
        try:
            router = shapes[parsed.shape](parsed)
        except (OSError, ssl.SSLError) as exc:  # the TLS files named by the URL
            raise InvalidStoreUrl(f"store URL {parsed.description!r}: cannot load its TLS files: {exc}") from exc
        try:
            await router.start()
        except (ConnectionClosed, ReplyError) as exc:
            await router.close()
            raise StoreUnavailable(
                f"cannot reach the Redis store at {parsed.description}: {exc}; check the URL, the password "
                "and that Redis 7+ is running"
            ) from exc
        except BaseException:
            await router.close()
            raise
        return cls(router)

    def register_script(self, source: str) -> str:
        """Remember a Lua script; returns its SHA1 for ``EVALSHA``. Loaded wherever a node lacks it."""
        return self._router.register_script(source)

    async def each_primary(self, *args: Arg) -> list[Any]:
        """Run one command on every primary; their replies (in no particular order)."""
        return await self._router.each_primary(*args)

    def scan(self, match: str, *, type_: str, count: int = 1000) -> AsyncIterator[list[str]]:
        """Every key matching ``match`` of type ``type_`` on every primary, a batch at a time (SCAN semantics:
        a key present on the same node for the whole scan is seen at least once). ``ConnectionClosed`` if a node
        fails mid-scan."""
        return self._router.scan(match, type_=type_, count=count)

    async def close(self) -> None:
        """Close every connection and stop background work (discovery, map refreshes)."""
        await self._router.close()
