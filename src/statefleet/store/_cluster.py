"""A Redis Cluster (``redis+cluster://``, ``rediss+cluster://``): each key to the primary of its hash slot.

The slot map comes from ``CLUSTER SLOTS``, asked of any node that answers (known nodes first, then the URL's
seeds); there is one pipelined connection per primary. Replies that say the command did not run are handled
here:

- ``MOVED slot host:port``: the slot lives elsewhere now. That slot is updated, a full map refresh is scheduled
  (one at a time, at most one per ``REFRESH_EVERY`` seconds) and the command goes to the new node.
- ``ASK slot host:port``: the slot is migrating; ``ASKING`` and the command go to that node in one write (the
  map is unchanged).
- ``TRYAGAIN`` (a multi-key command during a migration) and ``CLUSTERDOWN``: retried after a growing pause until
  the call's timeout, then the last error is raised.
- ``NOSCRIPT``: the script is loaded on that node and the command resent.

A connection that drops fails its calls with ``ConnectionClosed`` (they may have run) and makes the map
refreshed (a replica may have been promoted); a call that cannot connect to its node (so did not run) waits
for the refreshed map, within its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ._redis_url import RedisUrl
from ._resp import Arg, ConnectionClosed, PipelinedConnection, ReplicaAckMissing, ReplyError
from ._routing import RouterBase, pause_before_retry, reply_kind

logger = logging.getLogger(__name__)

#: At most one slot-map refresh per this many seconds (MOVED storms during a reshard ask for many).
REFRESH_EVERY = 0.25
#: Redirections in a row after which a call pauses between tries (a map in flux must not make a busy loop).
FREE_REDIRECTS = 3
#: Error replies after which the same command is tried again later (it did not run).
RETRY_LATER = frozenset({"TRYAGAIN", "CLUSTERDOWN"})

Address = tuple[str, int]


class _Node:
    """A cluster node and its pipelined connection (opened on first use)."""

    __slots__ = ("address", "conn", "connecting")

    def __init__(self, address: Address) -> None:
        self.address = address
        self.conn: PipelinedConnection | None = None
        self.connecting = asyncio.Lock()

    def __repr__(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


class ClusterRouter(RouterBase):
    """Commands by hash slot to the slot's primary."""

    def __init__(self, url: RedisUrl) -> None:
        super().__init__(url)
        self._nodes: dict[Address, _Node] = {}
        #: The primary of each slot; None until the first map (and for slots no node serves).
        self._slots: list[_Node | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._primaries: list[_Node] = []
        #: Every node the last map named, replicas included: where to ask for the next map.
        self._known: list[Address] = []
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = -REFRESH_EVERY

    async def start(self) -> None:
        await self._load_slot_map()
        await self.execute(None, "PING")

    # -- commands ------------------------------------------------------------------------------------------

    async def execute(self, key: str | None, *args: Arg, timeout: float | None = None) -> Any:
        slot = 0 if key is None else key_slot(key.encode())
        node = self._slots[slot]
        conn = None if node is None else node.conn
        if conn is None or conn.closed:
            return await self._execute_with_retries(slot, args, timeout, None)
        try:
            return await conn.execute(*args, timeout=timeout)
        except ReplyError as exc:
            return await self._execute_with_retries(slot, args, timeout, exc)
        except ConnectionClosed as exc:
            if not isinstance(exc, ReplicaAckMissing):
                self._refresh_soon()  # the node may be gone and its replica promoted
            raise

    async def _execute_with_retries(
        self, slot: int, args: Sequence[Arg], timeout: float | None, error: ReplyError | None
    ) -> Any:
        """Run the command on the slot's primary, following redirections and retrying what did not run, until
        the call's deadline (then the last error)."""
        deadline = self._deadline(timeout)
        tries = 0  # redirections or retries so far
        ask: _Node | None = None  # ASK: the node to send this one command to
        load_script = False
        last: BaseException | None = error
        while True:
            if error is not None:
                kind = reply_kind(error)
                if kind == "MOVED":
                    moved, address = _redirection(error)
                    self._slots[moved] = self._node(address)
                    self._refresh_soon()
                elif kind == "ASK":
                    ask = self._node(_redirection(error)[1])
                elif kind == "NOSCRIPT" and args[0] == "EVALSHA" and not load_script:
                    load_script = True
                elif kind in RETRY_LATER:
                    if kind == "CLUSTERDOWN":
                        self._refresh_soon()
                    if not await pause_before_retry(tries, deadline):
                        raise error
                else:
                    raise error
                if kind in ("MOVED", "ASK") and tries >= FREE_REDIRECTS and not await pause_before_retry(
                    tries - FREE_REDIRECTS, deadline
                ):
                    raise error
                tries += 1
                error = None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise last or ConnectionClosed(f"no node serves slot {slot} in {self.description}")
            node = ask or self._slots[slot]
            try:
                conn = await self._connection(node)
            except ConnectionClosed as exc:
                # Nothing was sent: wait for a map that names a node that answers.
                last = exc
                ask = None
                if not await pause_before_retry(min(tries, 3), deadline):
                    raise
                await self._refresh_now_within(deadline)
                tries += 1
                continue
            prefix = []
            if load_script:
                prefix.append(conn.execute("SCRIPT", "LOAD", self._script_source(args), timeout=remaining))
            if ask is not None:
                prefix.append(conn.execute("ASKING", timeout=remaining))
            reply = conn.execute(*args, timeout=remaining)
            ask = None
            for future in prefix:  # they share the command's write; their errors are the command's too
                try:
                    await future
                except BaseException:
                    reply.cancel()
                    raise
            try:
                return await reply
            except ReplyError as exc:
                error = last = exc
            except ConnectionClosed as exc:
                if not isinstance(exc, ReplicaAckMissing):
                    self._refresh_soon()
                raise

    async def _connection(self, node: _Node | None) -> PipelinedConnection:
        """The node's connection, opened if needed (within the connect timeout; ``ConnectionClosed`` if it cannot
        be)."""
        if node is None:
            raise ConnectionClosed(f"no node of {self.description} serves this slot (yet)")
        conn = node.conn
        if conn is not None and not conn.closed:
            return conn
        async with node.connecting:
            conn = node.conn
            if conn is not None and not conn.closed:
                return conn
            if conn is not None:
                self._refresh_soon()  # it dropped: the slot may have moved to a promoted replica
            node.conn = await self._open_node(*node.address, select_db=False)
            return node.conn

    def _node(self, address: Address) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = _Node(address)
        return node

    async def each_primary(self, *args: Arg) -> list[Any]:
        return list(await asyncio.gather(*[self._run_on(node, args) for node in self._primaries]))

    async def _run_on(self, node: _Node, args: Sequence[Arg]) -> Any:
        conn = await self._connection(node)
        try:
            return await conn.execute(*args)
        except ReplyError as exc:
            if args[0] == "EVALSHA" and reply_kind(exc) == "NOSCRIPT":
                return await self._load_and_run(conn, args, None)
            raise

    async def scan(self, match: str, *, type_: str, count: int = 1000) -> AsyncIterator[list[str]]:
        """Each primary's keyspace in turn, over the connection the scan started with: if it drops, the node's
        cursor means nothing elsewhere, so ``ConnectionClosed``. A key moved between nodes during the scan
        (resharding) may be missed."""
        for node in list(self._primaries):
            conn = await self._connection(node)
            cursor = "0"
            while True:
                cursor, keys = await conn.execute("SCAN", cursor, "MATCH", match, "COUNT", count, "TYPE", type_)
                if keys:
                    yield keys
                if cursor == "0":
                    break

    # -- the slot map --------------------------------------------------------------------------------------

    def _refresh_soon(self) -> asyncio.Task[None]:
        """The map refresh under way, or a new one (not before ``REFRESH_EVERY`` after the last)."""
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.create_task(self._refresh(), name="statefleet-cluster-refresh")
        return task

    async def _refresh_now_within(self, deadline: float) -> None:
        """Wait (until ``deadline`` at most) for a map refresh."""
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await asyncio.wait([self._refresh_soon()], timeout=remaining)

    async def _refresh(self) -> None:
        wait = self._refreshed_at + REFRESH_EVERY - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await self._load_slot_map()
        except (ConnectionClosed, ReplyError) as exc:
            logger.warning("could not refresh the slot map of %s: %s", self.description, exc)
        finally:
            self._refreshed_at = time.monotonic()

    async def _load_slot_map(self) -> None:
        """Ask the nodes in turn (those connected first, then the others, then the seeds) for ``CLUSTER SLOTS``."""
        connected = [node.address for node in self._primaries if node.conn is not None and not node.conn.closed]
        candidates = list(dict.fromkeys([*connected, *self._known, *self.url.hosts]))
        problems = []
        for host, port in candidates:
            try:
                conn = await self._open_node(host, port, select_db=False, extra=[("CLUSTER", "SLOTS")],
                                             for_writes=False)
            except (ConnectionClosed, ReplyError) as exc:
                problems.append(f"{host}:{port}: {exc}")
                continue
            conn.close()
            ranges = conn.handshake_replies[-1]
            if ranges:
                self._apply_slot_map(ranges, host)
                return
            problems.append(f"{host}:{port}: no slots assigned")
        raise ConnectionClosed(f"no node of the cluster gave its slot map: {'; '.join(problems)}")

    def _apply_slot_map(self, ranges: list[list[Any]], asked: str) -> None:
        """Take ``CLUSTER SLOTS``'s answer; slots it does not cover keep their last known node."""
        slots = list(self._slots)
        known: list[Address] = []
        for start, end, *nodes in ranges:
            addresses = [(_host(entry[0], asked), int(entry[1])) for entry in nodes]
            known.extend(addresses)
            primary = self._node(addresses[0])
            slots[int(start) : int(end) + 1] = [primary] * (int(end) - int(start) + 1)
        self._slots = slots
        self._known = list(dict.fromkeys(known))
        primaries = list({id(node): node for node in slots if node is not None}.values())
        for node in set(self._primaries) - set(primaries):
            if node.conn is not None:
                node.conn.retire("the node is no longer a primary in the slot map")
        self._primaries = primaries

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        for node in self._nodes.values():
            if node.conn is not None:
                node.conn.close()


def _redirection(error: ReplyError) -> tuple[int, Address]:
    """``MOVED 3999 127.0.0.1:6381`` -> (3999, ("127.0.0.1", 6381))."""
    _, slot, target = str(error).split(" ", 2)
    host, _, port = target.rpartition(":")
    return int(slot), (host, int(port))


def _host(host: str, asked: str) -> str:
    # A node that does not know its own address reports "" (or "?"): it is the one we asked.
    return asked if host in ("", "?") else host
