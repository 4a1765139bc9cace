"""Running a load test: one or several generator processes, the chaos schedule, progress, the result.

Each generator process runs its share of the workload (``Workload.share``) on its own event loop (uvloop
when installed) and sends back its :class:`Recorder`; the parent merges the histograms and counts, runs the
chaos actions and shows progress from counters the workers share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import random
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path
from typing import Any

import aiohttp

from .._gc import FrozenHeap, tune_for_serving
from .chaos import Chaos, ChaosSpec
from .client import Client
from .progress import Progress, Snapshot
from .stats import Recorder
from .user import User
from .workload import Workload

log = logging.getLogger(__name__)

#: Seconds in-flight turns get to finish after ``--duration`` before they are cancelled.
GRACE = 15.0
#: Slots per process in the shared progress array.
_SLOTS = 7


@dataclass(frozen=True)
class RunOptions:
    """How to run (as opposed to what load to make)."""

    chaos: tuple[ChaosSpec, ...] = ()
    quiet: bool = False
    #: Where restarted processes write their output.
    logdir: Path | None = None
    #: Most concurrent conversations one process holds in the open model (more arrivals are dropped).
    max_conversations: int = 50_000
    grace: float = GRACE


@dataclass
class Outcome:
    """The merged measurements, the chaos timeline and the run's times."""

    recorder: Recorder
    events: list[Any]
    duration: float
    processes: int
    cpu_percent_per_process: list[float] = field(default_factory=list)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Generator:
    """The load of one process: users (closed model) or arrivals (open model), until the deadline."""

    def __init__(self, workload: Workload, start: float, options: RunOptions,
                 shared: SynchronizedArray[float] | None = None, slot: int = 0) -> None:
        self.workload = workload
        self.start = start
        self.options = options
        self.recorder = Recorder(start)
        self.rng = random.Random(workload.seed)
        self.users: list[User] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.shared = shared
        self.slot = slot
        self.active = 0

    async def run(self) -> Recorder:
        cpu0 = _cpu_seconds()
        deadline = self.start + self.workload.duration
        peak = int(self.workload.profile.peak) + 16
        connector = aiohttp.TCPConnector(limit=min(peak, self.options.max_conversations) + 16,
                                         ttl_dns_cache=300, force_close=False, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=self.workload.request_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",),
                                         auto_decompress=False) as session:
            client = Client(session, self.workload.targets, self.recorder, self.workload.retry_budget,
                            self.workload.tenant, random.Random(self.workload.seed + 1))
            publisher = asyncio.get_running_loop().create_task(self._publish())
            try:
                if self.workload.open_loop:
                    await self._arrivals(client, deadline)
                else:
                    await self._closed(client, deadline)
                await self._finish(deadline + self.options.grace)
            finally:
                publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher
        self.recorder.cpu_seconds = _cpu_seconds() - cpu0
        self.recorder.wall_seconds = time.monotonic() - self.start
        self._publish_once()
        return self.recorder

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _closed(self, client: Client, deadline: float) -> None:
        while (now := time.monotonic()) < deadline:
            target = round(self.workload.profile.level(now - self.start))
            running = [u for u in self.users if not u.stopping]
            for user in running[target:]:
                user.stopping = True
            for _ in range(target - len(running)):
                user = User(len(self.users), self.workload, client, self.recorder,
                            random.Random(self.rng.random()))
                self.users.append(user)
                self._spawn(self._hold(user, deadline))
            await asyncio.sleep(0.1)

    async def _hold(self, user: User, deadline: float) -> None:
        self.active += 1
        try:
            await user.run(deadline)
        finally:
            self.active -= 1

    async def _arrivals(self, client: Client, deadline: float) -> None:
        index = 0
        while (now := time.monotonic()) < deadline:
            rate = self.workload.profile.level(now - self.start)
            if rate <= 0:
                await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(self.rng.expovariate(rate))
            if time.monotonic() >= deadline:
                break
            if self.active >= self.options.max_conversations:
                self.recorder.error(time.monotonic(), "tester_overflow")
                continue
            user = User(index, self.workload, client, self.recorder, random.Random(self.rng.random()))
            index += 1
            self._spawn(self._converse_once(user, deadline))

    async def _converse_once(self, user: User, deadline: float) -> None:
        self.active += 1
        try:
            await user.converse(f"{self.workload.run_id}-o{user.index}", deadline)
        finally:
            self.active -= 1

    async def _finish(self, hard_stop: float) -> None:
        for user in self.users:
            user.stopping = True
        while self.tasks and time.monotonic() < hard_stop:
            await asyncio.wait(list(self.tasks), timeout=max(0.0, hard_stop - time.monotonic()))
        if self.tasks:
            log.warning("cancelling %d conversations still running %.0f s after the end", len(self.tasks),
                        self.options.grace)
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _publish(self) -> None:
        cpu0, wall0 = _cpu_seconds(), time.monotonic()
        heap = FrozenHeap()
        while True:
            await asyncio.sleep(0.5)
            # What lives now (users, their records, open connections) mostly lives to the end of the run: out of
            # the collector's scans with it, whose pauses would show up as latency the tester measures.
            heap.tick(sum(self.recorder.errors.values()) + self.recorder.retries)
            cpu1, wall1 = _cpu_seconds(), time.monotonic()
            self._publish_once(100 * (cpu1 - cpu0) / max(1e-9, wall1 - wall0))
            cpu0, wall0 = cpu1, wall1

    def _publish_once(self, cpu: float | None = None) -> None:
        if self.shared is None:
            return
        rec = self.recorder
        base = self.slot * _SLOTS
        values = [self.active, rec.turns, sum(rec.errors.values()), rec.failed_turns,
                  sum(rec.continuity.values()), rec.latency.percentile(99)]
        for i, value in enumerate(values):
            self.shared[base + i] = float(value)
        if cpu is not None:
            self.shared[base + 6] = cpu


def _worker(workload: Workload, start: float, options: RunOptions, shared: SynchronizedArray[float], slot: int,
            results: Any) -> None:
    _use_uvloop()
    try:
        recorder = asyncio.run(Generator(workload, start, options, shared, slot).run())
        results.put((slot, recorder.to_dict(), None))
    except BaseException as exc:
        results.put((slot, None, repr(exc)))


def _use_uvloop() -> None:
    tune_for_serving()  # the tester's own GC pauses would show up as latency it measures
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class LoadTest:
    """A whole run: ``LoadTest(workload, options).run()`` → :class:`Outcome`."""

    def __init__(self, workload: Workload, options: RunOptions | None = None) -> None:
        self.workload = workload
        self.options = options or RunOptions()
        self.progress = Progress(quiet=self.options.quiet)

    def run(self) -> Outcome:
        """Run in this process (one generator) or with ``processes`` generator processes."""
        _use_uvloop()
        return asyncio.run(self.run_async())

    async def run_async(self) -> Outcome:
        n = self.workload.processes
        ctx = multiprocessing.get_context("spawn")
        shared: SynchronizedArray[float] = ctx.Array("d", _SLOTS * n, lock=False)
        start = time.monotonic() + (1.0 if n > 1 else 0.0)  # workers need a moment to start
        chaos = Chaos(self.options.chaos, start, self.options.logdir)
        procs: list[Any] = []
        results: Any = None
        local: asyncio.Task[Recorder] | None = None
        if n == 1:
            local = asyncio.get_running_loop().create_task(
                Generator(self.workload, start, self.options, shared, 0).run())
        else:
            results = ctx.Queue()
            for i in range(n):
                proc = ctx.Process(target=_worker, args=(self.workload.share(i), start, self.options, shared, i,
                                                          results), name=f"statefleet-loadtest-{i}", daemon=True)
                proc.start()
                procs.append(proc)
        chaos_task = asyncio.get_running_loop().create_task(chaos.run(self.workload.duration))
        try:
            recorders = await self._wait(n, local, procs, results, shared, start, chaos)
        finally:
            chaos_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chaos_task
            await chaos.close()
            self.progress.close()
        merged = recorders[0]
        for other in recorders[1:]:
            merged.merge(other)
        cpu = [100 * r.cpu_seconds / max(1e-9, r.wall_seconds) for r in recorders]
        return Outcome(merged, chaos.events, time.monotonic() - start, n, cpu)

    async def _wait(self, n: int, local: asyncio.Task[Recorder] | None, procs: list[Any], results: Any,
                    shared: SynchronizedArray[float], start: float, chaos: Chaos) -> list[Recorder]:
        shown = 0
        collected: dict[int, Recorder] = {}
        errors: list[str] = []
        while True:
            if local is not None:
                done, _ = await asyncio.wait({local}, timeout=1.0)
                if done:
                    collected[0] = local.result()
            else:
                while True:
                    try:
                        slot, data, error = results.get_nowait()
                    except Exception:
                        break
                    if error is not None:
                        errors.append(f"generator {slot}: {error}")
                        collected[slot] = Recorder(start)
                    else:
                        collected[slot] = Recorder.from_dict(data, start)
                if len(collected) < n and not any(p.is_alive() for p in procs) and results.empty():
                    errors.append("a generator process died without a result")
                    break
                await asyncio.sleep(1.0)
            for event in chaos.events[shown:]:
                self.progress.event(f"chaos t={event.t:.1f}s {event.action} {event.target} pid={event.pid}: "
                                    f"{event.detail}")
            shown = len(chaos.events)
            self.progress.show(self._snapshot(shared, n, start))
            if len(collected) == n:
                break
        for proc in procs:
            proc.join(5)
        if errors:
            raise RuntimeError("; ".join(errors))
        return [collected[i] for i in sorted(collected)]

    @staticmethod
    def _snapshot(shared: SynchronizedArray[float], n: int, start: float) -> Snapshot:
        def total(i: int) -> float:
            return sum(shared[p * _SLOTS + i] for p in range(n))

        return Snapshot(time.monotonic() - start, int(total(0)), int(total(1)), int(total(2)), int(total(3)),
                        int(total(4)), max(shared[p * _SLOTS + 5] for p in range(n)),
                        max(shared[p * _SLOTS + 6] for p in range(n)))
