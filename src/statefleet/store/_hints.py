"""The fleet-wide lease-expiry hints, written beside the conversation scripts, never inside them.

A conversation's scripts touch only its own slot (Redis Cluster refuses anything else), so the index the
sweeper reads — which conversations' leases are due, across the fleet — is updated here, after each script
answers: ``grant`` when a lease is granted, ``add`` when it is renewed, ``drop_if_due`` when it is freed,
``add_if_present`` when a sweep finds a hint early, ``add_if_absent`` when messages may wait unindexed (a lost
reply, the audit). No turn waits for them. Grants (and ``add_if_absent``) go out within ``GRANT_DELAY`` (5 ms):
until one lands, nothing would find the lease should this instance stop. The others, queued within
``FLUSH_DELAY`` (50 ms), go out together, one ``hints.lua`` call per shard per flush.

They are hints: a lost update (a crash between a script and its hint, a failover of the shard's primary) can
only delay a takeover, never break a guarantee — reclaim.lua decides from the conversation itself. What each
may get wrong and what repairs it is in docs/architecture.md, "Lease hints".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ._redis_keys import hint_key_of

log = logging.getLogger("statefleet.store")

#: Seconds hint updates wait to be sent together: small beside a lease TTL (seconds), large beside a turn.
FLUSH_DELAY = 0.05
#: Grants wait at most this long (s): together under load, and a short window in which an instance that stops
#: (frozen, killed) leaves a lease no sweeper can find (then renewals cannot repair it; the audit does).
GRANT_DELAY = 0.005
#: A batch that could not be sent is tried again this many times, this many seconds apart (every update is
#: safe to apply late: a late score is an earlier one than the truth, and a late drop only drops earlier ones).
RETRIES = 5
RETRY_EVERY = 1.0


class _Sender(Protocol):
    async def send_hints(self, shard: str, args: list[str]) -> None: ...

    async def send_version(self, version: str) -> None: ...


class HintWriter:
    """Batches hint updates per shard and sends them in order: grants within ``GRANT_DELAY``, the rest within
    ``FLUSH_DELAY``."""

    def __init__(self, sender: _Sender) -> None:
        self._sender = sender
        self._pending: dict[str, list[str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Versions whose first lease this process recorded in the store's list of versions.
        self._versions: set[str] = set()

    @property
    def versions(self) -> set[str]:
        """The versions this process granted a lease of (or is recording)."""
        return self._versions

    def grant(self, member: str, version: str, expiry: int | str) -> None:
        """This instance was just granted a lease that expires at ``expiry`` (ms, server clock). Sent within
        ``GRANT_DELAY``: until it lands, nothing would find the lease should this instance stop."""
        if version not in self._versions:
            self._note_version(version)
        self._queue("a", member, version, expiry, urgent=True)

    def add(self, member: str, version: str, expiry: int | str) -> None:
        """A lease this instance holds (and whose hint exists, unless lost) now expires at ``expiry``."""
        self._queue("a", member, version, expiry)

    def add_if_present(self, member: str, version: str, expiry: int | str) -> None:
        """Someone else's live lease expires at ``expiry``: correct an early hint, never create one."""
        self._queue("x", member, version, expiry)

    def add_if_absent(self, member: str, version: str, score: int | str = 0) -> None:
        """Messages wait and nothing may index them: due now unless a hint exists (sent within ``GRANT_DELAY``)."""
        self._queue("n", member, version, score, urgent=True)

    def drop_if_due(self, member: str, version: str, score: int | str) -> None:
        """The lease that expired at ``score`` is free (or the conversation idle): drop a hint not later."""
        self._queue("d", member, version, score)

    def _queue(self, op: str, member: str, version: str, score: int | str, *, urgent: bool = False) -> None:
        pending = self._pending
        if urgent:
            if self._soon is None:
                self._soon = asyncio.get_running_loop().call_later(GRANT_DELAY, self.flush)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
        pending.setdefault(hint_key_of(member, version), []).extend((op, member, str(score)))

    def _note_version(self, version: str) -> None:
        """Record a version's first lease (once per process), so that the fleet's backlog sums it."""
        self._versions.add(version)
        task = asyncio.ensure_future(self._send_version(version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_version(self, version: str) -> None:
        for attempt in range(RETRIES + 1):
            try:
                await self._sender.send_version(version)
                return
            except Exception:
                if attempt == RETRIES:
                    self._versions.discard(version)  # the next grant tries again
                    return
                await asyncio.sleep(RETRY_EVERY)

    def flush(self) -> None:
        """Send the updates queued so far now. A read of the hints that calls this first sees them: the sends
        start before the read's commands, on the same connection as the shard's."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        batches, self._pending = self._pending, {}
        for shard, args in batches.items():
            task = asyncio.ensure_future(self._send(shard, args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, shard: str, args: list[str]) -> None:
        for attempt in range(RETRIES + 1):
            try:
                await self._sender.send_hints(shard, args)
                return
            except Exception as exc:  # a hint is not worth failing anything for: the repair paths cover it
                if attempt == RETRIES:
                    log.warning("could not update %d lease hint(s) in %s: %s; renewals and the audit repair them",
                                len(args) // 3, shard, exc)
                    return
                await asyncio.sleep(RETRY_EVERY)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the updates already handed over (before closing the store); after ``timeout`` seconds, give
        up on those still retrying."""
        self.flush()
        tasks = list(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
