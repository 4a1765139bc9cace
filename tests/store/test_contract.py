"""The Store contract: one suite, every backend (memory, sqlite, a real redis-server)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from conftest import BACKENDS, REDIS_TOPOLOGIES
from statefleet.store import (
    AcceptKind,
    ConversationKey,
    InboundMessage,
    Lease,
    Limits,
    Store,
    TurnCommit,
)

pytestmark = pytest.mark.parametrize("backend", [*BACKENDS, *REDIS_TOPOLOGIES], indirect=True)

KEY = ConversationKey("default", "alice123")
LIMITS = Limits(window=4, lease_ttl=0.5)


def msg(text: str, *, key: str | None = None, fp: str = "") -> InboundMessage:
    return InboundMessage(uuid.uuid4().hex, text, {"n": text}, key, time.time(), fp or f"fp-{text}")


def done(message_id: str, turn_text: str, *, state: dict[str, object] | None = None) -> TurnCommit:
    return TurnCommit(
        message_id=message_id,
        outcome="committed",
        utterances=[{"role": "user", "text": turn_text}, {"role": "agent", "text": "re:" + turn_text}],
        state_json=json.dumps(state if state is not None else {"last": turn_text}),
        result={"reply": {"text": "re:" + turn_text}},
        events=[{"type": "reply", "message_id": message_id, "text": "re:" + turn_text}],
    )


async def accept(store: Store, m: InboundMessage, owner: str = "A", policy: str = "enqueue",
                 version: str = "v1", key: ConversationKey = KEY):
    return await store.accept(key, m, version=version, owner=owner, policy=policy,  # type: ignore[arg-type]
                              limits=LIMITS)


async def test_first_message_takes_the_lease_with_empty_history(store: Store) -> None:
    m = msg("hello")
    acc = await accept(store, m)
    assert acc.kind is AcceptKind.LEASED
    assert acc.work is not None
    assert acc.work.message == m
    assert acc.work.history == [] and acc.work.state == {} and acc.work.turns == 0
    assert acc.work.lease.owner == "A" and acc.work.lease.token >= 1
    assert acc.work.attempt == 1 and acc.work.version == "v1"


async def test_commit_updates_history_state_turns_and_frees_the_lease(store: Store) -> None:
    m = msg("hello")
    acc = await accept(store, m)
    assert acc.work is not None
    out = await store.commit(acc.work.lease, done(m.id, "hello"), limits=LIMITS)
    assert not out.fenced and out.next is None and out.turns == 1
    view = await store.load(KEY)
    assert view is not None
    assert view.turns == 1 and view.state == {"last": "hello"} and view.pending == 0
    assert [u["text"] for u in view.history] == ["hello", "re:hello"]
    assert view.lease_owner is None and view.version == "v1"
    # the next message gets the lease again, with a strictly greater token, and sees the window
    m2 = msg("again")
    acc2 = await accept(store, m2, owner="B")
    assert acc2.kind is AcceptKind.LEASED and acc2.work is not None
    assert acc2.work.lease.token > acc.work.lease.token
    assert [u["text"] for u in acc2.work.history] == ["hello", "re:hello"]
    assert acc2.work.turns == 1 and acc2.work.state == {"last": "hello"}


async def test_history_is_trimmed_to_the_window(store: Store) -> None:
    for i in range(5):
        m = msg(f"t{i}")
        acc = await accept(store, m)
        assert acc.work is not None
        await store.commit(acc.work.lease, done(m.id, f"t{i}"), limits=LIMITS)
    view = await store.load(KEY)
    assert view is not None and view.turns == 5
    assert [u["text"] for u in view.history] == ["t3", "re:t3", "t4", "re:t4"]


async def test_second_message_queues_and_is_handed_on_at_commit(store: Store) -> None:
    m1, m2 = msg("one"), msg("two")
    acc1 = await accept(store, m1, owner="A")
    acc2 = await accept(store, m2, owner="B")
    assert acc2.kind is AcceptKind.QUEUED and acc2.owner == "A"
    assert (await store.receipt(KEY, message_id=m2.id)).status == "pending"  # type: ignore[union-attr]
    assert acc1.work is not None
    out = await store.commit(acc1.work.lease, done(m1.id, "one"), limits=LIMITS)
    assert out.next is not None and out.next.message == m2
    assert out.next.lease == acc1.work.lease  # the same lease runs on
    assert [u["text"] for u in out.next.history] == ["one", "re:one"]
    out2 = await store.commit(out.next.lease, done(m2.id, "two"), limits=LIMITS)
    assert out2.next is None and out2.turns == 2
    receipt = await store.receipt(KEY, message_id=m2.id)
    assert receipt is not None and receipt.status == "committed"
    assert receipt.result == {"reply": {"text": "re:two"}}


async def test_reject_policy_refuses_while_busy_and_accepts_nothing(store: Store) -> None:
    m1 = msg("one")
    acc1 = await accept(store, m1)
    acc2 = await accept(store, msg("two"), owner="B", policy="reject")
    assert acc2.kind is AcceptKind.REJECTED
    view = await store.load(KEY)
    assert view is not None and view.pending == 1
    assert acc1.work is not None
    out = await store.commit(acc1.work.lease, done(m1.id, "one"), limits=LIMITS)
    assert out.next is None


async def test_interrupt_policy_flags_the_running_turn(store: Store) -> None:
    m1 = msg("one")
    acc1 = await accept(store, m1)
    assert acc1.work is not None
    assert (await store.renew(acc1.work.lease, limits=LIMITS)).interrupt is False
    acc2 = await accept(store, msg("two"), owner="B", policy="interrupt")
    assert acc2.kind is AcceptKind.QUEUED
    renewed = await store.renew(acc1.work.lease, limits=LIMITS)
    assert renewed.kept and renewed.interrupt
    cancelled = TurnCommit(m1.id, "cancelled", [], None, {"error": {"code": "turn_interrupted"}},
                           [{"type": "cancelled", "message_id": m1.id}])
    out = await store.commit(acc1.work.lease, cancelled, limits=LIMITS)
    assert out.next is not None and out.next.message.text == "two" and out.turns == 0
    assert (await store.renew(out.next.lease, limits=LIMITS)).interrupt is False
    view = await store.load(KEY)
    assert view is not None and view.history == [] and view.turns == 0 and view.state == {}


async def test_idempotency_key_returns_the_same_message_and_result(store: Store) -> None:
    m = msg("pay", key="k-1")
    acc = await accept(store, m)
    dup = await accept(store, msg("pay", key="k-1"), owner="B")
    assert dup.kind is AcceptKind.DUPLICATE and dup.message_id == m.id
    assert dup.receipt is not None and dup.receipt.status == "pending"
    assert dup.receipt.fingerprint == m.fingerprint
    assert acc.work is not None
    await store.commit(acc.work.lease, done(m.id, "pay"), limits=LIMITS)
    again = await accept(store, msg("pay", key="k-1"), owner="B")
    assert again.kind is AcceptKind.DUPLICATE and again.receipt is not None
    assert again.receipt.status == "committed" and again.receipt.result == {"reply": {"text": "re:pay"}}
    view = await store.load(KEY)
    assert view is not None and view.turns == 1 and view.pending == 0


async def test_concurrent_duplicates_accept_one_message(store: Store) -> None:
    results = await asyncio.gather(*[accept(store, msg("x", key="same"), owner=f"o{i}") for i in range(5)])
    kinds = sorted(r.kind.value for r in results)
    assert kinds.count("leased") == 1 and kinds.count("duplicate") == 4
    assert len({r.message_id for r in results}) == 1
    view = await store.load(KEY)
    assert view is not None and view.pending == 1


async def test_stale_token_is_fenced_and_writes_nothing(store: Store) -> None:
    m = msg("one")
    acc = await accept(store, m, owner="A")
    assert acc.work is not None
    await asyncio.sleep(LIMITS.lease_ttl + 0.1)
    assert KEY in await store.expired_leases(100)
    work = await store.reclaim(KEY, owner="B", limits=LIMITS)
    assert work is not None and work.message == m and work.attempt == 2
    assert work.previous_owner == "A"
    assert work.lease.token > acc.work.lease.token
    stale = await store.commit(acc.work.lease, done(m.id, "stale"), limits=LIMITS)
    assert stale.fenced
    assert not (await store.renew(acc.work.lease, limits=LIMITS)).kept
    fresh = await store.commit(work.lease, done(m.id, "fresh"), limits=LIMITS)
    assert not fresh.fenced
    view = await store.load(KEY)
    assert view is not None and view.turns == 1 and view.state == {"last": "fresh"}


async def test_trace_context_travels_with_the_message_through_handover_and_takeover(store: Store) -> None:
    # Given two messages sent with W3C trace contexts (and one without), queued behind each other
    t1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    t2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    m1 = InboundMessage(uuid.uuid4().hex, "one", {}, None, time.time(), "fp1", t1)
    m2 = InboundMessage(uuid.uuid4().hex, "two", {}, None, time.time(), "fp2", t2)
    m3 = msg("three")
    acc = await accept(store, m1, owner="A")
    await accept(store, m2, owner="A")
    await accept(store, m3, owner="A")
    assert acc.work is not None and acc.work.message.trace == t1
    # When the first commits (handing the lease on) and the owner then dies
    out = await store.commit(acc.work.lease, done(m1.id, "one"), limits=LIMITS)
    assert out.next is not None and out.next.message.trace == t2
    await asyncio.sleep(LIMITS.lease_ttl + 0.1)
    work = await store.reclaim(KEY, owner="B", limits=LIMITS)
    # Then the taker-over still sees the trace context the message was accepted with
    assert work is not None and work.message == m2 and work.message.trace == t2
    after = await store.commit(work.lease, done(m2.id, "two"), limits=LIMITS)
    assert after.next is not None and after.next.message.trace is None


async def test_reclaim_leaves_a_live_lease_alone(store: Store) -> None:
    acc = await accept(store, msg("one"), owner="A")
    assert acc.work is not None
    assert await store.reclaim(KEY, owner="B", limits=LIMITS) is None
    assert (await store.renew(acc.work.lease, limits=LIMITS)).kept


async def test_expired_lease_with_empty_inbox_is_not_reclaimed(store: Store) -> None:
    m = msg("one")
    acc = await accept(store, m)
    assert acc.work is not None
    await store.commit(acc.work.lease, done(m.id, "one"), limits=LIMITS)
    await asyncio.sleep(LIMITS.lease_ttl + 0.1)
    assert KEY not in await store.expired_leases(100)
    assert await store.reclaim(KEY, owner="B", limits=LIMITS) is None


async def test_released_lease_is_reclaimable_at_once(store: Store) -> None:
    m1, m2 = msg("one"), msg("two")
    acc = await accept(store, m1, owner="A")
    await accept(store, m2, owner="A")
    assert acc.work is not None
    await store.release(acc.work.lease)
    assert KEY in await store.expired_leases(100)
    work = await store.reclaim(KEY, owner="B", limits=LIMITS)
    assert work is not None and work.message == m1 and work.lease.owner == "B"


async def test_a_message_that_keeps_dying_fails_after_max_attempts(store: Store) -> None:
    limits = Limits(window=4, lease_ttl=0.05, max_attempts=2)
    m1, m2 = msg("poison"), msg("fine")
    await store.accept(KEY, m1, version="v1", owner="A", policy="enqueue", limits=limits)
    await store.accept(KEY, m2, version="v1", owner="A", policy="enqueue", limits=limits)
    await asyncio.sleep(0.1)
    work = await store.reclaim(KEY, owner="B", limits=limits)  # attempt 2
    assert work is not None and work.message == m1 and work.attempt == 2
    await asyncio.sleep(0.1)
    work = await store.reclaim(KEY, owner="C", limits=limits)  # m1 gives up, m2 runs
    assert work is not None and work.message == m2 and work.attempt == 1
    receipt = await store.receipt(KEY, message_id=m2.id)
    assert receipt is not None and receipt.status == "pending"
    events = await store.read_events(KEY, after=None, limit=10)
    assert [e.type for e in events] == ["error"] and events[0].data["message_id"] == m1.id


async def test_accept_after_owner_death_takes_over_the_abandoned_head(store: Store) -> None:
    m1 = msg("one")
    await accept(store, m1, owner="A")
    await asyncio.sleep(LIMITS.lease_ttl + 0.1)
    m2 = msg("two")
    acc = await accept(store, m2, owner="B")
    assert acc.kind is AcceptKind.LEASED and acc.work is not None
    assert acc.work.message == m1 and acc.work.lease.owner == "B"
    assert (await store.receipt(KEY, message_id=m2.id)).status == "pending"  # type: ignore[union-attr]


async def test_wrong_version_is_refused_and_nothing_accepted(store: Store) -> None:
    m = msg("one")
    acc = await accept(store, m)
    assert acc.work is not None
    await store.commit(acc.work.lease, done(m.id, "one"), limits=LIMITS)
    other = await accept(store, msg("two"), version="v2")
    assert other.kind is AcceptKind.WRONG_VERSION and other.version == "v1"
    view = await store.load(KEY)
    assert view is not None and view.pending == 0 and view.turns == 1


async def test_failed_outcome_acks_the_message_without_touching_history(store: Store) -> None:
    m = msg("boom")
    acc = await accept(store, m)
    assert acc.work is not None
    failed = TurnCommit(m.id, "failed", [], None, {"error": {"code": "turn_failed", "message": "x"}},
                        [{"type": "error", "message_id": m.id}])
    out = await store.commit(acc.work.lease, failed, limits=LIMITS)
    assert not out.fenced and out.turns == 0
    view = await store.load(KEY)
    assert view is not None and view.turns == 0 and view.history == [] and view.pending == 0


async def test_commit_of_a_message_twice_is_fenced(store: Store) -> None:
    m1, m2 = msg("one"), msg("two")
    acc = await accept(store, m1)
    await accept(store, m2)
    assert acc.work is not None
    await store.commit(acc.work.lease, done(m1.id, "one"), limits=LIMITS)
    again = await store.commit(acc.work.lease, done(m1.id, "one"), limits=LIMITS)
    assert again.fenced
    view = await store.load(KEY)
    assert view is not None and view.turns == 1 and view.pending == 1


async def test_events_are_ordered_resumable_and_bounded(store: Store) -> None:
    limits = Limits(events_max=5)
    await store.append_events({KEY: [{"type": "token", "text": str(i)} for i in range(3)]}, limits=limits)
    first = await store.read_events(KEY, after=None, limit=100)
    assert [e.data["text"] for e in first] == ["0", "1", "2"] and first[0].type == "token"
    later = await store.read_events(KEY, after=first[0].id, limit=100)
    assert [e.data["text"] for e in later] == ["1", "2"]
    await store.append_events({KEY: [{"type": "token", "text": str(i)} for i in range(3, 10)]}, limits=limits)
    kept = await store.read_events(KEY, after=None, limit=100)
    assert [e.data["text"] for e in kept] == ["5", "6", "7", "8", "9"]
    tail = await store.read_events(KEY, after=kept[-1].id, limit=100)
    assert tail == []


async def test_one_append_writes_several_conversations_logs_each_in_order(store: Store) -> None:
    # Given two conversations whose tokens an engine writes in one call
    other = ConversationKey(KEY.tenant, KEY.id + "-other")
    await store.append_events({
        KEY: [{"type": "token", "text": "a1"}, {"type": "token", "text": "a2"}],
        other: [{"type": "token", "text": "b1"}],
    }, limits=LIMITS)
    await store.append_events({other: [{"type": "token", "text": "b2"}], KEY: []}, limits=LIMITS)
    # Then each log holds its own events, in the order given
    mine = await store.read_events(KEY, after=None, limit=10)
    theirs = await store.read_events(other, after=None, limit=10)
    assert [e.data["text"] for e in mine] == ["a1", "a2"]
    assert [e.data["text"] for e in theirs] == ["b1", "b2"]


async def test_delete_removes_everything(store: Store) -> None:
    m = msg("one", key="k")
    acc = await accept(store, m)
    assert acc.work is not None
    await store.commit(acc.work.lease, done(m.id, "one"), limits=LIMITS)
    assert await store.delete(KEY) is True
    assert await store.load(KEY) is None
    assert await store.read_events(KEY, after=None, limit=10) == []
    fresh = await accept(store, msg("one", key="k"))
    assert fresh.kind is AcceptKind.LEASED  # the old idempotency record went with it
    assert await store.delete(ConversationKey("default", "nobody")) is False


async def test_conversations_are_isolated_by_tenant(store: Store) -> None:
    other = ConversationKey("acme", KEY.id)
    a = await accept(store, msg("mine"))
    b = await accept(store, msg("theirs"), key=other)
    assert a.kind is AcceptKind.LEASED and b.kind is AcceptKind.LEASED


async def test_load_unknown_is_none_and_ping_answers(store: Store) -> None:
    assert await store.load(ConversationKey("default", "ghost")) is None
    await store.ping()


async def test_renew_of_unknown_lease_is_not_kept(store: Store) -> None:
    lease = Lease(ConversationKey("default", "ghost"), "A", 1)
    assert not (await store.renew(lease, limits=LIMITS)).kept


async def test_backlog_counts_conversations_with_uncommitted_messages_fleet_wide(store: Store) -> None:
    other = ConversationKey("default", "other")
    m1, m2, m3 = msg("one"), msg("two"), msg("three")
    acc = await accept(store, m1)
    await accept(store, m2)
    await accept(store, m3, key=other)
    assert await store.backlog() == 2
    assert acc.work is not None
    out = await store.commit(acc.work.lease, done(m1.id, "one"), limits=LIMITS)
    assert await store.backlog() == 2
    assert out.next is not None
    await store.commit(out.next.lease, done(m2.id, "two"), limits=LIMITS)
    assert await store.backlog() == 1
    await store.delete(other)
    assert await store.backlog() == 0


async def test_instances_register_expire_and_deregister(store: Store) -> None:
    await store.register_instance("i-1", {"id": "i-1", "version": "v1"}, ttl=30)
    await store.register_instance("i-2", {"id": "i-2", "version": "v2"}, ttl=0.2)
    assert sorted(i["id"] for i in await store.instances()) == ["i-1", "i-2"]
    await asyncio.sleep(0.3)
    assert [i["id"] for i in await store.instances()] == ["i-1"]
    await store.register_instance("i-1", {"id": "i-1", "version": "v1", "in_flight": 3}, ttl=30)
    assert (await store.instances())[0]["in_flight"] == 3
    await store.deregister_instance("i-1")
    assert await store.instances() == []


async def test_every_outcome_is_readable_by_message_id_after_commit(store: Store) -> None:
    # Given an uncontended turn (nobody waited on a receipt at accept)
    m = msg("hello")
    acc = await accept(store, m)
    assert acc.work is not None
    # When it commits
    await store.commit(acc.work.lease, done(m.id, "hello"), limits=LIMITS)
    # Then an owner whose reply was lost can still read back that, and how, the message committed
    receipt = await store.receipt(KEY, message_id=m.id)
    assert receipt is not None and receipt.status == "committed"
    assert receipt.result == {"reply": {"text": "re:hello"}}


async def test_a_retried_commit_is_refused_and_the_receipt_tells_it_landed(store: Store) -> None:
    # Given a commit that landed but whose reply the owner never saw
    m = msg("hello")
    acc = await accept(store, m)
    assert acc.work is not None
    await store.commit(acc.work.lease, done(m.id, "hello"), limits=LIMITS)
    # When the owner sends the same commit again
    again = await store.commit(acc.work.lease, done(m.id, "hello"), limits=LIMITS)
    # Then nothing is applied twice, and the receipt says it committed once
    assert again.fenced
    view = await store.load(KEY)
    assert view is not None and view.turns == 1 and len(view.history) == 2
    receipt = await store.receipt(KEY, message_id=m.id)
    assert receipt is not None and receipt.status == "committed"


async def test_fencing_tokens_keep_rising_after_a_delete(store: Store) -> None:
    # Given a lease of a conversation that is then deleted and started again
    first = await accept(store, msg("one"))
    assert first.work is not None
    assert await store.delete(KEY)
    second = await accept(store, msg("two"))
    # Then the new incarnation's token is above the old one's: a stale owner can never present it
    assert second.work is not None
    assert second.work.lease.token > first.work.lease.token
    assert not (await store.renew(first.work.lease, limits=LIMITS)).kept


async def test_a_grant_handed_back_unstarted_is_not_an_attempt(store: Store) -> None:
    # Given a message queued behind a running turn, handed to the owner when that turn commits
    m1, m2 = msg("one"), msg("two")
    acc = await accept(store, m1)
    await accept(store, m2, owner="B")
    assert acc.work is not None
    out = await store.commit(acc.work.lease, done(m1.id, "one"), limits=LIMITS)
    assert out.next is not None and out.next.attempt == 1
    # When the owner drains and hands it back without starting it
    await store.release(out.next.lease, started=False)
    # Then the next owner runs it as its first attempt
    work = await store.reclaim(KEY, owner="C", limits=LIMITS)
    assert work is not None and work.message.id == m2.id and work.attempt == 1
    # And a grant handed back after the handler started does count
    await store.release(work.lease, started=True)
    work = await store.reclaim(KEY, owner="D", limits=LIMITS)
    assert work is not None and work.attempt == 2


async def test_backlog_forgets_a_conversation_that_expired_with_messages_waiting(store: Store) -> None:
    # Given a message waiting in a conversation that then expires (idle TTL) before anyone runs it
    short = Limits(window=4, lease_ttl=0.05, conversation_ttl=0.2)
    await store.accept(KEY, msg("one"), version="v1", owner="A", policy="enqueue", limits=short)
    assert await store.backlog() == 1
    await asyncio.sleep(0.4)
    # When the sweeper visits its lease hint
    for key in await store.expired_leases(100):
        assert await store.reclaim(key, owner="B", limits=short) is None
    # Then the fleet-wide backlog no longer counts it (no drift)
    assert await store.backlog() == 0
    assert await store.expired_leases(100) == []


async def test_fleet_epoch_is_set_once_and_then_kept(store: Store) -> None:
    first = await store.fleet_epoch("epoch-a")
    assert first == "epoch-a"
    assert await store.fleet_epoch("epoch-b") == "epoch-a"


async def test_error_events_have_one_shape(store: Store) -> None:
    # Given a message whose instance keeps dying (max_attempts grants, none committed)
    limits = Limits(window=4, lease_ttl=0.05, max_attempts=1)
    m = msg("poison")
    await store.accept(KEY, m, version="v1", owner="A", policy="enqueue", limits=limits)
    await asyncio.sleep(0.1)
    # When the sweeper gives up on it
    assert await store.reclaim(KEY, owner="B", limits=limits) is None
    # Then its error event is flat, like a failed commit's: {type, message_id, code, message}
    (event,) = [e for e in await store.read_events(KEY, after=None, limit=10) if e.type == "error"]
    assert event.data["message_id"] == m.id and event.data["code"] == "too_many_attempts"
    assert "error" not in event.data
    receipt = await store.receipt(KEY, message_id=m.id)
    assert receipt is not None and receipt.status == "failed"


# -- versions: pinning, version-scoped takeover, routing weights ---------------------------------------------


async def test_a_new_conversation_assigned_to_another_version_is_not_created(store: Store) -> None:
    m = msg("hello")
    acc = await store.accept(KEY, m, version="v1", owner="A", policy="enqueue", limits=LIMITS, new_version="v2")
    assert acc.kind is AcceptKind.WRONG_VERSION and acc.version == "v2"
    assert await store.load(KEY) is None and await store.backlog() == 0
    # An instance of v2 creates it, pinned to v2; v1 is refused from then on, whatever it asks for
    acc = await store.accept(KEY, m, version="v2", owner="B", policy="enqueue", limits=LIMITS, new_version="v2")
    assert acc.kind is AcceptKind.LEASED and acc.work is not None and acc.work.lease.version == "v2"
    assert (await accept(store, msg("again"), version="v1")).version == "v2"
    view = await store.load(KEY)
    assert view is not None and view.version == "v2" and view.pending == 1


async def test_an_existing_conversation_keeps_its_version_whatever_a_new_one_would_get(store: Store) -> None:
    first = await accept(store, msg("one"), version="v1")
    assert first.work is not None
    await store.commit(first.work.lease, done(first.work.message.id, "one"), limits=LIMITS)
    acc = await store.accept(KEY, msg("two"), version="v1", owner="A", policy="enqueue", limits=LIMITS,
                             new_version="v2")
    assert acc.kind is AcceptKind.LEASED and acc.work is not None and acc.work.version == "v1"


async def test_only_an_instance_of_the_conversations_version_takes_it_over(store: Store) -> None:
    # Given a v2 conversation whose owner died with a message pending, and a v1 one likewise
    other = ConversationKey("default", "bob")
    assert (await accept(store, msg("for v2"), version="v2")).work is not None
    assert (await accept(store, msg("for v1"), version="v1", key=other)).work is not None
    await asyncio.sleep(LIMITS.lease_ttl + 0.1)
    # Then a v1 sweeper sees and takes only the v1 one; v2's stays pending for a v2 instance
    assert await store.expired_leases(100, version="v1") == [other]
    assert await store.reclaim(KEY, owner="B", limits=LIMITS, version="v1") is None
    assert await store.backlog("v2") == 1 and await store.backlog("v1") == 1 and await store.backlog() == 2
    view = await store.load(KEY)
    assert view is not None and view.pending == 1 and view.lease_owner is None
    assert await store.expired_leases(100, version="v2") == [KEY]
    work = await store.reclaim(KEY, owner="C", limits=LIMITS, version="v2")
    assert work is not None and work.version == "v2" and work.lease.version == "v2" and work.previous_owner == "A"


async def test_pinned_conversations_are_counted_per_version(store: Store) -> None:
    for n in range(3):
        await accept(store, msg("x"), version="v1", key=ConversationKey("default", f"a{n}"))
    await accept(store, msg("x"), version="v2", key=ConversationKey("default", "b"))
    assert await store.pinned_conversations() == {"v1": 3, "v2": 1}


async def test_routing_weights_change_atomically_with_their_bounded_log(store: Store) -> None:
    from statefleet.errors import RoutingConflict

    assert (await store.routing()).weights == {} and (await store.routing()).revision == 0
    first = await store.set_routing({"v1": 90, "v2": 10}, expected_revision=0, change={"actor": "ops"}, log_max=2)
    assert first.weights == {"v1": 90, "v2": 10} and first.revision == 1
    assert await store.routing() == first
    with pytest.raises(RoutingConflict):
        await store.set_routing({"v1": 50, "v2": 50}, expected_revision=0, change={"actor": "late"}, log_max=2)
    await store.set_routing({"v1": 75, "v2": 25}, expected_revision=1, change={"actor": "canary"}, log_max=2)
    await store.set_routing({"v1": 0, "v2": 100}, expected_revision=None, change={"actor": "canary"}, log_max=2)
    log = await store.routing_log(10)
    assert [entry["revision"] for entry in log] == [3, 2]  # newest first, the oldest beyond log_max gone
    assert log[0]["old"] == {"v1": 75, "v2": 25} and log[0]["new"] == {"v1": 0, "v2": 100}
    assert log[0]["actor"] == "canary"
