"""What an engine does in the background: renew the leases of the turns it runs, take over the leases other
instances let expire, and keep itself in the fleet registry.

The :class:`~statefleet.engine.Engine` owns one :class:`Upkeep` while it runs and hands it what the loops need:
the store, the table of running turns (shared, the engine adds and removes entries), a way to start a drive
for a conversation taken over, whether the engine still accepts work, and its registry entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .. import errors
from ..observability.hooks import EngineObserver
from ..store.base import ConversationKey, JSONObject, Lease, Limits, Routing, Store, WorkItem
from .epoch import EpochWatch
from .settings import EngineSettings, EngineStats

#: Renewals sent in one go by the heartbeat (all pipelined).
_RENEW_BATCH = 2000
#: Sweeps run back to back at most, while each finds due hints.
_SWEEPS_IN_A_ROW = 20

log = logging.getLogger("statefleet.turns")  # the engine's logger (named when it was turns.py): operators filter on it


@dataclass(slots=True)
class Running:
    """A conversation whose lease this engine holds, and the turn it is running."""

    lease: Lease
    task: asyncio.Task[None] | None = None
    message_id: str = ""
    renewed_at: float = 0.0
    #: When the running turn's handler started (monotonic).
    started: float = 0.0
    #: Why the running handler is being cancelled: "interrupt", "lost" or "drain".
    cancel_reason: str | None = None
    in_handler: bool = False


async def guard(loop_fn: Callable[[], Awaitable[None]], name: str) -> None:
    """Keep an eternal loop alive: log a crash and start it again (a store outage is a line, not a crash)."""
    while True:
        try:
            await loop_fn()
        except asyncio.CancelledError:
            raise
        except errors.StoreUnavailable as exc:
            log.warning("%s loop paused: %s; retrying in 1 s", name, exc)
            await asyncio.sleep(1.0)
        except Exception:
            log.exception("%s loop crashed; restarting in 1 s", name)
            await asyncio.sleep(1.0)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Upkeep:
    """An engine's background loops: heartbeat (lease renewal), sweeper (takeover) and registry.

    They stop in two steps, so a draining engine keeps its leases: :meth:`stop_taking_over` ends the sweeper
    and the registry refresh, :meth:`stop` (once no turn runs any more) the heartbeat.
    """

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        limits: Limits,
        stats: EngineStats,
        running: dict[ConversationKey, Running],
        *,
        instance_id: str,
        observer: EngineObserver | None,
        start_drive: Callable[[WorkItem], None],
        accepting: Callable[[], bool],
        registry_entry: Callable[[], JSONObject],
        epoch: EpochWatch,
        version: str,
        fleet_view: Callable[[Routing, list[JSONObject]], None],
    ) -> None:
        self._store = store
        self._settings = settings
        self._limits = limits
        self._stats = stats
        #: The engine's running turns, by conversation: the heartbeat renews their leases.
        self._running = running
        self._instance_id = instance_id
        self._observer = observer
        self._start_drive = start_drive
        self._accepting = accepting
        self._registry_entry = registry_entry
        #: Checked with every registry refresh: a changed epoch means the store lost its data.
        self._epoch = epoch
        #: The agent version this engine serves: the sweeper only takes over conversations pinned to it.
        self._version = version
        #: Told the routing weights and the live instances every ``fleet_view_interval``.
        self._fleet_view = fleet_view
        self._taking_over: list[asyncio.Task[None]] = []
        self._heartbeat: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Register in the fleet, then start the sweeper, the heartbeat and the registry refresh."""
        await self.register()
        await self.refresh_fleet_view()
        self._taking_over = [
            asyncio.create_task(guard(self._sweep_forever, "sweeper")),
            asyncio.create_task(guard(self._register_forever, "registry")),
            asyncio.create_task(guard(self._fleet_view_forever, "fleet view")),
            asyncio.create_task(guard(self._audit_forever, "audit")),
        ]
        self._heartbeat = [asyncio.create_task(guard(self._heartbeat_forever, "heartbeat"))]

    async def stop_taking_over(self) -> None:
        """Stop the sweeper and the registry refresh; the heartbeat keeps renewing the running turns' leases."""
        tasks, self._taking_over = self._taking_over, []
        await _cancel(tasks)

    async def stop(self) -> None:
        """Stop every loop (the heartbeat last): call it once no turn of the engine runs."""
        await self.stop_taking_over()
        tasks, self._heartbeat = self._heartbeat, []
        await _cancel(tasks)

    async def register(self) -> None:
        """Write the engine's entry to the fleet registry and check the store's epoch (a failure is logged:
        the next refresh retries)."""
        try:
            await self._store.register_instance(self._instance_id, self._registry_entry(),
                                                ttl=self._settings.registry_ttl)
            reset = await self._epoch.check(self._store)
        except errors.StoreUnavailable as exc:
            log.warning("could not register instance %r in the fleet registry: %s", self._instance_id, exc)
            return
        except Exception:
            log.warning("could not register instance %r in the fleet registry", self._instance_id, exc_info=True)
            return
        if reset is not None and self._observer is not None:
            self._observer.store_reset(reset.previous, reset.current)

    async def refresh_fleet_view(self) -> None:
        """Read the routing weights and the live instances (which the server forwards messages to)."""
        try:
            routing, instances = await asyncio.gather(self._store.routing(), self._store.instances())
        except Exception as exc:  # the last view stays; the next refresh retries
            log.warning("could not read the routing weights and the fleet registry: %s", exc)
            return
        self._fleet_view(routing, instances)

    async def _fleet_view_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.fleet_view_interval)
            await self.refresh_fleet_view()

    async def _register_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.registry_ttl / 3)
            await self.register()

    async def _heartbeat_forever(self) -> None:
        interval = self._settings.heartbeat
        while True:
            await asyncio.sleep(min(interval / 2, 0.25))
            now = time.monotonic()
            due = sorted((r for r in self._running.values() if now - r.renewed_at >= interval),
                         key=lambda r: r.renewed_at)  # the oldest first, should a pass take long
            # All at once: the store sends them pipelined, one write per node, however many leases we hold.
            for start in range(0, len(due), _RENEW_BATCH):
                await asyncio.gather(*[self._renew(running) for running in due[start:start + _RENEW_BATCH]])

    async def _renew(self, running: Running) -> None:
        key = running.lease.key
        message_id = running.message_id
        sent = time.monotonic()  # the new expiry counts from about now, however long the reply takes
        try:
            outcome = await self._store.renew(running.lease, limits=self._limits)
        except errors.StoreUnavailable as exc:
            log.warning("could not renew lease of %r: %s; will retry", str(key), exc)
            return
        except Exception:
            log.warning("could not renew lease of %r; will retry", str(key), exc_info=True)
            return
        if self._running.get(key) is not running or running.message_id != message_id:
            return  # the turn committed meanwhile (and may have freed the lease): nothing to say
        running.renewed_at = sent
        if not outcome.kept:
            log.warning("lost the lease of conversation %r (token %d); stopping its turn",
                        str(key), running.lease.token)
            if running.task is not None and running.in_handler:
                running.cancel_reason = "lost"
                running.task.cancel()
        elif outcome.interrupt and running.in_handler and running.task is not None:
            running.cancel_reason = "interrupt"
            running.task.cancel()

    async def _sweep_forever(self) -> None:
        batch = self._settings.sweep_batch
        while True:
            await asyncio.sleep(self._settings.sweep_interval)
            # While sweeps find due hints, go again at once: a big instance died, and its leases expire over the
            # second its heartbeat took to renew them all. Bounded, so stubborn hints cannot spin the loop.
            for _ in range(_SWEEPS_IN_A_ROW):
                found, _ = await self._sweep(batch)
                if not found:
                    break
                await asyncio.sleep(0)

    async def _audit_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.audit_interval)
            seen = await self._store.repair_hints(self._instance_id)
            if seen:
                log.info("audit: %d conversation(s) with pending messages checked for a takeover hint", seen)

    async def reclaim_expired_leases(self, limit: int = 1000) -> int:
        """Take over conversations whose owner stopped renewing, and run their pending messages.

        Returns how many this instance took over."""
        _, taken = await self._sweep(limit)
        return taken

    async def _sweep(self, limit: int) -> tuple[int, int]:
        """One sweep: up to ``limit`` due hints, reclaimed ``sweep_parallelism`` at a time. Returns the hints
        found, and how many of their conversations this instance took over."""
        keys = [key for key in await self._store.expired_leases(limit, version=self._version)
                if key not in self._running]
        slots = asyncio.Semaphore(self._settings.sweep_parallelism)

        async def take_over(key: ConversationKey) -> bool:
            async with slots:
                if key in self._running or not self._accepting():
                    return False
                work = await self._store.reclaim(key, owner=self._instance_id, limits=self._limits,
                                                 version=self._version)
            if work is None:
                return False
            self._took_over(key, work)
            return True

        results = await asyncio.gather(*[take_over(key) for key in keys], return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            if any(isinstance(r, asyncio.CancelledError) for r in failures):
                raise asyncio.CancelledError
            log.warning("sweeper: %d of %d takeovers failed (%s); the next sweep tries again",
                        len(failures), len(keys), failures[0])
        return len(keys), sum(result is True for result in results)

    def _took_over(self, key: ConversationKey, work: WorkItem) -> None:
        self._stats.takeovers += 1
        if self._observer is not None:
            self._observer.takeover(key, work.previous_owner, work.attempt)
        log.warning(
            "instance %r took over conversation %r from instance %r (token %d, attempt %d of message %r)",
            self._instance_id, str(key), work.previous_owner, work.lease.token, work.attempt, work.message.id,
            extra={"conversation_id": key.id, "tenant": key.tenant, "message_id": work.message.id,
                   "instance": self._instance_id, "previous_owner": work.previous_owner, "attempt": work.attempt},
        )
        self._start_drive(work)
