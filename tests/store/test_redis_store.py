"""What only the Redis store promises: key layout, TTLs, round trips, memory, and how it fails."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from statefleet.errors import StoreUnavailable
from statefleet.store import (
    Acceptance,
    CommitOutcome,
    ConversationKey,
    InboundMessage,
    Lease,
    Limits,
    TurnCommit,
    WorkItem,
    open_store,
)
from statefleet.store.memory import MemoryStore
from statefleet.store.redis import RedisStore, is_unavailable_reply
from statefleet.testing import LocalRedisServer

KEY = ConversationKey("default", "alice123")
TAG = "{default:alice123}"
LIMITS = Limits(window=3, lease_ttl=5.0)
#: Commands the scripts run inside Redis (INFO commandstats counts them too); anything else was sent.
SCRIPT_COMMANDS = {
    "time", "hmget", "hget", "hset", "hdel", "get", "set", "exists", "del", "pexpire", "llen", "lindex",
    "lpop", "rpush", "ltrim", "lrange", "zadd", "zrem", "zrangebyscore", "zrange", "zscore", "xadd", "incr", "decr",
    "decrby",
}


SEEDS = [int(seed) for seed in os.environ.get("SF_REDIS_SEEDS", "1,2,3").split(",")]


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def msg(text: str, *, key: str | None = None) -> InboundMessage:
    return InboundMessage(uuid.uuid4().hex, text, {"n": text}, key, time.time(), f"fp-{text}")


def done(message_id: str, text: str) -> TurnCommit:
    return TurnCommit(
        message_id=message_id,
        outcome="committed",
        utterances=[{"role": "user", "text": text}, {"role": "agent", "text": "re:" + text}],
        state_json=json.dumps({"last": text}),
        result={"reply": {"text": "re:" + text}},
        events=[{"type": "reply", "message_id": message_id, "text": "re:" + text}],
    )


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


async def conversation_keys(raw: Redis) -> list[str]:
    return sorted([key async for key in raw.scan_iter(match="sf:{*")])


async def assert_every_key_expires(raw: Redis) -> list[str]:
    keys = await conversation_keys(raw)
    assert keys
    for key in keys:
        assert TAG in key, f"{key} is outside the conversation's hash tag"
        assert await raw.pttl(key) > 0, f"{key} has no TTL"
    return keys


async def test_every_key_of_a_conversation_carries_a_ttl(store: RedisStore, raw: Redis) -> None:
    # Given a running turn with an idempotency key, and a second message queued behind it
    m1, m2 = msg("one", key="idem-1"), msg("two", key="idem-2")
    acc = await store.accept(KEY, m1, version="v1", owner="A", policy="enqueue", limits=LIMITS)
    await store.accept(KEY, m2, version="v1", owner="B", policy="enqueue", limits=LIMITS)
    await store.append_events({KEY: [{"type": "token", "text": "o"}]}, limits=LIMITS)
    # Then every key written so far expires
    after_accept = await assert_every_key_expires(raw)
    assert {k.rsplit(":", 1)[-1] for k in after_accept} >= {"m", "i", "e"}
    # When both turns commit
    assert acc.work is not None
    out = await store.commit(acc.work.lease, done(m1.id, "one"), limits=LIMITS)
    assert out.next is not None
    await store.commit(out.next.lease, done(m2.id, "two"), limits=LIMITS)
    # Then history, state, receipts and events all expire too (the emptied inbox is gone)
    after_commit = await assert_every_key_expires(raw)
    suffixes = {k.rsplit(":", 1)[-1] for k in after_commit}
    assert {"m", "h", "s", "e"} <= suffixes and "i" not in suffixes
    receipts = [k for k in after_commit if ":r:" in k]
    assert len(receipts) == 4  # k:idem-1, k:idem-2, and every message's outcome: m:<m1>, m:<m2>
    # And an outcome nobody waited for is kept only briefly (Limits.outcome_ttl), not for receipt_ttl
    (outcome,) = [k for k in receipts if k.endswith(f":m:{m1.id}")]
    assert 0 < await raw.pttl(outcome) <= LIMITS.outcome_ttl * 1000


async def test_history_never_exceeds_the_window(store: RedisStore, raw: Redis) -> None:
    for i in range(6):
        m = msg(f"t{i}")
        acc = await store.accept(KEY, m, version="v1", owner="A", policy="enqueue", limits=LIMITS)
        assert acc.work is not None
        await store.commit(acc.work.lease, done(m.id, f"t{i}"), limits=LIMITS)
        assert await raw.llen(f"sf:{TAG}:h") <= LIMITS.window
    view = await store.load(KEY)
    assert view is not None
    assert [u["text"] for u in view.history] == ["re:t4", "t5", "re:t5"]


async def command_calls(raw: Redis) -> dict[str, int]:
    stats = await raw.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


async def test_an_uncontended_turn_is_two_round_trips(store: RedisStore, raw: Redis) -> None:
    # (The process's first lease of a version also records the version, once: not part of a turn.)
    warm = msg("warm-up")
    first = await store.accept(ConversationKey("default", "warm-up"), warm, version="v1", owner="A",
                               policy="enqueue", limits=LIMITS)
    assert first.work is not None
    await store.commit(first.work.lease, done(warm.id, "hi"), limits=LIMITS)
    await store._hints.drain()
    m = msg("hello")
    await raw.config_resetstat()
    trips, hints = store.stats.round_trips, store.stats.ops.get("hints", 0)
    acc = await store.accept(KEY, m, version="v1", owner="A", policy="enqueue", limits=LIMITS)
    assert acc.work is not None
    await store.commit(acc.work.lease, done(m.id, "hello"), limits=LIMITS)
    assert store.stats.round_trips - trips == 2  # accept, commit: what the turn waits for
    await store._hints.drain()
    calls = await command_calls(raw)
    calls.pop("config|resetstat", None)  # this test's own
    sent = {name: n for name, n in calls.items() if name not in SCRIPT_COMMANDS}
    # Besides the two scripts, the lease hint's updates (grant, free) went out after their replies, unawaited,
    # together when the turn took less than the hints' flush delay.
    hint_calls = store.stats.ops["hints"] - hints
    assert 1 <= hint_calls <= 2
    assert sent == {"evalsha": 2 + hint_calls}


async def test_scripts_are_reloaded_after_a_script_flush(store: RedisStore, raw: Redis) -> None:
    await raw.script_flush()
    acc = await store.accept(KEY, msg("one"), version="v1", owner="A", policy="enqueue", limits=LIMITS)
    assert acc.work is not None


async def test_an_idle_conversation_costs_at_most_2_kib(store: RedisStore, raw: Redis) -> None:
    # Given a conversation whose window holds 5 utterances of ~100 bytes, now idle
    limits = Limits(window=5)
    text = "y" * 80
    for i in range(3):
        m = msg(f"t{i}")
        acc = await store.accept(KEY, m, version="v1", owner="instance-1", policy="enqueue", limits=limits)
        assert acc.work is not None
        commit = TurnCommit(m.id, "committed", [{"role": "user", "text": text}, {"role": "agent", "text": text}],
                            json.dumps({"step": i}), {"reply": {"text": text}}, [{"type": "reply"}])
        await store.commit(acc.work.lease, commit, limits=limits)
    # Then its keys (the event log aside: it expires after events_ttl) fit in 2 KiB
    usage = {key: await raw.memory_usage(key, samples=0) for key in await conversation_keys(raw)}
    total = sum(int(n or 0) for key, n in usage.items() if not key.endswith(":e"))
    assert total <= 2048, usage


async def _require_password(server: LocalRedisServer, password: str) -> None:
    raw = Redis.from_url(server.url)
    try:
        await raw.config_set("requirepass", password)
    finally:
        await raw.aclose()


async def test_repr_and_errors_hide_the_password() -> None:
    with LocalRedisServer() as server:
        await _require_password(server, "s3cret")
        store = await RedisStore.open(server.url.replace("redis://", "redis://:s3cret@"))
        try:
            assert "s3cret" not in repr(store) and ":***@" in repr(store)
            assert await store.load(KEY) is None  # AUTH went through
        finally:
            await store.close()
    with pytest.raises(StoreUnavailable) as caught:
        await RedisStore.open(f"redis://:s3cret@127.0.0.1:{closed_port()}/0")
    assert "s3cret" not in str(caught.value) and ":***@" in str(caught.value)


async def test_an_unreachable_store_fails_at_once(redis_url: str) -> None:
    async with asyncio.timeout(5):  # a bound on hanging, not a benchmark
        with pytest.raises(StoreUnavailable, match="cannot reach the Redis store"):
            await open_store(f"redis://127.0.0.1:{closed_port()}/0")


async def test_a_connection_the_server_closed_is_replaced_before_use(store: RedisStore, raw: Redis) -> None:
    # Given the server dropped the store's idle connection (a server or proxy idle timeout)
    await raw.client_kill_filter(skipme=True)
    await asyncio.sleep(0.05)
    # Then the next call reconnects before sending anything, instead of failing
    await store.ping()
    assert await store.load(KEY) is None


async def test_a_store_that_cannot_be_reached_raises_store_unavailable() -> None:
    with LocalRedisServer() as server:
        await _require_password(server, "s3cret")
        store = await RedisStore.open(server.url.replace("redis://", "redis://:s3cret@"))
    try:  # the server is gone
        with pytest.raises(StoreUnavailable, match="did not answer") as caught:
            await store.load(KEY)
        assert "s3cret" not in str(caught.value)
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.close()


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_operations_behave_like_the_reference(store: RedisStore, seed: int) -> None:
    """Redis runs the turn protocol in Lua; the memory store runs ``_records``. Same steps, same answers."""
    reference = MemoryStore()
    rng = random.Random(seed)
    limits = Limits(window=3, lease_ttl=60.0, inbox_max=4, max_attempts=2)
    keys = [KEY, ConversationKey("acme", "bob")]
    leases: list[Lease] = []
    message_ids: list[str] = []
    # Fencing tokens start at each incarnation's creation time in µs of the store's own clock, so the two
    # stores number leases differently: map Redis's tokens to the reference's as they are handed out.
    tokens: dict[tuple[ConversationKey, int], int] = {}

    def translated(value: Any) -> Any:
        """``value`` with Redis's fencing tokens replaced by the reference's."""
        if isinstance(value, Lease):
            return dataclasses.replace(value, token=tokens.get((value.key, value.token), -value.token))
        if isinstance(value, WorkItem):
            return dataclasses.replace(value, lease=translated(value.lease))
        if isinstance(value, Acceptance) and value.work is not None:
            return dataclasses.replace(value, work=translated(value.work))
        if isinstance(value, CommitOutcome) and value.next is not None:
            return dataclasses.replace(value, next=translated(value.next))
        return value

    def learn(got: WorkItem | None, want: WorkItem | None) -> None:
        if got is not None and want is not None:
            known = tokens.setdefault((got.lease.key, got.lease.token), want.lease.token)
            assert known == want.lease.token, f"Redis token {got.lease.token} maps to two reference tokens"

    def same(a: object, b: object, step: str) -> None:
        a = translated(a)
        assert a == b, f"{step}: redis {a!r} != reference {b!r}"

    def note(work: WorkItem | None) -> None:
        if work is not None:
            leases.append(work.lease)

    for step in range(400):
        key = rng.choice(keys)
        op = rng.choices(["accept", "commit", "renew", "release", "reclaim", "receipt", "load", "delete"],
                         [30, 25, 5, 8, 10, 8, 10, 1])[0]
        if op == "accept":
            idem = rng.choice([None, None, None, f"k{step % 7}", "k1"])
            m = msg(f"s{step}", key=idem)
            message_ids.append(m.id)
            args = dict(version=rng.choice(["v1"] * 9 + ["v2"]), owner=rng.choice("AB"),
                        policy=rng.choice(["enqueue", "enqueue", "reject", "interrupt"]), limits=limits)
            got, want = await store.accept(key, m, **args), await reference.accept(key, m, **args)  # type: ignore[arg-type]
            learn(got.work, want.work)
            same(got, want, f"{step} accept")
            note(got.work)
        elif op in ("commit", "renew", "release") and leases:
            lease = rng.choice(leases[-3:])
            if op == "commit":
                record = reference._records.get(lease.key)
                head = record.inbox[0].id if record and record.inbox and rng.random() < 0.9 else message_ids[-1]
                outcome = rng.choice(["committed", "committed", "failed", "cancelled"])
                commit = done(head, f"c{step}") if outcome == "committed" else TurnCommit(
                    head, outcome, [], None, {"error": {"code": outcome}}, [{"type": "error", "message_id": head}])
                got_c, want_c = await store.commit(lease, commit, limits=limits), \
                    await reference.commit(translated(lease), commit, limits=limits)
                learn(got_c.next, want_c.next)
                same(got_c, want_c, f"{step} commit")
                note(got_c.next)
            elif op == "renew":
                same(await store.renew(lease, limits=limits),
                     await reference.renew(translated(lease), limits=limits), str(step))
            else:
                started = rng.random() < 0.7
                await store.release(lease, started=started)
                await reference.release(translated(lease), started=started)
        elif op == "reclaim":
            owner = rng.choice("BC")
            got_w = await store.reclaim(key, owner=owner, limits=limits)
            want_w = await reference.reclaim(key, owner=owner, limits=limits)
            learn(got_w, want_w)
            same(got_w, want_w, f"{step} reclaim")
            note(got_w)
        elif op == "receipt" and message_ids:
            mid = rng.choice(message_ids[-6:])
            same(await store.receipt(key, message_id=mid), await reference.receipt(key, message_id=mid), str(step))
        elif op == "load":
            got_v, want_v = await store.load(key), await reference.load(key)
            if got_v is not None and want_v is not None:
                got_v = dataclasses.replace(got_v, created_at=0.0, active_at=0.0)
                want_v = dataclasses.replace(want_v, created_at=0.0, active_at=0.0)
            same(got_v, want_v, f"{step} load")
        elif op == "delete":
            same(await store.delete(key), await reference.delete(key), f"{step} delete")
        same(sorted(map(str, await store.expired_leases(100))),
             sorted(map(str, await reference.expired_leases(100))), f"{step} expired_leases")
    for key in keys:
        got_e = [(e.type, e.data) for e in await store.read_events(key, after=None, limit=1000)]
        want_e = [(e.type, e.data) for e in await reference.read_events(key, after=None, limit=1000)]
        same(got_e, want_e, "events")


async def test_a_busy_server_is_unavailable_not_an_internal_error() -> None:
    # Given a real Redis busy running a long script (as after a slow Lua call, or while loading its data)
    with LocalRedisServer("--busy-reply-threshold", "50") as server:
        store = await RedisStore.open(server.url)
        blocker = Redis.from_url(server.url)
        killer = Redis.from_url(server.url)
        busy_loop = "local s = redis.call('TIME')[1] while tonumber(redis.call('TIME')[1]) - s < 5 do end return 1"
        running = asyncio.create_task(blocker.eval(busy_loop, 0))
        try:
            await asyncio.sleep(0.3)
            # When a turn's script and a plain command reach it
            with pytest.raises(StoreUnavailable, match="BUSY"):
                await store.accept(KEY, msg("hello"), version="v1", owner="A", policy="enqueue", limits=LIMITS)
            with pytest.raises(StoreUnavailable, match="BUSY"):
                await store.backlog()
        finally:
            await killer.script_kill()
            with contextlib.suppress(Exception):
                await running
            await blocker.aclose()
            await killer.aclose()
        # Then, once it is free again, the same store serves without a restart
        acc = await store.accept(KEY, msg("hello"), version="v1", owner="A", policy="enqueue", limits=LIMITS)
        assert acc.work is not None
        await store.close()


def test_every_not_now_reply_of_redis_counts_as_unavailable() -> None:
    for reply in ("LOADING Redis is loading the dataset in memory", "BUSY Redis is busy running a script.",
                  "MASTERDOWN Link with MASTER is down", "READONLY You can't write against a read only replica.",
                  "TRYAGAIN Multiple keys request during rehashing of slot", "CLUSTERDOWN The cluster is down"):
        assert is_unavailable_reply(reply), reply
    assert not is_unavailable_reply("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert not is_unavailable_reply("ERR unknown command")
