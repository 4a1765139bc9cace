"""Fixtures shared by the whole suite: a real redis-server on a free port, stores of every backend."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from statefleet.store import Store, open_store
from statefleet.testing import LocalRedisServer

BACKENDS = ["memory", "sqlite", "redis"]


class RedisServer(LocalRedisServer):
    """A real redis-server the tests start on a free port (never skipped: the Redis half is production)."""


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


def store_url(backend: str, tmp_path: Path, redis_server: RedisServer | None) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    assert redis_server is not None
    redis_server.flush()
    return redis_server.url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def any_store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue("redis_server") if backend == "redis" else None
    return store_url(backend, tmp_path, server)


@pytest.fixture
async def store(any_store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(any_store_url)
    yield opened
    await opened.close()


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked tasks: {leaked}"


os.environ.setdefault("STATEFLEET_TESTING", "1")
