"""Fixtures shared by the whole suite: a real redis-server on a free port, stores of every backend."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from statefleet.store import Store, open_store
from statefleet.testing import LocalRedisServer
from statefleet.testing.redis_cluster import LocalRedisCluster
from statefleet.testing.redis_sentinel import LocalRedisSentinel

BACKENDS = ["memory", "sqlite", "redis"]
#: The Redis shapes beyond one server: the store contract and the fleet guarantees run on them too (slow).
REDIS_TOPOLOGIES = [
    pytest.param("redis-cluster", marks=pytest.mark.slow),
    pytest.param("redis-sentinel", marks=pytest.mark.slow),
]


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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """3 primaries + 3 replicas, started once for the session (tests that break it start their own)."""
    with LocalRedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[LocalRedisSentinel]:
    """A primary, 2 replicas and 3 sentinels, started once for the session."""
    with LocalRedisSentinel() as sentinel:
        yield sentinel


def store_url(backend: str, tmp_path: Path, server: RedisServer | LocalRedisCluster | LocalRedisSentinel | None) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    assert server is not None
    server.flush()
    return server.url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def any_store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    fixture = {"redis": "redis_server", "redis-cluster": "redis_cluster", "redis-sentinel": "redis_sentinel"}
    server = request.getfixturevalue(fixture[backend]) if backend in fixture else None
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
