"""The Redis router against real servers: one server, Sentinel, Cluster; URLs, redirections, failovers, WAIT, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from statefleet.errors import InvalidStoreUrl, StoreUnavailable
from statefleet.store import redact_url
from statefleet.store._redis_url import parse_redis_url
from statefleet.store._router import (
    ConnectionClosed,
    RedisRouter,
    ReplicaAckMissing,
    ReplyError,
    ReplyTimeout,
)
from statefleet.testing import LocalRedisServer, free_port
from statefleet.testing.redis_cluster import LocalRedisCluster
from statefleet.testing.redis_sentinel import LocalRedisSentinel
from statefleet.testing.tls import TLSFiles, make_tls_files

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
    # The primary syncs a new replica at once, not after the default 5 s wait for more of them.
    with LocalRedisServer("--repl-diskless-sync-delay", "0") as primary, \
            LocalRedisServer(replica_of=primary.port) as replica:
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


# -- Cluster -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalRedisCluster]:
    """A cluster for the tests that leave it whole (its slot map may change: a test moves a slot)."""
    with LocalRedisCluster() as started:
        yield started


@pytest.fixture
def cluster(shared_cluster: LocalRedisCluster) -> LocalRedisCluster:
    shared_cluster.flush()
    for port in shared_cluster.primary_ports():
        command(port, "CONFIG", "RESETSTAT")
    return shared_cluster


def slot_owners(port: int) -> dict[int, int]:
    """Slot -> port of its primary, as the node on ``port`` says (CLUSTER SLOTS)."""
    owners = {}
    for start, end, primary, *_ in command(port, "CLUSTER", "SLOTS"):
        for slot in range(start, end + 1):
            owners[slot] = int(primary[1])
    return owners


def errors_seen(port: int) -> dict[str, int]:
    """Error replies the node sent since CONFIG RESETSTAT, by code (INFO errorstats), but ERR: redis-py's own
    connections get one each (CLIENT SETINFO, which Redis 7.0 does not know)."""
    stats = command(port, "INFO", "errorstats")
    return {name.removeprefix("errorstat_"): int(value["count"]) for name, value in stats.items()
            if name != "errorstat_ERR"}


def key_in_slot_of(port: int, owners: dict[int, int], prefix: str) -> str:
    """A key whose slot ``port`` serves."""
    return next(f"{prefix}{n}" for n in range(100_000) if owners[key_slot(f"{prefix}{n}".encode())] == port)


async def test_cluster_commands_go_straight_to_the_primary_of_their_slot(cluster: LocalRedisCluster) -> None:
    primaries = cluster.primary_ports()
    owners = slot_owners(primaries[0])
    keys = [f"user:{n}" for n in range(3000)]
    async with opened(cluster.url) as router:
        await asyncio.gather(*[router.execute(key, "SET", key, key) for key in keys])

        # Each primary holds exactly the keys of its slots ...
        expected = Counter(owners[key_slot(key.encode())] for key in keys)
        assert {port: command(port, "DBSIZE") for port in primaries} == dict(expected)
        assert len(expected) == 3 and min(expected.values()) > 800
        # ... and was asked for nothing else (no redirection was needed).
        assert {port: errors_seen(port) for port in primaries} == {port: {} for port in primaries}
        assert sorted(await router.each_primary("DBSIZE")) == sorted(expected.values())
        # Hash tags keep keys together.
        tagged = [f"{{conv:7}}:{part}" for part in ("meta", "inbox", "log")]
        await asyncio.gather(*[router.execute(key, "SET", key, 1) for key in tagged])
        assert command(owners[key_slot(b"conv:7")], "EXISTS", *tagged) == 3


async def test_cluster_scan_sees_every_key_of_every_primary(cluster: LocalRedisCluster) -> None:
    async with opened(cluster.url) as router:
        await asyncio.gather(*[router.execute(f"q:{n}", "RPUSH", f"q:{n}", "m") for n in range(600)])
        await asyncio.gather(*[router.execute(f"s:{n}", "SET", f"s:{n}", "v") for n in range(100)])

        batches = [batch async for batch in router.scan("q:*", type_="list", count=50)]

        assert sorted(key for batch in batches for key in batch) == sorted(f"q:{n}" for n in range(600))


async def test_cluster_reloads_a_script_on_the_node_whose_cache_was_flushed(cluster: LocalRedisCluster) -> None:
    primaries = cluster.primary_ports()
    owners = slot_owners(primaries[0])
    keys = [key_in_slot_of(port, owners, "script:") for port in primaries]
    async with opened(cluster.url) as router:
        sha = router.register_script(GET_LUA)
        for key in keys:
            await router.execute(key, "SET", key, key)
            assert await router.execute(key, "EVALSHA", sha, 1, key, "first") == [key, "first"]

        command(primaries[1], "CONFIG", "RESETSTAT")
        command(primaries[1], "SCRIPT", "FLUSH")

        assert [await router.execute(key, "EVALSHA", sha, 1, key, "again") for key in keys] == [
            [key, "again"] for key in keys
        ]
        assert errors_seen(primaries[1]).get("NOSCRIPT") == 1


async def test_cluster_follows_ask_during_a_migration_retries_tryagain_and_follows_moved_after(
    cluster: LocalRedisCluster,
) -> None:
    source, target = cluster.primary_ports()[:2]
    owners = slot_owners(source)
    tag = "{" + key_in_slot_of(source, owners, "mig:") + "}"  # keys {mig:N}x all have the slot of mig:N
    slot = key_slot(tag.encode())
    ids = {port: command(port, "CLUSTER", "MYID") for port in (source, target)}
    async with opened(cluster.url) as router:
        await router.execute(f"{tag}a", "SET", f"{tag}a", "A")
        await router.execute(f"{tag}b", "SET", f"{tag}b", "B")

        # Given the slot half-migrated: key a moved to the target, key b still on the source
        command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        command(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", f"{tag}a")

        # Then a key already moved is read from the target (ASK), one not moved from the source
        assert await router.execute(f"{tag}a", "GET", f"{tag}a") == "A"
        assert await router.execute(f"{tag}b", "GET", f"{tag}b") == "B"
        # and a new key goes to the target
        await router.execute(f"{tag}c", "SET", f"{tag}c", "C")
        assert command(target, "CLUSTER", "COUNTKEYSINSLOT", slot) == 2
        assert errors_seen(source).get("ASK", 0) >= 2

        # A multi-key command over both halves gets TRYAGAIN: retried until the call's timeout, then raised
        started = time.monotonic()
        with pytest.raises(ReplyError, match="TRYAGAIN"):
            await router.execute(f"{tag}a", "MGET", f"{tag}a", f"{tag}b", timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 1.5
        # ... and succeeds if the migration ends in time
        def finish_migration() -> None:
            time.sleep(0.3)
            command(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", f"{tag}b")
            for port in cluster.primary_ports():
                command(port, "CLUSTER", "SETSLOT", slot, "NODE", ids[target])

        finishing = asyncio.ensure_future(asyncio.to_thread(finish_migration))
        assert await router.execute(f"{tag}a", "MGET", f"{tag}a", f"{tag}b", timeout=5) == ["A", "B"]
        await finishing
        # Then, once the slot is the target's, the source answers MOVED and the router follows
        command(source, "CONFIG", "RESETSTAT")
        assert await router.execute(f"{tag}b", "GET", f"{tag}b") == "B"
        assert await served_by(router, f"{tag}b") == target
        await asyncio.sleep(0.5)  # the refresh MOVED scheduled
        assert await router.execute(f"{tag}c", "GET", f"{tag}c") == "C"
        assert errors_seen(source).get("MOVED", 0) <= 1


@pytest.mark.slow
async def test_cluster_calls_during_a_reshard_all_succeed_exactly_once(cluster: LocalRedisCluster) -> None:
    keys = [f"counter:{n}" for n in range(300)]
    done: Counter[str] = Counter()
    failures: list[BaseException] = []
    resharding = True
    async with opened(cluster.url) as router:
        await asyncio.gather(*[router.execute(key, "SET", key, 0) for key in keys])

        async def increment(worker: int) -> None:
            n = worker
            while resharding:
                key = keys[n % len(keys)]
                n += 7
                try:
                    await router.execute(key, "INCR", key)
                    done[key] += 1
                except (ReplyError, ConnectionClosed) as exc:
                    failures.append(exc)

        workers = [asyncio.create_task(increment(worker)) for worker in range(32)]
        try:
            await asyncio.to_thread(cluster.reshard, 1 / 3)
        finally:
            resharding = False
            await asyncio.gather(*workers)

        assert failures == []
        assert sum(done.values()) > 1000
        redirected = sum(errors_seen(port).get(code, 0) for port in cluster.primary_ports()
                         for code in ("MOVED", "ASK"))
        assert redirected > 0, "the reshard redirected no call: the test proved nothing"
        values = await asyncio.gather(*[router.execute(key, "GET", key) for key in keys])
        assert dict(zip(keys, map(int, values), strict=True)) == {key: done[key] for key in keys}
        # The router's map is the cluster's again: no more redirections.
        await asyncio.sleep(0.5)
        for port in cluster.primary_ports():
            command(port, "CONFIG", "RESETSTAT")
        await asyncio.gather(*[router.execute(key, "GET", key) for key in keys])
        assert all(errors_seen(port) == {} for port in cluster.primary_ports())


@pytest.mark.slow
async def test_cluster_calls_resume_on_the_promoted_replica_of_a_killed_primary() -> None:
    with LocalRedisCluster() as cluster:
        async with opened(cluster.url) as router:
            primaries = cluster.primary_ports()
            owners = slot_owners(primaries[0])
            victim = primaries[1]
            key = key_in_slot_of(victim, owners, "survivor:")
            other = key_in_slot_of(primaries[0], owners, "bystander:")
            await router.execute(key, "SET", key, "yes")
            await router.execute(key, "WAIT", 1, 2000)
            await router.execute(other, "SET", other, "fine")

            cluster.kill(victim)
            # While no replica has taken over, a call for the dead node fails (after its timeout at most) ...
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await router.execute(key, "GET", key, timeout=0.5)
            assert time.monotonic() - started < 2
            # ... while the other nodes serve as before.
            assert await router.execute(other, "GET", other) == "fine"

            promoted = await asyncio.to_thread(cluster.wait_for_failover, victim)

            # Then the slot's calls go to the promoted replica, which has the data.
            assert await router.execute(key, "GET", key) == "yes"
            assert await served_by(router, key) == promoted
            assert sorted(await router.each_primary("PING")) == ["PONG"] * 3


@pytest.mark.slow
async def test_cluster_calls_waiting_on_a_dead_primary_succeed_once_its_replica_takes_over() -> None:
    with LocalRedisCluster() as cluster:
        async with opened(f"{cluster.url}?socket_timeout=15") as router:
            primaries = cluster.primary_ports()
            key = key_in_slot_of(primaries[2], slot_owners(primaries[0]), "waiting:")
            await router.execute(key, "SET", key, "kept")
            await router.execute(key, "WAIT", 1, 2000)
            cluster.kill(primaries[2])
            with pytest.raises(ConnectionClosed):  # the first call notices the drop
                await router.execute(key, "GET", key)

            # Calls made before the failover wait for it (within their 15 s) instead of failing.
            waiting = [asyncio.ensure_future(router.execute(key, "GET", key)) for _ in range(20)]
            await asyncio.to_thread(cluster.wait_for_failover, primaries[2])
            assert await asyncio.gather(*waiting) == ["kept"] * 20


@pytest.mark.slow
async def test_cluster_scan_raises_connection_closed_when_a_node_dies_mid_scan() -> None:
    with LocalRedisCluster() as cluster:
        async with opened(f"{cluster.url}?socket_timeout=2") as router:
            await asyncio.gather(*[router.execute(f"k:{n}", "SET", f"k:{n}", n) for n in range(3000)])
            scan = router.scan("k:*", type_="string", count=10)
            await anext(scan)
            cluster.kill(cluster.primary_ports()[0])
            with pytest.raises(ConnectionClosed):
                async for _ in scan:
                    pass


@pytest.mark.slow
async def test_cluster_with_wait_replicas_a_frozen_replica_fails_only_its_primarys_writes() -> None:
    with LocalRedisCluster() as cluster:
        primaries = cluster.primary_ports()
        owners = slot_owners(primaries[0])
        keys = {port: key_in_slot_of(port, owners, "acked:") for port in primaries}
        async with opened(f"{cluster.url}?wait_replicas=1&wait_timeout=300") as router:
            # Acknowledged by each primary's replica
            assert [await router.execute(key, "SET", key, 1) for key in keys.values()] == ["OK"] * 3
            # When the replica of one primary freezes
            replica = next(node.port for node in cluster.nodes
                           if node.role == "replica" and int(command(node.port, "ROLE")[2]) == primaries[1])
            cluster.kill(replica, signal.SIGSTOP)
            # Then only that primary's writes fail, with ReplicaAckMissing (they did run there)
            with pytest.raises(ReplicaAckMissing, match="only 0 of 1 replicas within 300 ms"):
                await router.execute(keys[primaries[1]], "INCR", keys[primaries[1]])
            assert command(primaries[1], "GET", keys[primaries[1]]) == "2"
            for port in (primaries[0], primaries[2]):
                assert await router.execute(keys[port], "INCR", keys[port]) == 2


# -- Sentinel ------------------------------------------------------------------------------------------------------


@pytest.fixture
def sentinel() -> Iterator[LocalRedisSentinel]:
    with LocalRedisSentinel() as started:
        yield started


def switch_primary_behind_the_sentinels_back(deployment: LocalRedisSentinel) -> tuple[int, int]:
    """Make a replica the primary and the primary its replica by hand, then have every sentinel watch the new one:
    a failover during which the old primary stays up and keeps its clients. (old port, new port)"""
    old = deployment.primary_port()
    new = next(server.port for server in deployment.servers if server.port != old)
    command(new, "REPLICAOF", "NO", "ONE")
    command(old, "REPLICAOF", "127.0.0.1", new)
    for port in deployment.sentinel_ports:
        command(port, "SENTINEL", "REMOVE", deployment.master_name)
        command(port, "SENTINEL", "MONITOR", deployment.master_name, "127.0.0.1", new, 2)
    return old, new


async def test_sentinel_commands_go_to_the_primary_the_sentinels_name(sentinel: LocalRedisSentinel) -> None:
    async with opened(sentinel.url) as router:
        sha = router.register_script(GET_LUA)
        await router.execute("k", "SET", "k", "v")
        assert await router.execute("k", "EVALSHA", sha, 1, "k", "x") == ["v", "x"]
        assert await served_by(router, "k") == sentinel.primary_port()
        assert command(sentinel.primary_port(), "GET", "k") == "v"
        assert [key async for batch in router.scan("*", type_="string") for key in batch] == ["k"]
    async with opened(sentinel.url.replace("/mymaster/0", "/mymaster/5")) as router:
        await router.execute("in-5", "SET", "in-5", "yes")
    with redis.Redis(port=sentinel.primary_port(), db=5, decode_responses=True) as direct:
        assert direct.get("in-5") == "yes"


async def test_sentinel_password_authenticates_to_the_sentinels(sentinel: LocalRedisSentinel) -> None:
    primary = sentinel.primary_port()  # the fixture cannot ask the sentinels once they want a password
    for port in sentinel.sentinel_ports:
        command(port, "ACL", "SETUSER", "default", "on", ">s3ntinel", "allcommands", "allkeys")

    async with opened(f"{sentinel.url}?sentinel_password=s3ntinel") as router:
        assert await served_by(router, "k") == primary
        assert "s3ntinel" not in router.description
    with pytest.raises(StoreUnavailable) as refused:
        await RedisRouter.open(f"{sentinel.url}?sentinel_password=wr0ng&socket_timeout=1")
    assert "WRONGPASS" in str(refused.value) and "wr0ng" not in str(refused.value)
    with pytest.raises(StoreUnavailable, match="NOAUTH"):
        await RedisRouter.open(f"{sentinel.url}?socket_timeout=1")


async def test_sentinel_a_readonly_reply_sends_the_command_to_the_new_primary(sentinel: LocalRedisSentinel) -> None:
    async with opened(sentinel.url) as router:
        await router.execute("k", "SET", "k", "before")
        old, new = switch_primary_behind_the_sentinels_back(sentinel)
        command(old, "CONFIG", "RESETSTAT")

        # The old primary, now a replica, refuses the write (READONLY): it runs on the new primary instead.
        assert await router.execute("k", "SET", "k", "after") == "OK"

        assert command(new, "GET", "k") == "after"
        assert await served_by(router, "k") == new
        assert errors_seen(old).get("READONLY") == 1


async def test_sentinel_a_failover_is_noticed_without_calls_while_the_old_primary_still_answers(
    sentinel: LocalRedisSentinel,
) -> None:
    async with opened(sentinel.url) as router:
        assert await served_by(router, None) == sentinel.primary_port()
        _, new = switch_primary_behind_the_sentinels_back(sentinel)

        await asyncio.sleep(3)  # more than the 2 s between checks with a sentinel

        # A read the old primary would still serve goes to the new one.
        assert await served_by(router, None) == new


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
async def test_sentinel_calls_resume_on_the_new_primary_after_the_old_one_dies(
    sentinel: LocalRedisSentinel, sig: signal.Signals,
) -> None:
    async with opened(f"{sentinel.url}?socket_timeout=1") as router:
        await router.execute("k", "SET", "k", "kept")
        await router.execute("k", "WAIT", 2, 2000)
        outcomes: Counter[str] = Counter()
        running = True

        async def write() -> None:
            n = 0
            while running:
                n += 1
                try:
                    await router.execute("n", "SET", "n", n)
                    outcomes["ok"] += 1
                except ConnectionClosed:
                    outcomes["unknown"] += 1  # the old primary died under it, or no primary yet
                    await asyncio.sleep(0.05)
                except ReplyError:
                    outcomes["refused"] += 1

        writer = asyncio.create_task(write())
        try:
            await asyncio.sleep(0.2)
            old = sentinel.kill_primary(sig)
            new = await asyncio.to_thread(sentinel.wait_for_failover, old)
            await asyncio.sleep(2.5)  # the router has checked with a sentinel since
            before = outcomes["ok"]
            await asyncio.sleep(0.5)
        finally:
            running = False
            await writer

        assert outcomes["refused"] == 0
        assert outcomes["ok"] > before, "no write succeeded after the failover"
        assert await router.execute("k", "GET", "k") == "kept"
        assert await served_by(router, "k") == new


@pytest.mark.slow
async def test_sentinel_a_graceful_failover_refuses_no_call(sentinel: LocalRedisSentinel) -> None:
    async with opened(sentinel.url) as router:
        refused: list[ReplyError] = []
        done = 0
        running = True

        async def write() -> None:
            nonlocal done
            while running:
                try:
                    await router.execute("n", "INCR", "n")
                    done += 1
                except ConnectionClosed:
                    await asyncio.sleep(0.01)  # its connection was closed by the failover: unknown outcome
                except ReplyError as exc:
                    refused.append(exc)

        writers = [asyncio.create_task(write()) for _ in range(8)]
        try:
            new = await asyncio.to_thread(sentinel.failover)
            await asyncio.sleep(0.5)
        finally:
            running = False
            await asyncio.gather(*writers)

        assert refused == []
        assert done > 0
        assert await served_by(router, "n") == new
        # Not asserted: that the count survived. Without WAIT it does not: Redis keeps taking writes on the old
        # primary until the sentinels demote it, and they are lost then (see the next test for the remedy).


@pytest.mark.slow
async def test_sentinel_with_wait_for_every_replica_no_acknowledged_write_is_lost_in_a_failover(
    sentinel: LocalRedisSentinel,
) -> None:
    # A replica is counted by WAIT once its first acknowledgement after the sync arrived (up to 1 s later).
    deadline = time.monotonic() + 5
    while command(sentinel.primary_port(), "WAIT", 2, 100) < 2:
        assert time.monotonic() < deadline, "the replicas never acknowledged"
    async with opened(f"{sentinel.url}?wait_replicas=2&wait_timeout=500") as router:
        acknowledged = unknown = 0
        refused: list[ReplyError] = []
        running = True

        async def write() -> None:
            nonlocal acknowledged, unknown
            while running:
                try:
                    await router.execute("n", "INCR", "n")
                    acknowledged += 1
                except ConnectionClosed:  # ReplicaAckMissing included: it may or may not survive
                    unknown += 1
                    await asyncio.sleep(0.01)
                except ReplyError as exc:
                    refused.append(exc)

        writers = [asyncio.create_task(write()) for _ in range(8)]
        try:
            await asyncio.sleep(0.3)
            new = await asyncio.to_thread(sentinel.failover)
            await asyncio.sleep(0.5)
        finally:
            running = False
            await asyncio.gather(*writers)

        assert refused == [] and acknowledged > 0
        assert await served_by(router, "n") == new
        final = int(await router.execute("n", "GET", "n"))
        assert acknowledged <= final <= acknowledged + unknown


# -- TLS -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


async def test_tls_to_one_server_verifies_its_certificate(tls: TLSFiles, tmp_path: Path) -> None:
    with LocalRedisServer(tls=tls) as server:
        assert server.url.startswith("rediss://")
        async with opened(server.url) as router:
            assert await router.execute("k", "SET", "k", "over-tls") == "OK"
            assert await router.execute("k", "GET", "k") == "over-tls"

        # A server whose certificate the given CA did not sign is refused ...
        stranger = make_tls_files(tmp_path)
        with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await RedisRouter.open(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={stranger.ca_cert}")
        # ... unless certificates are not checked at all.
        async with opened(f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none") as router:
            assert await router.execute("k", "GET", "k") == "over-tls"
        # A CA file that does not exist is a bad URL.
        with pytest.raises(InvalidStoreUrl, match="TLS files"):
            await RedisRouter.open(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={tmp_path / 'nothing.pem'}")


async def test_tls_to_a_cluster(tls: TLSFiles) -> None:
    with LocalRedisCluster(tls=tls) as cluster:
        assert cluster.url.startswith("rediss+cluster://")
        async with opened(cluster.url) as router:
            keys = [f"t:{n}" for n in range(300)]
            await asyncio.gather(*[router.execute(key, "SET", key, key) for key in keys])
            assert sorted(await router.each_primary("DBSIZE")) != [0, 0, 300]
            assert sum(await router.each_primary("DBSIZE")) == 300
            assert await asyncio.gather(*[router.execute(key, "GET", key) for key in keys]) == keys


@pytest.mark.slow
async def test_tls_to_sentinels_and_their_primary_through_a_failover(tls: TLSFiles) -> None:
    with LocalRedisSentinel(tls=tls) as deployment:
        assert deployment.url.startswith("rediss+sentinel://")
        async with opened(deployment.url) as router:
            await router.execute("k", "SET", "k", "over-tls")
            assert await router.execute("k", "WAIT", 2, 2000) == 2  # replication is asynchronous
            new = await asyncio.to_thread(deployment.failover)
            await router.execute("k2", "SET", "k2", "after")
            assert await served_by(router, "k2") == new
            assert await router.execute("k", "GET", "k") == "over-tls"
