"""The Redis store on a Redis Cluster and behind Sentinel, beyond the contract suite (which runs there too):
round trips per turn counted by the servers, and where the keys land."""

from __future__ import annotations

import time
import uuid

import pytest
from redis import Redis

from statefleet.store import ConversationKey, InboundMessage, Limits, TurnCommit
from statefleet.store._redis_keys import hint_keys
from statefleet.store.redis import RedisStore
from statefleet.testing.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.slow

LIMITS = Limits(window=4, lease_ttl=5)


def msg(text: str) -> InboundMessage:
    return InboundMessage(uuid.uuid4().hex, text, {}, f"key-{text}", time.time(), "fp")


def done(message: InboundMessage) -> TurnCommit:
    """The commit the engine makes: it names the message's idempotency key, so its receipt is in KEYS."""
    return TurnCommit(message.id, "committed", [{"role": "user", "text": "x"}], "{}", {}, [],
                      idempotency_key=message.idempotency_key)


def evalsha_calls(ports: list[int]) -> int:
    total = 0
    for port in ports:
        with Redis(port=port) as node:
            total += int(node.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    return total


def reset_stats(ports: list[int]) -> None:
    for port in ports:
        with Redis(port=port) as node:
            node.config_resetstat()


async def test_an_uncontended_turn_on_a_cluster_is_two_round_trips(redis_cluster: LocalRedisCluster) -> None:
    redis_cluster.flush()
    store = await RedisStore.open(redis_cluster.url)
    try:
        ports = redis_cluster.primary_ports()
        for n in range(20):  # conversations in every corner of the slot space
            key = ConversationKey("t", f"c{n}")
            m = msg(f"m{n}")
            await store._hints.drain()
            reset_stats(ports)
            trips, hints = store.stats.round_trips, store.stats.ops.get("hints", 0)
            acc = await store.accept(key, m, version="v1", owner="A", policy="enqueue", limits=LIMITS)
            assert acc.work is not None
            out = await store.commit(acc.work.lease, done(m), limits=LIMITS)
            assert not out.fenced
            # What the turn waited for: accept, then commit — the idempotency receipt named up front
            assert store.stats.round_trips - trips == 2
            await store._hints.drain()
            hint_calls = store.stats.ops["hints"] - hints
            assert 1 <= hint_calls <= 2
            # Counted by the servers: no redirection, no retry, nothing else
            assert evalsha_calls(ports) == 2 + hint_calls
    finally:
        await store.close()


async def test_the_hint_shards_spread_over_the_primaries(redis_cluster: LocalRedisCluster) -> None:
    owners = {redis_cluster.primary_for_slot(_slot(key)) for key in hint_keys("v1")}
    assert owners == set(redis_cluster.primary_ports())


def _slot(key: str) -> int:
    from redis.crc import key_slot

    return int(key_slot(key.encode()))
