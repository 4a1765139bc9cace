"""The fleet-wide lease hints beside the conversation scripts (store/_hints.py): what each update does, and that
a lost one only delays a takeover — the renewal, the sweeper and the audit repair it. Real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from statefleet.errors import StoreUnavailable
from statefleet.store import AcceptKind, ConversationKey, InboundMessage, Limits, TurnCommit
from statefleet.store._redis_keys import EPOCH_KEYS, conversation_keys, hint_key_of, hint_keys
from statefleet.store.redis import RedisStore

HINT_KEYS = hint_keys("v1")

LIMITS = Limits(window=4, lease_ttl=0.3)


def key(n: int) -> ConversationKey:
    return ConversationKey("t", f"c{n}")


def msg(text: str) -> InboundMessage:
    return InboundMessage(uuid.uuid4().hex, text, {}, None, time.time(), "fp")


def done(message_id: str) -> TurnCommit:
    return TurnCommit(message_id, "committed", [{"role": "user", "text": "x"}], "{}", {}, [])


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    opened = await RedisStore.open(redis_url)
    yield opened
    await opened.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def hint(store: RedisStore, raw: Redis, conversation: ConversationKey) -> float | None:
    await store._hints.drain()
    member = conversation_keys(conversation).member
    return await raw.zscore(hint_key_of(member, "v1"), member)


async def lose_hint(store: RedisStore, raw: Redis, conversation: ConversationKey) -> None:
    """What a crash between a script and its hint update leaves: the lease without a hint."""
    await store._hints.drain()
    member = conversation_keys(conversation).member
    await raw.zrem(hint_key_of(member, "v1"), member)


async def test_a_lease_is_hinted_at_its_expiry_and_unhinted_when_freed(store: RedisStore, raw: Redis) -> None:
    m = msg("one")
    acc = await store.accept(key(1), m, version="v1", owner="A", policy="enqueue", limits=LIMITS)
    assert acc.work is not None
    expiry = int(await raw.hget(conversation_keys(key(1)).meta, "x") or 0)
    assert await hint(store, raw, key(1)) == expiry
    await store.commit(acc.work.lease, done(m.id), limits=LIMITS)
    assert await hint(store, raw, key(1)) is None
    assert await store.backlog("v1") == 0


async def test_a_freed_lease_never_drops_a_later_leases_hint(store: RedisStore, raw: Redis) -> None:
    # Given A's lease was freed and B took a new one, but A's drop arrives after B's grant (instances race)
    m1 = msg("one")
    a = await store.accept(key(1), m1, version="v1", owner="A", policy="enqueue", limits=LIMITS)
    assert a.work is not None
    await store.commit(a.work.lease, done(m1.id), limits=LIMITS)
    old_expiry = await hint(store, raw, key(1))
    assert old_expiry is None
    await asyncio.sleep(0.01)
    b = await store.accept(key(1), msg("two"), version="v1", owner="B", policy="enqueue", limits=LIMITS)
    assert b.kind is AcceptKind.LEASED
    b_expiry = await hint(store, raw, key(1))
    assert b_expiry is not None
    # When A's late drop (for its lease's expiry, earlier than B's) is applied again
    a_expiry = b_expiry - 10
    store._hints.drop_if_due(conversation_keys(key(1)).member, "v1", int(a_expiry))
    # Then B's hint stays
    assert await hint(store, raw, key(1)) == b_expiry


async def test_a_lost_hint_of_a_live_lease_comes_back_with_the_next_renewal(store: RedisStore, raw: Redis) -> None:
    acc = await store.accept(key(1), msg("one"), version="v1", owner="A", policy="enqueue", limits=LIMITS)
    assert acc.work is not None
    await lose_hint(store, raw, key(1))
    assert (await store.renew(acc.work.lease, limits=LIMITS)).kept
    assert await hint(store, raw, key(1)) == int(await raw.hget(conversation_keys(key(1)).meta, "x") or 0)


async def test_a_dead_owners_lost_hint_is_found_by_the_audit_then_taken_over(store: RedisStore, raw: Redis) -> None:
    # Given owner A died right after its accept, before its hint went out
    acc = await store.accept(key(1), msg("one"), version="v1", owner="A", policy="enqueue", limits=LIMITS)
    assert acc.work is not None
    await lose_hint(store, raw, key(1))
    await asyncio.sleep(LIMITS.lease_ttl + 0.05)
    assert key(1) not in await store.expired_leases(100, version="v1")  # the sweeper cannot see it
    # When the audit runs
    assert await store.repair_hints("B") >= 1
    # Then the sweeper finds it and B takes it over
    assert key(1) in await store.expired_leases(100, version="v1")
    work = await store.reclaim(key(1), owner="B", limits=LIMITS, version="v1")
    assert work is not None and work.previous_owner == "A"
    # And only one instance of the fleet audits per minute
    assert await store.repair_hints("C") == 0


async def test_an_early_hint_is_moved_to_the_live_leases_expiry(store: RedisStore, raw: Redis) -> None:
    acc = await store.accept(key(1), msg("one"), version="v1", owner="A", policy="enqueue", limits=Limits(lease_ttl=30))
    assert acc.work is not None
    member = conversation_keys(key(1)).member
    await store._hints.drain()
    await raw.zadd(hint_key_of(member, "v1"), {member: 0})  # e.g. a renewal's update was lost, or the audit's
    assert key(1) in await store.expired_leases(100, version="v1")
    assert await store.reclaim(key(1), owner="B", limits=LIMITS, version="v1") is None  # live: not taken
    assert await hint(store, raw, key(1)) == int(await raw.hget(conversation_keys(key(1)).meta, "x") or 0)


async def test_a_stale_hint_of_an_idle_conversation_is_dropped_by_the_sweep(store: RedisStore, raw: Redis) -> None:
    member = conversation_keys(key(2)).member
    await raw.zadd(hint_key_of(member, "v1"), {member: 0})  # a freed lease whose drop was lost
    assert await store.backlog("v1") == 1
    assert await store.reclaim(key(2), owner="B", limits=LIMITS, version="v1") is None
    assert await hint(store, raw, key(2)) is None
    assert await store.backlog("v1") == 0


async def test_the_sweep_reads_every_shard_and_finds_a_big_batch(store: RedisStore, raw: Redis) -> None:
    # Given 400 conversations whose owner died (hints due in every shard)
    for n in range(400):
        await store.accept(key(n), msg("x"), version="v1", owner="A", policy="enqueue", limits=LIMITS)
    await store._hints.drain()
    assert all(await asyncio.gather(*[raw.zcard(shard) for shard in HINT_KEYS]))
    await asyncio.sleep(LIMITS.lease_ttl + 0.05)
    # Then one sweep call finds up to its limit, and the next ones the rest
    first = await store.expired_leases(300, version="v1")
    assert len(first) == 300
    assert len(set(await store.expired_leases(1000, version="v1"))) == 400


async def test_a_partly_lost_epoch_changes_once_for_every_instance(store: RedisStore, raw: Redis) -> None:
    # Given a fleet that has seen the epoch
    first = await store.fleet_epoch("e1")
    assert first == "e1" and await store.fleet_epoch("e2") == "e1"
    # When a Cluster shard comes back empty: the epoch copies in its slots are gone
    await raw.delete(*EPOCH_KEYS[:5])
    # Then every instance reads a changed epoch, the same one, and it stays put afterwards
    changed = await store.fleet_epoch("e3")
    assert changed != first and "e1" in changed.split("+")
    assert await store.fleet_epoch("e4") == changed


async def test_an_accept_whose_reply_was_lost_is_found_after_its_lease_expires(redis_url: str) -> None:
    # Given an accept that ran on Redis but whose reply never came back (here: the reply timed out)
    # (The margins matter on a loaded machine: the reply times out at 0.35 s, the server runs the accept at about
    # 0.45 s, and the connection would be retired, dropping what the server had not read yet, at 0.95 s.)
    store = await RedisStore.open(redis_url + "?socket_timeout=0.3")
    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        busy = ("local t = redis.call('TIME') local stop = t[1] * 1e6 + t[2] + 450000 "
                "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= stop return 1")
        slow = asyncio.create_task(raw.eval(busy, 0))  # the server is busy for 0.45 s
        await asyncio.sleep(0.05)
        with pytest.raises(StoreUnavailable):
            await store.accept(key(1), msg("one"), version="v1", owner="A", policy="enqueue", limits=LIMITS)
        await slow  # the server was busy: the accept ran after its caller gave up (soon after, on a busy machine)
        for _ in range(100):
            if await raw.hget(conversation_keys(key(1)).meta, "o") == "A":
                break
            await asyncio.sleep(0.02)
        assert (await raw.hget(conversation_keys(key(1)).meta, "o")) == "A"
        # Then the conversation is marked due, and once its lease expires the sweeper takes it over
        assert await hint(store, raw, key(1)) is not None
        await asyncio.sleep(LIMITS.lease_ttl + 0.05)
        assert key(1) in await store.expired_leases(100, version="v1")
        work = await store.reclaim(key(1), owner="B", limits=LIMITS, version="v1")
        assert work is not None and work.previous_owner == "A"
    finally:
        await raw.aclose()
        await store.close()
