"""What every router shares: the URL's settings, the registered scripts, opening a connection to a node, and
the pause between retries of a command that did not run."""

from __future__ import annotations

import asyncio
import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ._redis_url import RedisUrl
from ._resp import Arg, PipelinedConnection, ReplyError

#: First pause before retrying a command that did not run (TRYAGAIN, CLUSTERDOWN, no primary yet); it doubles
#: up to ``MAX_BACKOFF``.
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 0.5


def reply_kind(exc: ReplyError) -> str:
    """The error reply's code: ``MOVED``, ``NOSCRIPT``, ``READONLY``…"""
    return str(exc).split(" ", 1)[0]


async def pause_before_retry(attempt: int, deadline: float) -> bool:
    """Sleep before retry number ``attempt`` (0, 1, …); False, without sleeping, if ``deadline`` leaves no time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    await asyncio.sleep(min(FIRST_BACKOFF * 2**attempt, MAX_BACKOFF, remaining))
    return deadline > time.monotonic()


class RouterBase(ABC):
    """A router: sends each command to the node that serves its key (see ``_router.RedisRouter``)."""

    def __init__(self, url: RedisUrl) -> None:
        self.url = url
        #: The URL with its passwords hidden, for messages.
        self.description = url.description
        self._ssl = url.ssl_context()
        self._scripts: dict[str, str] = {}

    def register_script(self, source: str) -> str:
        """Remember a Lua script; returns its SHA1 for ``EVALSHA``. Loaded wherever a node lacks it."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return sha

    @abstractmethod
    async def start(self) -> None:
        """Connect (discover the primary, load the slot map) and check that Redis answers."""

    @abstractmethod
    async def execute(self, key: str | None, *args: Arg, timeout: float | None = None) -> Any:
        """Run one command on the node that serves ``key`` (any primary when None)."""

    @abstractmethod
    async def each_primary(self, *args: Arg) -> list[Any]:
        """Run one command on every primary; their replies."""

    @abstractmethod
    def scan(self, match: str, *, type_: str, count: int = 1000) -> AsyncIterator[list[str]]:
        """Every key matching ``match`` of type ``type_`` on every primary, a batch at a time."""

    @abstractmethod
    async def close(self) -> None:
        """Close every connection and stop background work."""

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.url.reply_timeout if timeout is None else timeout)

    async def _open_node(
        self,
        host: str | None,
        port: int,
        *,
        path: str | None = None,
        select_db: bool = True,
        extra: Sequence[Sequence[Arg]] = (),
        for_writes: bool = True,
    ) -> PipelinedConnection:
        """A connection to a data node, authenticated (and on the URL's database unless ``select_db`` is False),
        after running ``extra`` commands (their replies end ``handshake_replies``; PING without any), all within
        the connect timeout; ``for_writes`` arms WAIT when the URL asks for replica acknowledgements."""
        url = self.url
        handshake: list[Sequence[Arg]] = []
        if (auth := url.auth()) is not None:
            handshake.append(auth)
        if select_db and url.db:
            handshake.append(("SELECT", url.db))
        handshake.extend(extra)
        if not handshake:
            # A server that accepts connections but is frozen must fail the connect, not the first call.
            handshake.append(("PING",))
        return await PipelinedConnection.connect(
            host=host, port=port, path=path, ssl_context=self._ssl, connect_timeout=url.connect_timeout,
            reply_timeout=url.reply_timeout, handshake=handshake,
            wait_replicas=url.wait_replicas if for_writes else 0, wait_timeout_ms=url.wait_timeout_ms,
        )

    async def _load_and_run(self, conn: PipelinedConnection, args: Sequence[Arg], timeout: float | None) -> Any:
        """After NOSCRIPT (a restart or SCRIPT FLUSH emptied the node's script cache; the script did not run):
        load the script and run it, in one write."""
        replies: tuple[Any, ...] = await asyncio.gather(
            conn.execute("SCRIPT", "LOAD", self._script_source(args), timeout=timeout),
            conn.execute(*args, timeout=timeout),
            return_exceptions=True,
        )
        for reply in replies:  # a failed load first: the command's NOSCRIPT would hide why
            if isinstance(reply, BaseException):
                raise reply
        return replies[1]

    def _script_source(self, args: Sequence[Arg]) -> str:
        """The source of the script ``EVALSHA`` ``args`` call."""
        sha = args[1]
        source = self._scripts.get(sha.decode() if isinstance(sha, bytes) else str(sha))
        if source is None:
            raise ReplyError(f"NOSCRIPT no script with SHA {sha!r} was registered with the router")
        return source
