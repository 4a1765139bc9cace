"""What an engine does in the background: renew the leases of the turns it runs, take over the leases other
instances let expire, and keep itself in the fleet registry.

:class:`Upkeep` is mixed into :class:`statefleet.turns.Engine`; it reads the engine's state (declared below) and
starts turns through the engine's ``_start_drive``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._settings import EngineSettings, EngineStats
from .agent import Agent
from .observability.hooks import EngineObserver
from .store.base import ConversationKey, JSONObject, Lease, Limits, Store, WorkItem

log = logging.getLogger("statefleet.turns")  # the engine's logger: operators filter on it


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


class Upkeep:
    """The engine's background loops: heartbeat (lease renewal), sweeper (takeover) and registry."""

    agent: Agent
    store: Store
    observer: EngineObserver | None
    settings: EngineSettings
    instance_id: str
    limits: Limits
    stats: EngineStats
    address: str | None
    started_at: float
    _running: dict[ConversationKey, Running]
    _accepting: bool
    _in_flight: int

    @property
    def in_flight(self) -> int:
        raise NotImplementedError

    @property
    def draining(self) -> bool:
        raise NotImplementedError

    def _start_drive(self, work: WorkItem) -> None:
        raise NotImplementedError

    async def _guard(self, loop_fn: Callable[[], Any], name: str) -> None:
        """Keep an eternal loop alive: log a crash and start it again."""
        while True:
            try:
                await loop_fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s loop crashed; restarting in 1 s", name)
                await asyncio.sleep(1.0)

    def info(self) -> JSONObject:
        """This instance as the fleet registry shows it."""
        return {
            "id": self.instance_id,
            "agent": self.agent.name,
            "version": self.agent.version,
            "address": self.address,
            "in_flight": self.in_flight,
            "waiting": self._in_flight,
            "draining": self.draining,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "stats": {"committed": self.stats.committed, "failed": self.stats.failed,
                      "takeovers": self.stats.takeovers, "fenced": self.stats.fenced},
        }

    async def _register(self) -> None:
        try:
            await self.store.register_instance(self.instance_id, self.info(), ttl=self.settings.registry_ttl)
        except Exception:
            log.warning("could not register instance %r in the fleet registry", self.instance_id, exc_info=True)

    async def _register_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.registry_ttl / 3)
            await self._register()

    async def _heartbeat_forever(self) -> None:
        interval = self.settings.heartbeat
        while True:
            await asyncio.sleep(min(interval / 2, 0.25))
            now = time.monotonic()
            due = [r for r in self._running.values() if now - r.renewed_at >= interval]
            for running in due:
                await self._renew(running)

    async def _renew(self, running: Running) -> None:
        key = running.lease.key
        message_id = running.message_id
        try:
            outcome = await self.store.renew(running.lease, limits=self.limits)
        except Exception:
            log.warning("could not renew lease of %r; will retry", str(key), exc_info=True)
            return
        if self._running.get(key) is not running or running.message_id != message_id:
            return  # the turn committed meanwhile (and may have freed the lease): nothing to say
        running.renewed_at = time.monotonic()
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
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            await self.reclaim_expired_leases()

    async def reclaim_expired_leases(self, limit: int = 100) -> int:
        """Take over conversations whose owner stopped renewing, and run their pending messages."""
        taken = 0
        for key in await self.store.expired_leases(limit):
            if key in self._running or not self._accepting:
                continue
            work = await self.store.reclaim(key, owner=self.instance_id, limits=self.limits)
            if work is None:
                continue
            taken += 1
            self.stats.takeovers += 1
            if self.observer is not None:
                self.observer.takeover(key, work.previous_owner, work.attempt)
            log.warning(
                "instance %r took over conversation %r from instance %r (token %d, attempt %d of message %r)",
                self.instance_id, str(key), work.previous_owner, work.lease.token, work.attempt, work.message.id,
                extra={"conversation_id": key.id, "tenant": key.tenant, "message_id": work.message.id,
                       "instance": self.instance_id, "previous_owner": work.previous_owner,
                       "attempt": work.attempt},
            )
            self._start_drive(work)
        return taken
