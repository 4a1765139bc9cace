"""A primary found through Redis Sentinel (``redis+sentinel://``, ``rediss+sentinel://``).

The sentinels are asked in turn for the master's address (``SENTINEL get-master-addr-by-name``); the node they
name must say ``ROLE`` master before it is used. The primary is looked for again — one search at a time, with a
growing pause between rounds, never a busy loop — when its connection drops, when it answers ``READONLY`` or
``MASTERDOWN`` (it was demoted), and when the sentinel, asked every ``CHECK_EVERY`` seconds, names another node
(a failover the old primary, still answering, would not reveal).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from ._redis_url import RedisUrl
from ._resp import Arg, ConnectionClosed, PipelinedConnection, ReplyError
from ._routing import pause_before_retry, reply_kind
from ._standalone import StandaloneRouter

logger = logging.getLogger(__name__)

#: Seconds between two checks of the primary's address with a sentinel.
CHECK_EVERY = 2.0
#: Error replies of a node that is no longer the primary: the command did not run.
DEMOTED = frozenset({"READONLY", "MASTERDOWN"})
#: Longest pause between two rounds of asking the sentinels.
MAX_DISCOVERY_PAUSE = 1.0


class SentinelRouter(StandaloneRouter):
    """Like one server, on whichever node the sentinels say is the primary of ``master_name``."""

    def __init__(self, url: RedisUrl) -> None:
        super().__init__(url)
        assert url.master_name is not None
        self._master = url.master_name
        #: The sentinels, the one that last answered first.
        self._sentinels = list(url.hosts)
        self._sentinel: PipelinedConnection | None = None
        #: One question to the sentinels at a time (the search and the periodic check share the connection).
        self._asking = asyncio.Lock()
        #: The primary's address, as the sentinel named it.
        self._primary: tuple[str, int] | None = None
        self._discovery: asyncio.Task[PipelinedConnection] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None

    async def start(self) -> None:
        self._watch = asyncio.create_task(self._watch_sentinel(), name=f"statefleet-sentinel-watch-{self._master}")
        await self.execute(None, "PING")

    # -- finding the primary -------------------------------------------------------------------------------

    async def _connect(self, timeout: float | None) -> PipelinedConnection:
        """The primary's connection, waiting (within the call's timeout) for a search if there is none."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        budget = self.url.reply_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(budget):
                # Shielded: a caller giving up does not stop the search the others wait for.
                return await asyncio.shield(self._search())
        except TimeoutError:
            raise ConnectionClosed(
                f"no primary for master {self._master!r} found through the sentinels within {budget:g} s: "
                f"{self._last_error or 'still looking'}"
            ) from None

    def _search(self) -> asyncio.Task[PipelinedConnection]:
        """The search for the primary under way, started if there is none."""
        task = self._discovery
        if task is None or task.done():
            task = self._discovery = asyncio.create_task(self._discover(), name=f"statefleet-sentinel-{self._master}")
        return task

    async def _discover(self) -> PipelinedConnection:
        """Ask the sentinels, round after round, until one names a node that says it is the primary."""
        attempt = 0
        while True:
            try:
                conn, address = await self._ask_sentinels()
            except (ConnectionClosed, ReplyError) as exc:
                self._last_error = exc
                logger.warning("looking for the primary of %r: %s", self._master, exc)
                await asyncio.sleep(min(MAX_DISCOVERY_PAUSE, 0.05 * 2**attempt))
                attempt += 1
                continue
            old, self._conn = self._conn, conn
            if old is not None:
                old.retire("the sentinels named a new primary")
            if self._primary is not None and self._primary != address:
                logger.warning("the primary of %r moved from %s:%s to %s:%s", self._master, *self._primary, *address)
            self._primary = address
            self._last_error = None
            return conn

    async def _ask_sentinels(self) -> tuple[PipelinedConnection, tuple[str, int]]:
        """One round: each sentinel in turn until one names a node that says ROLE master."""
        problems = []
        for sentinel in list(self._sentinels):
            try:
                address = await self._ask_sentinel(sentinel)
            except (ConnectionClosed, ReplyError) as exc:
                problems.append(f"sentinel {sentinel[0]}:{sentinel[1]}: {exc}")
                continue
            if address is None:
                problems.append(f"sentinel {sentinel[0]}:{sentinel[1]} knows no master named {self._master!r}")
                continue
            try:
                conn = await self._open_node(*address, extra=[("ROLE",)])
            except (ConnectionClosed, ReplyError) as exc:
                problems.append(f"{address[0]}:{address[1]}, named by sentinel {sentinel[0]}:{sentinel[1]}: {exc}")
                continue
            role = conn.handshake_replies[-1]
            if not role or role[0] != "master":
                conn.close()
                problems.append(f"{address[0]}:{address[1]}, named by sentinel {sentinel[0]}:{sentinel[1]}, "
                                f"says it is a {role[0] if role else 'nothing'}, not the primary")
                continue
            return conn, address
        raise ConnectionClosed("; ".join(problems))

    async def _ask_sentinel(self, sentinel: tuple[str, int]) -> tuple[str, int] | None:
        """The master's address according to ``sentinel`` (kept as the one to ask first), None if it knows none."""
        async with self._asking:
            return await self._ask_sentinel_now(sentinel)

    async def _ask_sentinel_now(self, sentinel: tuple[str, int]) -> tuple[str, int] | None:
        conn = self._sentinel
        if conn is None or conn.closed or self._sentinels[0] != sentinel:
            if conn is not None:
                conn.close()
            self._sentinel = None
            auth = self.url.auth(sentinel=True)
            conn = await PipelinedConnection.connect(
                host=sentinel[0], port=sentinel[1], ssl_context=self._ssl, connect_timeout=self.url.connect_timeout,
                reply_timeout=self.url.connect_timeout, handshake=[auth] if auth else [("PING",)],
            )
            self._sentinels.remove(sentinel)
            self._sentinels.insert(0, sentinel)
            self._sentinel = conn
        reply = await conn.execute("SENTINEL", "get-master-addr-by-name", self._master)
        if not reply:
            return None
        return str(reply[0]), int(reply[1])

    async def _watch_sentinel(self) -> None:
        """Every ``CHECK_EVERY`` seconds, ask a sentinel where the primary is; move if it moved."""
        while True:
            await asyncio.sleep(CHECK_EVERY)
            try:
                await self._check_primary()
            except Exception:  # a failed check must not end the checks
                logger.exception("checking the primary of %r with the sentinels failed", self._master)

    async def _check_primary(self) -> None:
        if self._primary is None or (self._discovery is not None and not self._discovery.done()):
            return
        address: tuple[str, int] | None = None
        for sentinel in list(self._sentinels):
            try:
                address = await self._ask_sentinel(sentinel)
                break
            except (ConnectionClosed, ReplyError):
                continue  # the next one; and the next check, if none answers
        if address is not None and address != self._primary:
            logger.warning("sentinel names %s:%s as the primary of %r, not %s:%s: switching",
                           *address, self._master, *self._primary)
            if self._conn is not None:
                self._conn.retire("the sentinel names another primary")
            self._search()

    # -- a demoted primary ---------------------------------------------------------------------------------

    async def _after_error_reply(
        self, exc: ReplyError, conn: PipelinedConnection, args: Sequence[Arg], timeout: float | None
    ) -> Any:
        if reply_kind(exc) not in DEMOTED:
            return await super()._after_error_reply(exc, conn, args, timeout)
        # The node is no longer the primary and did not run the command: find the new one and run it there.
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            if conn is self._conn:
                conn.retire(f"it answered {reply_kind(exc)}")
            remaining = deadline - time.monotonic()
            try:
                conn = await self._connect(remaining)
            except ConnectionClosed as lost:
                raise exc from lost
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise exc
            try:
                return await conn.execute(*args, timeout=remaining)
            except ReplyError as again:
                if reply_kind(again) not in DEMOTED:
                    return await super()._after_error_reply(again, conn, args, remaining)
                exc = again
            if not await pause_before_retry(min(attempt, 3), deadline):
                raise exc
            attempt += 1

    async def close(self) -> None:
        tasks = [task for task in (self._watch, self._discovery) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sentinel is not None:
            self._sentinel.close()
        await super().close()

