"""Engines in their own OS processes (``worker.py``) on one store, and the faults the suite injects into them.

A ``Fleet`` lives across many schedules: it restarts the engines that were killed, thaws what was frozen and
brings the store back, so each schedule starts from a healthy fleet without paying for new processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statefleet.testing import LocalRedisServer
from statefleet.testing.engine_process import EngineProcess, EngineProcessGone

WORKER = Path(__file__).with_name("worker.py")


#: The engine process exited (or was killed) before it answered.
WorkerGone = EngineProcessGone


class Worker(EngineProcess):
    """One engine process of the fault suite (``worker.py``)."""

    @classmethod
    async def start(cls, argv: list[str], log: Path) -> Worker:
        """Start a worker; its log (read it when a schedule fails) is appended to ``log``."""
        process = await cls.spawn(WORKER, argv, log)
        assert isinstance(process, Worker)
        return process


@dataclass
class Slot:
    """A place in the fleet: the engine process serving it now, or the restart that will."""

    index: int
    worker: Worker | None = None
    restarting: asyncio.Task[Worker] | None = None
    frozen: bool = False


@dataclass
class FaultCounts:
    """Faults injected so far, by kind."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


class Fleet:
    """``size`` engine processes sharing ``store_url``; ``redis`` is the server behind it (None for SQLite).

    Engines append handler records to ``record`` (``records_since`` reads them back) and log to ``engines.log``
    beside it.
    """

    def __init__(self, store_url: str, record: Path, size: int = 3, *, redis: LocalRedisServer | None = None,
                 lease_ttl: float = 0.5, sweep: float = 0.1, break_fencing: bool = False) -> None:
        self.store_url = store_url
        self.record = record
        self.log = record.with_name("engines.log")
        self.redis = redis
        self.lease_ttl = lease_ttl
        self.sweep = sweep
        self.break_fencing = break_fencing
        self.slots = [Slot(i) for i in range(size)]
        self.faults = FaultCounts()
        self._round_robin = itertools.count()

    def _argv(self) -> list[str]:
        argv = ["--store", self.store_url, "--record", str(self.record), "--lease-ttl", str(self.lease_ttl),
                "--sweep", str(self.sweep)]
        return [*argv, "--break-fencing"] if self.break_fencing else argv

    async def start(self) -> None:
        self.record.touch()
        workers = await asyncio.gather(*(Worker.start(self._argv(), self.log) for _ in self.slots),
                                       return_exceptions=True)
        for slot, worker in zip(self.slots, workers, strict=True):
            if isinstance(worker, Worker):
                slot.worker = worker
        failed = [w for w in workers if isinstance(w, BaseException)]
        if failed:
            await self.close()
            raise failed[0]

    @property
    def supports_store_faults(self) -> bool:
        return self.redis is not None

    # -- choosing engines ------------------------------------------------------------------------------------

    def live(self) -> list[Slot]:
        return [s for s in self.slots if s.worker is not None and s.worker.alive and s.restarting is None]

    def pick(self, index: int) -> Worker | None:
        """The engine at ``index`` if it runs, else the next one that does (None if none does now)."""
        for offset in range(len(self.slots)):
            slot = self.slots[(index + offset) % len(self.slots)]
            if slot.worker is not None and slot.worker.alive and slot.restarting is None:
                return slot.worker
        return None

    def slot_of_pid(self, pid: int) -> Slot | None:
        for slot in self.slots:
            if slot.worker is not None and slot.worker.pid == pid and slot.worker.alive:
                return slot
        return None

    # -- faults ----------------------------------------------------------------------------------------------

    def kill(self, slot: Slot) -> None:
        """kill -9 the slot's engine; a replacement starts in the background."""
        worker = slot.worker
        if worker is None or not worker.alive or slot.restarting is not None:
            return
        worker.signal(signal.SIGKILL)
        self.faults.add("kill")
        slot.restarting = asyncio.create_task(self._replace(worker))

    async def _replace(self, dead: Worker) -> Worker:
        await dead.proc.wait()
        await dead.close()
        return await Worker.start(self._argv(), self.log)

    async def freeze(self, slot: Slot, seconds: float) -> None:
        """SIGSTOP the slot's engine for ``seconds``, then SIGCONT."""
        worker = slot.worker
        if worker is None or not worker.alive:
            return
        self.faults.add("freeze" if seconds > self.lease_ttl else "short_freeze")
        slot.frozen = True
        worker.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            worker.signal(signal.SIGCONT)
            slot.frozen = False

    async def pause_store(self, seconds: float) -> None:
        """SIGSTOP the redis-server for ``seconds``, then SIGCONT."""
        assert self.redis is not None
        self.faults.add("store_pause")
        self.redis.pause()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.redis.resume()

    async def restart_store(self) -> None:
        """kill -9 the redis-server and start it again on the same port, with its append-only file."""
        assert self.redis is not None
        self.faults.add("store_restart")
        await asyncio.to_thread(self.redis.restart)

    async def heal(self) -> None:
        """Bring the fleet back to full strength: every engine running and thawed, the store up."""
        if self.redis is not None:
            if self.redis.paused:
                self.redis.resume()
            if self.redis.proc.poll() is not None:
                await asyncio.to_thread(self.redis.restart)
        for slot in self.slots:
            if slot.worker is not None:
                slot.worker.signal(signal.SIGCONT)
            if slot.restarting is None and (slot.worker is None or not slot.worker.alive):
                dead = slot.worker
                slot.restarting = asyncio.create_task(
                    self._replace(dead) if dead is not None else Worker.start(self._argv(), self.log))
        for slot in self.slots:
            if slot.restarting is not None:
                task, slot.restarting = slot.restarting, None
                slot.worker = await task

    async def close(self) -> None:
        """Stop every engine (the store server belongs to whoever started it)."""
        if self.redis is not None and self.redis.paused:
            self.redis.resume()
        for slot in self.slots:
            if slot.restarting is not None:
                task, slot.restarting = slot.restarting, None
                with contextlib.suppress(Exception):
                    slot.worker = await task
        await asyncio.gather(*(s.worker.close() for s in self.slots if s.worker is not None),
                             return_exceptions=True)

    # -- records ---------------------------------------------------------------------------------------------

    def records_offset(self) -> int:
        return self.record.stat().st_size

    def records_since(self, offset: int) -> Iterator[dict[str, Any]]:
        """Handler records appended after byte ``offset`` (whole lines only)."""
        with self.record.open("rb") as f:
            f.seek(offset)
            data = f.read()
        for line in data.splitlines():
            if line.endswith(b"}"):
                yield json.loads(line)
