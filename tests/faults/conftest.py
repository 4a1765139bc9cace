"""Fleets for the fault suite: three engine processes on a persistent, restartable redis-server, or on one
SQLite file. One fleet serves every schedule of a test (fresh conversation ids per schedule)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statefleet.testing import LocalRedisServer

from .fleet import Fleet


@pytest.fixture
async def redis_fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    with LocalRedisServer(persistent=True) as server:
        fleet = Fleet(server.url, tmp_path / "handler.log", redis=server)
        await fleet.start()
        try:
            yield fleet
        finally:
            await fleet.close()


@pytest.fixture
async def sqlite_fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(f"sqlite:///{tmp_path / 'state.db'}", tmp_path / "handler.log")
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.close()
