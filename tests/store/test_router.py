"""The Redis router against real servers: one server, Sentinel, Cluster; URLs, redirections, failovers, WAIT, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from statefleet.errors import InvalidStoreUrl, StoreUnavailable
from statefleet.store import redact_url
from statefleet.store._redis_url import parse_redis_url
from statefleet.store._router import (
    RedisRouter,
    ReplicaAckMissing,
    ReplyTimeout,
)
from statefleet.testing import LocalRedisServer, free_port

#: A script every test registers: what it returns proves it ran where the key lives.
GET_LUA = "return {redis.call('GET', KEYS[1]), ARGV[1]}"


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[RedisRouter]:
    router = await RedisRouter.open(url)
    try:
        yield router
    finally:
        await router.close()


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)


def command(port: int, *args: Any) -> Any:
    """A command sent straight to the server on ``port`` (redis-py, outside the router under test)."""
    with client(port) as direct:
        return direct.execute_command(*args)  # type: ignore[no-untyped-call]


async def served_by(router: RedisRouter, key: str | None) -> int:
    """The port of the node the router sends ``key``'s commands to (as that node says)."""
    info = await router.execute(key, "INFO", "server")
    return int(next(line for line in info.splitlines() if line.startswith("tcp_port:")).split(":")[1])


# -- URLs ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@127.0.0.1:6380/2?socket_timeout=1.5&socket_connect_timeout=0.5",
         {"shape": "standalone", "hosts": (("127.0.0.1", 6380),), "db": 2, "password": "pw", "reply_timeout": 1.5,
          "connect_timeout": 0.5}),
        ("redis://localhost?db=3", {"hosts": (("localhost", 6379),), "db": 3, "password": None}),
        ("rediss://user:p%40ss@h/0?ssl_cert_reqs=none",
         {"tls": True, "username": "user", "password": "p@ss", "ssl_cert_reqs": "none"}),
        ("unix://:pw@/tmp/redis.sock?db=1", {"path": "/tmp/redis.sock", "db": 1, "hosts": ()}),
        ("redis+sentinel://u:pw@h1,h2:26380/main/4?sentinel_password=sp&wait_replicas=1&wait_timeout=200",
         {"shape": "sentinel", "hosts": (("h1", 26379), ("h2", 26380)), "master_name": "main", "db": 4,
          "username": "u", "sentinel_password": "sp", "wait_replicas": 1, "wait_timeout_ms": 200}),
        ("rediss+sentinel://h1:5000/main?ssl_ca_certs=/ca.pem", {"tls": True, "db": 0, "ssl_ca_certs": "/ca.pem"}),
        ("redis+cluster://h1:7000,[::1]:7001/", {"shape": "cluster", "hosts": (("h1", 7000), ("::1", 7001))}),
        ("rediss+cluster://h1?ssl_check_hostname=false&health_check_interval=10",
         {"tls": True, "hosts": (("h1", 6379),), "ssl_check_hostname": False}),
    ],
)
def test_urls_of_every_shape_parse(url: str, expected: dict[str, Any]) -> None:
    parsed = parse_redis_url(url)

    assert {name: getattr(parsed, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster:///", "no host"),
        ("redis+cluster://h1,,h2", "an empty host"),
        ("redis://h:99999/0", "bad port '99999'"),
        ("redis+sentinel://h1:x/main", "bad port 'x'"),
        ("redis+sentinel://h1:26379", "no master name"),
        ("redis+sentinel://h1:26379/", "no master name"),
        ("redis+cluster://h1:7000/1", "only database 0"),
        ("redis+cluster://h1:7000?db=1", "only database 0"),
        ("rediz://h", "unknown scheme 'rediz'"),
        ("redis://h?wait_replicas=x", "wait_replicas='x'"),
        ("redis://h?wait_replicas=-1", "wait_replicas='-1'"),
        ("redis://h?wait_replicas=1&wait_timeout=0", "wait_timeout='0'"),
        ("redis://h?wait_replicas=1&wait_timeout=6000", "must be shorter than socket_timeout"),
        ("redis://h1,h2", "several hosts"),
        ("redis://h?socket_timeout=0", "socket_timeout='0'; it must be a positive number of seconds"),
        ("redis://h?socket_connect_timeout=soon", "socket_connect_timeout='soon'"),
        ("redis://h?ssl_ca_certs=/ca.pem", "ssl_ca_certs needs TLS"),
        ("redis://h?wait_replica=1", "unknown option 'wait_replica'"),
        ("redis://h/abc", "db='abc'"),
        ("redis://h/0/1", "unexpected path"),
        ("redis://h?sentinel_password=x", "sentinel_password is for Sentinel URLs"),
        ("unix://", "no socket path"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs='maybe'"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(InvalidStoreUrl) as refused:
        parse_redis_url(url)

    assert reason in str(refused.value)


def test_passwords_never_show_in_descriptions_reprs_or_errors() -> None:
    url = "redis+sentinel://user:s3cret@h1:26379,h2/main?sentinel_password=t0psecret&wait_replicas=oops"
    with pytest.raises(InvalidStoreUrl) as refused:
        parse_redis_url(url)
    assert "s3cret" not in str(refused.value) and "t0psecret" not in str(refused.value)

    parsed = parse_redis_url(url.replace("oops", "1"))
    for text in (parsed.description, repr(parsed)):
        assert "s3cret" not in text and "t0psecret" not in text
    assert parsed.description == "redis+sentinel://user:***@h1:26379,h2/main?sentinel_password=***&wait_replicas=1"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://user:s3cret@host:6380/1?ssl_cert_reqs=none", "rediss://user:***@host:6380/1?ssl_cert_reqs=none"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@host/0", "redis://user@host/0"),
        ("redis+cluster://:pw@h1:7000,h2:7001/", "redis+cluster://:***@h1:7000,h2:7001/"),
        ("rediss+sentinel://:p@w@h1,h2/m?password=x&sentinel_password=y", "rediss+sentinel://:***@h1,h2/m?password=***&sentinel_password=***"),
        ("unix://:pw@/run/redis.sock", "unix://:***@/run/redis.sock"),
        ("sqlite:///state.db", "sqlite:///state.db"),
    ],
)
def test_redact_url_hides_passwords_of_every_shape(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


# -- one server ----------------------------------------------------------------------------------------------------


async def test_a_standalone_router_runs_scripts_and_reloads_them_after_script_flush(
    redis_url: str, redis_server: LocalRedisServer,
) -> None:
    async with opened(redis_url) as router:
        sha = router.register_script(GET_LUA)
        await router.execute("k", "SET", "k", "v")
        assert await router.execute("k", "EVALSHA", sha, 1, "k", "a") == ["v", "a"]

        command(redis_server.port, "SCRIPT", "FLUSH")

        replies = await asyncio.gather(*[router.execute("k", "EVALSHA", sha, 1, "k", str(n)) for n in range(50)])
        assert replies == [["v", str(n)] for n in range(50)]
        assert await router.each_primary("DBSIZE") == [1]


async def test_a_standalone_router_scans_every_key(redis_url: str) -> None:
    async with opened(redis_url) as router:
        await asyncio.gather(*[router.execute(f"s:{n}", "SET", f"s:{n}", n) for n in range(500)])
        await router.execute("h", "HSET", "h", "f", "v")

        seen = [key async for batch in router.scan("s:*", type_="string", count=50) for key in batch]

        assert sorted(seen) == sorted(f"s:{n}" for n in range(500))


async def test_the_url_password_and_database_are_used() -> None:
    with LocalRedisServer() as server:
        command(server.port, "CONFIG", "SET", "requirepass", "s3cret")  # after start: its readiness check PINGs
        async with opened(f"redis://:s3cret@127.0.0.1:{server.port}/3") as router:
            await router.execute("k", "SET", "k", "in-db-3")
        with redis.Redis(port=server.port, password="s3cret", db=3, decode_responses=True) as direct:
            assert direct.get("k") == "in-db-3"

        with pytest.raises(StoreUnavailable) as refused:
            await RedisRouter.open(f"redis://:wrong-s3cret@127.0.0.1:{server.port}/0")
        assert "WRONGPASS" in str(refused.value) and "wrong-s3cret" not in str(refused.value)


async def test_a_unix_socket_url(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with LocalRedisServer("--unixsocket", str(socket_path)) as server:
        async with opened(f"unix://{socket_path}?db=2") as router:
            await router.execute("k", "SET", "k", "over-the-socket")
        with redis.Redis(port=server.port, db=2, decode_responses=True) as direct:
            assert direct.get("k") == "over-the-socket"


async def test_an_unreachable_or_frozen_server_fails_within_the_connect_timeout(redis_server: LocalRedisServer) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await RedisRouter.open(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=0.5")
    redis_server.pause()
    try:
        with pytest.raises(StoreUnavailable, match=r"within 0\.3 s"):
            await RedisRouter.open(f"{redis_server.url}?socket_connect_timeout=0.3")
    finally:
        redis_server.resume()
    assert time.monotonic() - started < 3


async def test_a_frozen_server_times_calls_out_and_a_new_connection_serves_once_it_thaws(
    redis_server: LocalRedisServer, redis_url: str,
) -> None:
    async with opened(f"{redis_url}?socket_timeout=0.3") as router:
        assert await router.execute("k", "SET", "k", "before") == "OK"
        redis_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(ReplyTimeout, match=r"within 0\.3 s"):
                await router.execute("k", "GET", "k")
            assert time.monotonic() - started < 1
            patient = asyncio.ensure_future(router.execute("k", "GET", "k", timeout=5))
            await asyncio.sleep(1.2)  # past 3x the reply timeout: that connection is retired
        finally:
            redis_server.resume()
        assert await patient == "before"
        assert await router.execute("k", "GET", "k") == "before"


# -- WAIT ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[LocalRedisServer, LocalRedisServer]]:
    with LocalRedisServer() as primary, LocalRedisServer(replica_of=primary.port) as replica:
        deadline = time.monotonic() + 10
        while command(replica.port, "INFO", "replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect to its primary"
            time.sleep(0.05)
        yield primary, replica


async def test_with_wait_replicas_writes_return_once_the_replica_has_them(
    replicated: tuple[LocalRedisServer, LocalRedisServer],
) -> None:
    primary, replica = replicated
    async with opened(f"{primary.url}?wait_replicas=1&wait_timeout=2000") as router:
        assert await asyncio.gather(*[router.execute(f"w{n}", "SET", f"w{n}", n) for n in range(200)]) == ["OK"] * 200
        assert command(replica.port, "GET", "w199") == "199"


async def test_with_wait_replicas_a_frozen_replica_fails_writes_with_replica_ack_missing(
    replicated: tuple[LocalRedisServer, LocalRedisServer],
) -> None:
    primary, replica = replicated
    async with opened(f"{primary.url}?wait_replicas=1&wait_timeout=300") as router:
        replica.pause()
        try:
            results = await asyncio.gather(*[router.execute("c", "INCR", "c") for _ in range(10)],
                                           return_exceptions=True)
        finally:
            replica.resume()
        assert all(isinstance(result, ReplicaAckMissing) for result in results), results
        assert "acknowledged by only 0 of 1 replicas within 300 ms" in str(results[0])
        # Unknown outcome, not "not done": the primary has them.
        assert command(primary.port, "GET", "c") == "10"
        # Once the replica is back, writes are acknowledged again.
        deadline = time.monotonic() + 5
        while True:
            try:
                value = await router.execute("c", "INCR", "c")
                break
            except ReplicaAckMissing:
                assert time.monotonic() < deadline
        assert value >= 11 and command(replica.port, "GET", "c") == str(value)
