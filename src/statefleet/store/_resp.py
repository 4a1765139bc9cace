"""A Redis connection on which the commands of concurrent callers travel together.

redis-py gives each concurrent call a connection of its own and a write and a read of its own; on a busy
instance that per-call cost, not Redis, is the ceiling. Here every command issued in one event-loop iteration
is written in one ``write`` on one connection, and replies (which Redis sends in order) resolve the callers'
futures in order: implicit pipelining. Parsing and packing are hiredis's.

Timeouts are per call: a call whose reply is later than its deadline fails alone with ``ReplyTimeout`` and its
reply, when it comes, is discarded (its slot stays in the queue: replies come in order). A connection whose
oldest reply is ``dead_after`` seconds late is *retired*: ``closed`` turns True so that the router opens a new
one, and the old one closes itself once every call still waiting on it has been answered or has timed out.

With ``wait_replicas=N`` every write is followed by ``WAIT N timeout`` in the same write and the replies of the
batch are handed out only after WAIT's: if fewer than N replicas acknowledged, the batch fails with
``ReplicaAckMissing``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis

logger = logging.getLogger(__name__)

Arg = str | bytes | int

#: A connection whose oldest reply is this many reply timeouts late is retired (unless told otherwise).
DEAD_AFTER_TIMEOUTS = 3.0


class ReplyError(Exception):
    """Redis answered a command with an error."""


class ConnectionClosed(ConnectionError):
    """The connection closed (or timed out) before the reply came: the command may have run."""


class ReplyTimeout(ConnectionClosed):
    """No reply within the call's timeout: the command may have run (a late reply is discarded)."""


class ReplicaAckMissing(ConnectionClosed):
    """Written on the primary, but fewer replicas than required acknowledged it: a failover may lose it."""


#: A call waiting for its reply: its future (None for the WAIT that closes a batch), when it was issued (monotonic
#: seconds) and its own timeout (None: the connection's, so that the common call allocates nothing more).
_Waiter = tuple["asyncio.Future[Any] | None", float, "float | None"]


class PipelinedConnection(asyncio.Protocol):
    """One connection; ``execute`` may be called by many tasks at once.

    ``reply_timeout`` is each call's default deadline; ``dead_after`` (default three reply timeouts) retires the
    connection. ``wait_replicas`` > 0 makes every batch wait for that many replica acknowledgements (``WAIT``)
    for at most ``wait_timeout_ms``. ``address`` names the server in messages.
    """

    def __init__(
        self,
        reply_timeout: float,
        *,
        dead_after: float | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        address: str = "Redis",
    ) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", errors="surrogatepass", notEnoughData=False)
        self._waiters: deque[_Waiter] = deque()
        self._outbox: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        #: Why new calls fail at once (set when retired or lost); ``closed`` is True from then on.
        self._closed: BaseException | None = None
        #: The transport is gone and every waiter has failed.
        self._lost = False
        self._reply_timeout = reply_timeout
        self._dead_after = reply_timeout * DEAD_AFTER_TIMEOUTS if dead_after is None else dead_after
        #: The shortest timeout of any call so far: a waiter issued more recently than that cannot be late yet,
        #: so the watchdog's walk from the oldest waiter stops there.
        self._shortest = reply_timeout
        self._watch_every = self._watch_interval(reply_timeout)
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        self.address = address
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        #: The packed ``WAIT`` that closes every batch once armed (after the handshake); None: replies go out
        #: as they come.
        self._wait: bytes | None = None
        #: Replies of the current batch held until its WAIT reply: (future, issued, timeout, reply).
        self._held: list[tuple[asyncio.Future[Any], float, float | None, Any]] = []
        #: Replies to the handshake commands given to ``connect``, in order.
        self.handshake_replies: list[Any] = []

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
        handshake: Sequence[Sequence[Arg]] = (),
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        dead_after: float | None = None,
    ) -> PipelinedConnection:
        """Connect, run the ``handshake`` commands (AUTH, SELECT, ROLE…: one write, replies in
        ``handshake_replies``), then arm ``WAIT`` if asked; all within ``connect_timeout``.

        ``ConnectionClosed`` if the server cannot be reached in time; ``ReplyError`` if a handshake command fails.
        """
        loop = asyncio.get_running_loop()
        address = path if path is not None else f"{host or '127.0.0.1'}:{port}"
        protocol = cls(reply_timeout, dead_after=dead_after, wait_replicas=wait_replicas,
                       wait_timeout_ms=wait_timeout_ms, address=address)
        try:
            async with asyncio.timeout(connect_timeout):
                if path is not None:
                    await loop.create_unix_connection(lambda: protocol, path)
                else:
                    await loop.create_connection(lambda: protocol, host or "127.0.0.1", port, ssl=ssl_context)
                replies = await asyncio.gather(*[protocol.execute(*command) for command in handshake],
                                               return_exceptions=True)
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
            protocol.handshake_replies = list(replies)
        except TimeoutError as exc:
            protocol.close()
            raise ConnectionClosed(f"cannot connect to Redis at {address} within {connect_timeout:g} s") from exc
        except OSError as exc:  # includes ConnectionClosed, and ssl.SSLError for a refused certificate
            protocol.close()
            if isinstance(exc, ConnectionClosed):
                raise
            raise ConnectionClosed(f"cannot connect to Redis at {address}: {exc}") from exc
        except BaseException:
            protocol.close()
            raise
        if wait_replicas > 0:
            # Armed after the handshake: its commands write nothing, and a WAIT before AUTH would be refused.
            protocol._wait = hiredis.pack_command(("WAIT", wait_replicas, wait_timeout_ms))  # type: ignore[arg-type]
        return protocol

    @staticmethod
    def _watch_interval(timeout: float) -> float:
        """How often waiters are checked against their deadline: a late call fails within 1.25x its timeout."""
        return max(0.02, min(1.0, timeout / 4))

    # -- asyncio.Protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._watchdog = self._loop.call_later(self._watch_every, self._check_timeouts)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        if self._wait is not None:
            self._receive_acknowledged()
        else:
            waiters = self._waiters
            while (reply := reader.gets()) is not False:
                future = waiters.popleft()[0]
                if future is not None and not future.done():  # done: it timed out; its reply is dropped
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(ReplyError(str(reply)))
                    else:
                        future.set_result(reply)
        if self._closed is not None and not self._lost and self._settled():
            self._lose(self._closed)

    def _receive_acknowledged(self) -> None:
        """Replies of a batch are held until the WAIT that closes it says enough replicas have them."""
        reader = self._reader
        waiters = self._waiters
        held = self._held
        while (reply := reader.gets()) is not False:
            future, issued, timeout = waiters.popleft()
            if future is not None:
                if not future.done():
                    held.append((future, issued, timeout, reply))
                continue
            batch, held = held, []
            self._held = held
            if isinstance(reply, int) and reply >= self._wait_replicas:
                missing = None
            else:
                missing = ReplicaAckMissing(
                    f"written on the primary {self.address} but acknowledged by only "
                    f"{reply if isinstance(reply, int) else 0} of {self._wait_replicas} replicas within "
                    f"{self._wait_timeout_ms} ms{'' if isinstance(reply, int) else f' (WAIT failed: {reply})'}: "
                    "it may be lost if the primary fails"
                )
            for future, _, _, answer in batch:
                if future.done():
                    continue
                if isinstance(answer, hiredis.ReplyError):
                    # Refused: it wrote nothing that needs acknowledging (and MOVED, NOSCRIPT… must reach the router).
                    future.set_exception(ReplyError(str(answer)))
                elif missing is not None:
                    future.set_exception(missing)
                else:
                    future.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(ConnectionClosed(f"connection to Redis at {self.address} lost: {exc or 'closed'}"))

    # -- use -----------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once lost, closed or retired: open a new connection for new calls."""
        return self._closed is not None

    def execute(self, *args: Arg, timeout: float | None = None) -> asyncio.Future[Any]:
        """Send one command; the future resolves with its reply (``ReplyError`` on an error reply,
        ``ReplyTimeout`` after ``timeout`` seconds, default the connection's reply timeout)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._closed is not None:
            future.set_exception(self._closed)
            return future
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(hiredis.pack_command(args))  # type: ignore[arg-type]
        if timeout is not None and timeout < self._shortest:
            self._shortest = max(timeout, 0.001)
            self._watch_every = self._watch_interval(timeout)
        self._waiters.append((future, time.monotonic(), timeout))
        return future

    def retire(self, reason: str) -> None:
        """Take no new calls (``closed`` turns True); close once the calls in flight are answered or time out."""
        if self._closed is None:
            self._closed = ConnectionClosed(f"connection to Redis at {self.address} retired: {reason}")
            if self._settled():
                self._lose(self._closed)

    def close(self) -> None:
        """Close now: calls in flight fail with ``ConnectionClosed``."""
        self._lose(ConnectionClosed(f"connection to Redis at {self.address} closed by statefleet"))

    def _flush(self) -> None:
        if self._transport is None or self._lost or not self._outbox:
            return
        if self._wait is not None:
            self._outbox.append(self._wait)
            self._waiters.append((None, time.monotonic(), None))
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._transport.write(data)

    def _settled(self) -> bool:
        """No call waits on this connection any more (its remaining replies, if any, are for timed-out calls)."""
        # From the youngest: it is the likeliest to be still waiting, which ends the walk at once.
        return all(w[0] is None or w[0].done() for w in reversed(self._waiters)) and all(
            h[0].done() for h in self._held
        )

    def _check_timeouts(self) -> None:
        if self._lost:
            return
        now = time.monotonic()
        waiters = self._waiters
        horizon = now - self._shortest
        default = self._reply_timeout
        for future, issued, timeout in waiters:
            if issued > horizon:
                break  # this one and every younger one has time left
            if future is not None and now - issued >= (default if timeout is None else timeout) and not future.done():
                future.set_exception(self._timed_out(default if timeout is None else timeout))
        for future, issued, timeout, _ in self._held:
            if now - issued >= (default if timeout is None else timeout) and not future.done():
                future.set_exception(self._timed_out(default if timeout is None else timeout))
        if self._closed is None and waiters and now - waiters[0][1] > self._dead_after:
            logger.warning("no reply from Redis at %s for %.1f s: retiring the connection (new calls get a new one)",
                           self.address, now - waiters[0][1])
            self._closed = ConnectionClosed(
                f"connection to Redis at {self.address} retired: no reply for {self._dead_after:g} s"
            )
        if self._closed is not None and self._settled():
            self._lose(self._closed)
            return
        self._watchdog = self._loop.call_later(self._watch_every, self._check_timeouts)

    def _timed_out(self, timeout: float) -> ReplyTimeout:
        return ReplyTimeout(
            f"Redis at {self.address} did not reply within {timeout:.3g} s (socket_timeout or the call's timeout); "
            "the command may have run"
        )

    def _lose(self, exc: BaseException) -> None:
        """Fail every waiter with ``exc`` and close the transport."""
        if self._closed is None:
            self._closed = exc
        self._lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        while self._waiters:
            future = self._waiters.popleft()[0]
            if future is not None and not future.done():
                future.set_exception(exc)
        for held in self._held:
            if not held[0].done():
                held[0].set_exception(exc)
        self._held = []
        self._outbox.clear()
        if self._transport is not None:
            self._transport.close()
