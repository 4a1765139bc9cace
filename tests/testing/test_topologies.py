"""The multi-server Redis fixtures start real topologies, survive the faults they are for, and leave nothing behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot

from statefleet.testing.redis_cluster import SLOTS, LocalRedisCluster
from statefleet.testing.redis_sentinel import LocalRedisSentinel
from statefleet.testing.redis_server import LocalRedisServer
from statefleet.testing.tls import TLSFiles, make_tls_files


def child_redis_pids() -> set[int]:
    """The redis-server processes this test process started (other suites' servers are not ours to count)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.rpartition(")")
        if name.endswith("(redis-server") and int(rest.split()[1]) == os.getpid():
            pids.add(int(entry.name))
    return pids


@pytest.fixture(autouse=True)
def no_leaked_servers() -> Iterator[None]:
    before = child_redis_pids()
    yield
    assert child_redis_pids() <= before


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster() as started:
        yield started


@pytest.fixture
def sentinel() -> Iterator[LocalRedisSentinel]:
    with LocalRedisSentinel() as started:
        yield started


def cluster_client(cluster: LocalRedisCluster) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=cluster.primary_ports()[0], decode_responses=True)


def sentinel_client(deployment: LocalRedisSentinel) -> Sentinel:
    return Sentinel([("127.0.0.1", port) for port in deployment.sentinel_ports], socket_timeout=2)


# -- cluster --------------------------------------------------------------------------------------------------------


async def test_cluster_spreads_keys_over_three_primaries_with_a_replica_each(cluster: LocalRedisCluster) -> None:
    roles = sorted(node.role for node in cluster.nodes)
    assert roles == ["master"] * 3 + ["replica"] * 3
    primaries = cluster.primary_ports()
    assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in primaries) + "/"
    assert {cluster.primary_for_slot(slot) for slot in (0, SLOTS // 2, SLOTS - 1)} == set(primaries)

    client = cluster_client(cluster)
    try:
        for n in range(100):
            await client.set(f"key:{n}", n)
        assert [await client.get(f"key:{n}") for n in range(100)] == [str(n) for n in range(100)]
        cluster.flush()
        assert await client.get("key:0") is None
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_cluster_promotes_the_replica_of_a_killed_primary_and_takes_it_back(cluster: LocalRedisCluster) -> None:
    client = cluster_client(cluster)
    try:
        await client.set("survivor", "yes")
        await client.execute_command("WAIT", 1, 2000, target_nodes=client.get_node_from_key("survivor"))
    finally:
        await client.aclose()
    dead = cluster.primary_for_slot(key_slot(b"survivor"))

    cluster.kill(dead)
    promoted = cluster.wait_for_failover(dead)

    assert promoted != dead
    assert dead not in cluster.primary_ports() and promoted in cluster.primary_ports()
    assert {node.port: node.role for node in cluster.nodes}[dead] == "down"
    client = RedisCluster(host="127.0.0.1", port=promoted, decode_responses=True)
    try:
        assert await client.get("survivor") == "yes"
        await client.set("after", "failover")
    finally:
        await client.aclose()

    cluster.restart(dead)
    assert {node.port: node.role for node in cluster.nodes}[dead] == "replica"
    assert sorted(node.role for node in cluster.nodes) == ["master"] * 3 + ["replica"] * 3


@pytest.mark.slow
async def test_cluster_reshards_a_third_of_the_slots_while_a_client_writes(cluster: LocalRedisCluster) -> None:
    target = cluster.primary_ports()[1]
    owned_before = sum(cluster.primary_for_slot(slot) == target for slot in range(0, SLOTS, 64))
    client = cluster_client(cluster)
    written: dict[str, str] = {}
    resharding = True

    async def write() -> None:
        n = 0
        while resharding:
            await client.set(f"key:{n}", str(n))
            written[f"key:{n}"] = str(n)
            n += 1

    try:
        writer = asyncio.create_task(write())
        assert await asyncio.to_thread(cluster.reshard, 1 / 3, 60, target) == target
        resharding = False
        await writer

        owned_after = sum(cluster.primary_for_slot(slot) == target for slot in range(0, SLOTS, 64))
        assert owned_after - owned_before == pytest.approx(SLOTS / 3 / 64, abs=2)
        assert len(written) > 100
        assert [await client.get(key) for key in written] == list(written.values())
    finally:
        resharding = False
        await client.aclose()


def test_a_cluster_that_fails_to_start_leaves_nothing_running() -> None:
    with pytest.raises(Exception):  # noqa: B017 - redis-cli's timeout, whatever it raises
        LocalRedisCluster(start_timeout=0.001)


def test_a_failing_test_still_stops_the_cluster() -> None:
    with pytest.raises(ZeroDivisionError), LocalRedisCluster() as started:
        pids = {node.pid for node in started.nodes}
        _ = 1 / 0
    assert not pids & child_redis_pids()


# -- sentinel -------------------------------------------------------------------------------------------------------


async def test_sentinel_serves_the_primary_and_its_replicas(sentinel: LocalRedisSentinel) -> None:
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinel.sentinel_ports)
    assert sentinel.url == f"redis+sentinel://{hosts}/mymaster/0"
    assert len(sentinel.servers) == 3 and sentinel.primary_port() == sentinel.servers[0].port

    sentinels = sentinel_client(sentinel)
    assert await sentinels.discover_master("mymaster") == ("127.0.0.1", sentinel.primary_port())
    assert len(await sentinels.discover_slaves("mymaster")) == 2
    primary = sentinels.master_for("mymaster", decode_responses=True)
    try:
        await primary.set("greeting", "hello")
        assert await primary.get("greeting") == "hello"
        sentinel.flush()
        assert await primary.get("greeting") is None
    finally:
        await primary.aclose()


@pytest.mark.slow
async def test_sentinel_replaces_a_killed_primary(sentinel: LocalRedisSentinel) -> None:
    sentinels = sentinel_client(sentinel)
    primary = sentinels.master_for("mymaster", decode_responses=True)
    try:
        await primary.set("survivor", "yes")
        assert await primary.wait(2, 2000) == 2
    finally:
        await primary.aclose()

    old = sentinel.kill_primary()
    new = sentinel.wait_for_failover(old)

    assert new != old and sentinel.primary_port() == new
    primary = sentinel_client(sentinel).master_for("mymaster", decode_responses=True)
    try:
        assert await primary.get("survivor") == "yes"
        await primary.set("after", "failover")
    finally:
        await primary.aclose()


@pytest.mark.slow
async def test_sentinel_fails_over_gracefully(sentinel: LocalRedisSentinel) -> None:
    old = sentinel.primary_port()
    new = sentinel.failover()
    assert new != old and sentinel.primary_port() == new
    primary = sentinel_client(sentinel).master_for("mymaster", decode_responses=True)
    try:
        await primary.set("after", "failover")
        assert await primary.wait(2, 5000) == 2  # the old primary follows the new one
    finally:
        await primary.aclose()


def test_a_failing_test_still_stops_the_sentinels() -> None:
    with pytest.raises(ZeroDivisionError), LocalRedisSentinel() as started:
        workdir = started.workdir
        _ = 1 / 0
    assert not workdir.exists()


# -- TLS ------------------------------------------------------------------------------------------------------------


async def test_a_tls_server_answers_its_rediss_url_only_over_tls(tls: TLSFiles) -> None:
    with LocalRedisServer(tls=tls) as server:
        assert server.url == f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={tls.ca_cert}"
        client = redis.asyncio.from_url(server.url, decode_responses=True)
        plain = redis.asyncio.Redis(host="127.0.0.1", port=server.port, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            await client.set("secret", "kept")
            server.flush()
            assert await client.get("secret") is None
            with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
                await plain.ping()
        finally:
            await client.aclose()
            await plain.aclose()


async def test_a_tls_cluster_answers_over_tls(tls: TLSFiles) -> None:
    with LocalRedisCluster(tls=tls) as cluster:
        seeds = ",".join(f"127.0.0.1:{port}" for port in cluster.primary_ports())
        assert cluster.url == f"rediss+cluster://{seeds}/?ssl_ca_certs={tls.ca_cert}"
        client = RedisCluster(host="127.0.0.1", port=cluster.primary_ports()[0], decode_responses=True, ssl=True,
                              ssl_ca_certs=str(tls.ca_cert))
        try:
            assert await client.ping()
            await client.set("secret", "kept")
            assert await client.get("secret") == "kept"
        finally:
            await client.aclose()


async def test_a_tls_sentinel_deployment_answers_over_tls(tls: TLSFiles) -> None:
    with LocalRedisSentinel(tls=tls) as deployment:
        hosts = ",".join(f"127.0.0.1:{port}" for port in deployment.sentinel_ports)
        assert deployment.url == f"rediss+sentinel://{hosts}/mymaster/0?ssl_ca_certs={tls.ca_cert}"
        ssl_options = {"ssl": True, "ssl_ca_certs": str(tls.ca_cert)}
        sentinels = Sentinel([("127.0.0.1", port) for port in deployment.sentinel_ports], socket_timeout=2,
                             sentinel_kwargs=ssl_options, **ssl_options)
        assert await sentinels.discover_master("mymaster") == ("127.0.0.1", deployment.primary_port())
        primary = sentinels.master_for("mymaster", decode_responses=True)
        try:
            assert await primary.ping()
            await primary.set("secret", "kept")
            assert await primary.wait(2, 2000) == 2  # the replicas follow over TLS
        finally:
            await primary.aclose()


@pytest.mark.slow
def test_a_tls_cluster_and_sentinel_fail_over(tls: TLSFiles) -> None:
    with LocalRedisCluster(tls=tls) as cluster:
        dead = cluster.primary_ports()[0]
        cluster.kill(dead)
        assert cluster.wait_for_failover(dead) != dead
    with LocalRedisSentinel(tls=tls) as deployment:
        old = deployment.kill_primary()
        assert deployment.wait_for_failover(old) != old
