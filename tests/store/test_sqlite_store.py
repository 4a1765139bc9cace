"""What only the SQLite store promises: one file shared by several processes, its URL form, TTLs on disk."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from statefleet.errors import InvalidStoreUrl, StoreUnavailable
from statefleet.store import AcceptKind, ConversationKey, InboundMessage, Limits, TurnCommit, open_store
from statefleet.store import sqlite as sqlite_module
from statefleet.store.sqlite import SQLiteStore, parse_url

KEY = ConversationKey("default", "shared")

# A worker process: accepts `count` messages into KEY from `tasks` concurrent tasks and runs every turn its
# lease brings it (its own messages and those the other process queued behind it); short pauses let the
# inbox drain, so the lease passes back and forth between the processes. Each turn increments
# state["n"] from what it read, so a lost or doubled commit shows in the final count.
WORKER = textwrap.dedent(
    """
    import asyncio, json, os, random, sys, time, uuid
    from statefleet.store import AcceptKind, ConversationKey, InboundMessage, Limits, TurnCommit, open_store

    url, name, count, tasks, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    ready = go + "." + name
    KEY = ConversationKey("default", "shared")
    LIMITS = Limits(window=4, lease_ttl=30.0, events_max=10_000)

    async def run_chain(store, work, committed):
        while work is not None:
            n = work.state.get("n", 0) + 1
            out = await store.commit(work.lease, TurnCommit(
                work.message.id, "committed",
                [{"role": "user", "text": work.message.text}, {"role": "agent", "text": str(n)}],
                json.dumps({"n": n}), {"n": n},
                [{"type": "reply", "message_id": work.message.id, "by": name}],
            ), limits=LIMITS)
            assert not out.fenced, "a live lease was fenced"
            committed.append(work.message.id)
            work = out.next

    async def worker(store, ids, committed):
        for message_id in ids:
            m = InboundMessage(message_id, f"{name}-{message_id}", {}, None, time.time())
            acc = await store.accept(KEY, m, version="v1", owner=name, policy="enqueue", limits=LIMITS)
            assert acc.kind in (AcceptKind.LEASED, AcceptKind.QUEUED), acc.kind
            await run_chain(store, acc.work, committed)
            await asyncio.sleep(random.random() / 500)  # let the inbox drain now and then

    async def main():
        store = await open_store(url)
        ids = [uuid.uuid4().hex for _ in range(count)]
        committed = []
        open(ready, "w").close()
        while not os.path.exists(go):
            await asyncio.sleep(0.005)
        await asyncio.gather(*[worker(store, ids[i::tasks], committed) for i in range(tasks)])
        await store.close()
        print(json.dumps({"accepted": ids, "committed": committed}))

    asyncio.run(main())
    """
)


async def test_two_processes_share_one_conversation_without_losing_or_doubling_a_turn(tmp_path: Path) -> None:
    # Given two OS processes on one database file, released at the same moment
    url = f"sqlite:///{tmp_path / 'state.db'}"
    go = tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, url, f"p{i}", "200", "4", str(go),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        # both have opened the store before either starts, so their turns really interleave
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"go.p{i}").exists() for i in range(2)):
            for proc in procs:
                if proc.returncode is not None:
                    pytest.fail(f"worker died: {(await proc.communicate())[1].decode()}")
            assert time.monotonic() < deadline, "workers did not start within 30 s"
            await asyncio.sleep(0.01)
        go.touch()
        # When each accepts 200 messages into the same conversation and runs whatever turns its lease brings
        outputs = []
        for proc in procs:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=90)
            assert proc.returncode == 0, stderr.decode()
            assert b"locked" not in stderr
            outputs.append(json.loads(stdout))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    # Then every message committed exactly once, and every turn saw the one before it
    accepted = [m for out in outputs for m in out["accepted"]]
    committed = [m for out in outputs for m in out["committed"]]
    assert len(accepted) == 400 and len(set(accepted)) == 400
    assert sorted(committed) == sorted(accepted)
    store = await open_store(url)
    try:
        view = await store.load(KEY)
        assert view is not None
        assert view.turns == 400 and view.state == {"n": 400} and view.pending == 0
        assert view.lease_owner is None
        events = await store.read_events(KEY, after=None, limit=1000)
        assert sorted(e.data["message_id"] for e in events) == sorted(accepted)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:////",
        "sqlite:///some/dir/",
        "sqlite://host/state.db",
        "sqlite:///state.db?mode=ro",
    ],
)
async def test_bad_urls_are_refused_with_a_precise_error(url: str) -> None:
    with pytest.raises(InvalidStoreUrl, match="sqlite"):
        await open_store(url)


def test_urls_follow_the_three_and_four_slash_convention() -> None:
    assert parse_url("sqlite:///state.db") == Path("state.db")
    assert parse_url("sqlite:///data/state.db") == Path("data/state.db")
    assert parse_url("sqlite:////var/lib/sf/state.db") == Path("/var/lib/sf/state.db")
    assert parse_url("sqlite:////tmp/a%20b.db") == Path("/tmp/a b.db")


async def test_open_creates_parent_directories(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'a' / 'b' / 'state.db'}")
    await store.ping()
    await store.close()
    assert (tmp_path / "a" / "b" / "state.db").is_file()


async def test_an_unopenable_file_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailable, match=r"dir\.db"):
        await open_store(f"sqlite:///{tmp_path / 'dir.db'}")


async def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.ping()


def _msg(text: str, key: str | None = None) -> InboundMessage:
    return InboundMessage(uuid.uuid4().hex, text, {}, key, time.time())


def _done(message_id: str) -> TurnCommit:
    return TurnCommit(message_id, "committed", [{"role": "user", "text": "x"}], '{"x": 1}', {},
                      [{"type": "reply", "message_id": message_id}])


async def test_an_expired_conversation_reads_as_absent_and_starts_afresh(tmp_path: Path) -> None:
    limits = Limits(conversation_ttl=0.2)
    store = await open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        # Given a conversation with one committed turn and an idempotency record
        m = _msg("one", key="k")
        acc = await store.accept(KEY, m, version="v1", owner="A", policy="enqueue", limits=limits)
        assert acc.work is not None
        await store.commit(acc.work.lease, _done(m.id), limits=limits)
        assert (await store.load(KEY)) is not None
        # When it stays idle past its TTL
        await asyncio.sleep(0.3)
        # Then it reads as absent, and a new message starts a new conversation (the old receipt went too)
        assert await store.load(KEY) is None
        again = await store.accept(KEY, _msg("one", key="k"), version="v2", owner="A", policy="enqueue",
                                   limits=limits)
        assert again.kind is AcceptKind.LEASED and again.work is not None
        assert again.work.turns == 0 and again.work.history == [] and again.work.version == "v2"
    finally:
        await store.close()


async def test_periodic_cleanup_deletes_what_expired_untouched(tmp_path: Path) -> None:
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        limits = Limits(conversation_ttl=0.1, receipt_ttl=0.1, idempotency_ttl=0.1, events_ttl=0.1)
        for i in range(3):
            key = ConversationKey("default", f"c{i}")
            await store.accept(key, _msg("x", key="k"), version="v1", owner="A", policy="enqueue",
                               limits=limits)
            await store.append_events({key: [{"type": "token", "text": "t"}]}, limits=limits)
        await asyncio.sleep(0.2)
        store._next_cleanup = 0.0  # due now
        await store.append_events({ConversationKey("default", "other"): [{"type": "t"}]}, limits=Limits())
        counts = await store._read(
            lambda conn, now: [
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("conversations", "inbox", "receipts", "events", "event_logs")
            ]
        )
        assert counts == [0, 0, 0, 1, 1]
    finally:
        await store.close()


async def test_two_stores_in_one_process_see_each_others_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first, second = await open_store(url), await open_store(url)
    try:
        m = _msg("one")
        acc = await first.accept(KEY, m, version="v1", owner="A", policy="enqueue", limits=Limits())
        queued = await second.accept(KEY, _msg("two"), version="v1", owner="B", policy="enqueue",
                                     limits=Limits())
        assert queued.kind is AcceptKind.QUEUED and queued.owner == "A"
        assert acc.work is not None
        out = await first.commit(acc.work.lease, _done(m.id), limits=Limits())
        assert out.next is not None and out.next.message.text == "two"
        view = await second.load(KEY)
        assert view is not None and view.turns == 1 and view.pending == 1
    finally:
        await first.close()
        await second.close()


async def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = await open_store(url)
    m = _msg("one")
    acc = await store.accept(KEY, m, version="v1", owner="A", policy="enqueue", limits=Limits())
    await store.close()
    reopened = await open_store(url)
    try:
        assert acc.work is not None
        out = await reopened.commit(acc.work.lease, _done(m.id), limits=Limits())
        assert not out.fenced and out.turns == 1
    finally:
        await reopened.close()


async def test_cleanup_keeps_up_with_more_than_a_batch_of_expired_receipts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three batches' worth of keyed messages whose receipts have all expired
    monkeypatch.setattr(sqlite_module, "CLEANUP_BATCH", 10)
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        limits = Limits(receipt_ttl=0.1, idempotency_ttl=0.1, outcome_ttl=0.1)
        for i in range(15):  # 15 turns: 30 receipts (idempotency key + outcome of each)
            m = _msg(f"x{i}", key=f"k{i}")
            acc = await store.accept(KEY, m, version="v1", owner="A", policy="enqueue", limits=limits)
            assert acc.work is not None
            await store.commit(acc.work.lease, _done(m.id), limits=limits)
        await asyncio.sleep(0.2)
        # When a few writes happen (each pays for at most one batch of cleanup), spread over one interval
        store._next_cleanup = 0.0
        for _ in range(4):
            await store.register_instance("i-1", {"id": "i-1"}, ttl=30)
        # Then every expired receipt is gone: cleanup did not stop at one batch per interval
        (receipts,) = await store._read(lambda conn, now: conn.execute("SELECT count(*) FROM receipts").fetchone())
        assert receipts == 0
    finally:
        await store.close()


async def test_renew_reads_neither_history_nor_inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a running turn with messages queued behind it
    store = await SQLiteStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        acc = await store.accept(KEY, _msg("one"), version="v1", owner="A", policy="enqueue", limits=Limits())
        for i in range(3):
            await store.accept(KEY, _msg(f"q{i}"), version="v1", owner="B", policy="enqueue", limits=Limits())
        assert acc.work is not None
        # When its lease is renewed, with decoding the record or the inbox made impossible
        def refuse(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("renew decoded the conversation record")

        monkeypatch.setattr(sqlite_module, "_load", refuse)
        outcome = await store.renew(acc.work.lease, limits=Limits())
        # Then it is kept, from the lease columns alone
        assert outcome.kept and not outcome.interrupt
    finally:
        await store.close()
