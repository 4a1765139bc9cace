"""Random fault schedules against real engine processes on real stores, checked against every guarantee.

Each schedule sends messages (fresh conversations, random engines, enqueue / interrupt / reject, retries with the
same Idempotency-Key) while faults strike: kill -9 of an engine, SIGSTOP of an engine shorter than or past its
lease, and on Redis the redis-server paused (SIGSTOP) or killed and restarted with its append-only file. Then the
checker (``checker.py``) reads every answer and the final conversation: serial, exactly once and in order, no
"failed" answer for a message that committed, every unknown outcome told by a retry with the same key.

Size: ``STATEFLEET_FAULT_SCHEDULES`` (default 200, split between Redis and SQLite). ``STATEFLEET_FAULT_SEED``
picks another sequence (default: derandomized, the same schedules every run); ``STATEFLEET_FAULT_SHRINK=1``
stops at the first violation and lets hypothesis shrink the schedule. ``python -m benchmarks.soak`` runs the
same machinery for a given time.
"""

from __future__ import annotations

import os

import pytest

from .fleet import Fleet
from .schedule import EVERY_STORE, REDIS_ONLY, Schedule, schedules
from .suite import Explorer, Report

TOTAL = int(os.environ.get("STATEFLEET_FAULT_SCHEDULES", "200"))
REDIS_SCHEDULES = round(TOTAL * 0.7)
SQLITE_SCHEDULES = TOTAL - REDIS_SCHEDULES
SEED = int(os.environ["STATEFLEET_FAULT_SEED"]) if os.environ.get("STATEFLEET_FAULT_SEED") else None
SHRINK = os.environ.get("STATEFLEET_FAULT_SHRINK") == "1"

def _timeout(schedules: int) -> int:
    return 120 + 3 * schedules


async def _explore(fleet: Fleet, backend: str, count: int, explicit: list[Schedule]) -> Report:
    explorer = Explorer(fleet, Report(backend), backend[0])
    report = await explorer.explore(schedules(store_faults=fleet.supports_store_faults), max_examples=count,
                                    explicit=explicit, seed=SEED, shrink=SHRINK)
    print(report.summary())
    return report


@pytest.mark.timeout(_timeout(REDIS_SCHEDULES))
async def test_random_fault_schedules_on_redis_keep_every_guarantee(redis_fleet: Fleet) -> None:
    report = await _explore(redis_fleet, "redis", REDIS_SCHEDULES, EVERY_STORE + REDIS_ONLY)
    assert report.schedules >= REDIS_SCHEDULES
    assert not report.failures, f"{report.summary()}\nengine logs: {redis_fleet.log}"


@pytest.mark.timeout(_timeout(SQLITE_SCHEDULES))
async def test_random_fault_schedules_on_sqlite_keep_every_guarantee(sqlite_fleet: Fleet) -> None:
    report = await _explore(sqlite_fleet, "sqlite", SQLITE_SCHEDULES, EVERY_STORE)
    assert report.schedules >= SQLITE_SCHEDULES
    assert not report.failures, f"{report.summary()}\nengine logs: {sqlite_fleet.log}"
