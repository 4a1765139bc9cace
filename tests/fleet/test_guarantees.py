"""The guarantees, tried with engines in separate OS processes on a shared store (SQLite file, real Redis: one
server, a Cluster of 3 primaries + 3 replicas, and a Sentinel-run primary with 2 replicas).

Each test tells a story: Given the fleet, When something happens (concurrency, SIGSTOP, kill -9),
Then the conversation is exactly what one serial run would have produced.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import REDIS_TOPOLOGIES

from .harness import Worker, read_records

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "redis", *REDIS_TOPOLOGIES], indirect=True)


@pytest.fixture
async def pair(any_store_url: str, tmp_path: Path) -> AsyncIterator[tuple[Worker, Worker, Path]]:
    record = tmp_path / "handler.log"
    workers = await asyncio.gather(
        Worker.start(any_store_url, record=record, window=6, lease_ttl=1.0, sweep=0.2),
        Worker.start(any_store_url, record=record, window=6, lease_ttl=1.0, sweep=0.2),
    )
    yield workers[0], workers[1], record
    await asyncio.gather(*(w.close() for w in workers))


async def test_continuity_across_two_processes_for_200_turns(pair: tuple[Worker, Worker, Path]) -> None:
    # Given two engines in two processes sharing one store
    a, b, _ = pair
    utterances: list[str] = []
    for i in range(200):
        # When they alternately serve the turns of one conversation
        worker = (a, b)[i % 2]
        answer = await worker.send("alice", f"m{i}")
        assert answer["ok"], answer
        result = answer["result"]
        # Then every turn saw exactly the previous window, and the counter advanced by one
        assert result["reply"]["data"]["history"] == utterances[-6:], i
        assert result["turn"] == i + 1 and result["reply"]["data"]["state_n"] == i + 1
        assert result["reply"]["text"] == f"{worker.instance}:m{i}"
        utterances += [f"m{i}", result["reply"]["text"]]
    conv = (await a.request("get", conv="alice"))["result"]
    assert conv["turns"] == 200 and conv["state"] == {"n": 200}
    assert [u["text"] for u in conv["history"]] == utterances[-6:]


async def test_concurrent_messages_from_two_processes_commit_once_each_in_order(
    pair: tuple[Worker, Worker, Path], any_store_url: str, tmp_path: Path
) -> None:
    # Given two engines, and a window large enough to keep every utterance
    a, b, record = pair
    await asyncio.gather(a.close(), b.close())
    a, b = await asyncio.gather(
        Worker.start(any_store_url, record=record, window=400, lease_ttl=1.0, sweep=0.2, pause=0.002),
        Worker.start(any_store_url, record=record, window=400, lease_ttl=1.0, sweep=0.2, pause=0.002),
    )
    try:
        # When 100 messages are sent to one conversation at once, half through each process
        answers = await asyncio.gather(*[(a, b)[i % 2].send("busy", f"m{i}") for i in range(100)])
        # Then each is committed exactly once, with turns 1..100
        assert all(ans["ok"] for ans in answers), [ans for ans in answers if not ans["ok"]][:3]
        assert sorted(ans["result"]["turn"] for ans in answers) == list(range(1, 101))
        # and handler runs never overlapped in time, across both processes
        records = read_records(record)
        starts = [r for r in records if r["k"] == "start"]
        ends = [r for r in records if r["k"] == "end"]
        assert len(starts) == len(ends) == 100
        intervals = sorted((s["t"], e["t"]) for s, e in zip(
            sorted(starts, key=lambda r: r["msg"]), sorted(ends, key=lambda r: r["msg"]), strict=True))
        for (_, end), (next_start, _) in itertools.pairwise(intervals):
            assert end <= next_start, "two handler runs of one conversation overlapped"
        # and the history order is the commit order
        conv = (await a.request("get", conv="busy"))["result"]
        by_turn = sorted(answers, key=lambda ans: ans["result"]["turn"])
        users = [u["text"] for u in conv["history"] if u["role"] == "user"]
        assert users == [ans["result"]["reply"]["text"].split(":")[-1] for ans in by_turn]
        assert conv["turns"] == 100
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_idempotent_retries_across_processes_give_one_turn(pair: tuple[Worker, Worker, Path]) -> None:
    a, b, _ = pair
    answers = await asyncio.gather(*[(a, b)[i % 2].send("pay", "charge me", key="order-7") for i in range(5)])
    assert all(ans["ok"] for ans in answers)
    assert len({ans["result"]["message_id"] for ans in answers}) == 1
    assert {ans["result"]["turn"] for ans in answers} == {1}
    again = await a.send("pay", "charge me", key="order-7")
    assert again["result"]["duplicate"] and again["result"]["turn"] == 1
    conv = (await b.request("get", conv="pay"))["result"]
    assert conv["turns"] == 1


async def test_a_frozen_owner_cannot_commit_after_its_lease_is_taken(pair: tuple[Worker, Worker, Path]) -> None:
    # Given A running a slow turn
    a, b, record = pair
    pending = asyncio.create_task(a.send("fence", "slow one", key="f-1"))
    await _wait_for(lambda: any(r["k"] == "start" for r in read_records(record)))
    # When A is frozen with SIGSTOP past its lease, and B takes the conversation over and commits
    a.signal(signal.SIGSTOP)
    try:
        await _wait_for(lambda: any(r["k"] == "end" for r in read_records(record)), timeout=10)
    finally:
        a.signal(signal.SIGCONT)
    # Then A, resumed, does not commit; its caller is not told "failed" but gets the turn B committed
    answer = await asyncio.wait_for(pending, 20)
    assert answer["ok"], answer
    assert answer["result"]["turn"] == 1 and answer["result"]["reply"]["text"] == f"{b.instance}:slow one"
    await asyncio.sleep(0.5)
    # and the new owner's commit stands, once
    conv = (await b.request("get", conv="fence"))["result"]
    assert conv["turns"] == 1
    assert conv["history"][1]["text"] == f"{b.instance}:slow one"
    ends = [r for r in read_records(record) if r["k"] == "end"]
    assert len(ends) == 1 and ends[0]["pid"] == b.pid
    stats = (await a.request("stats"))["result"]
    assert stats["fenced"] >= 1
    # and a retry of the same key returns B's result
    retry = await a.send("fence", "slow one", key="f-1")
    assert retry["ok"] and retry["result"]["reply"]["text"] == f"{b.instance}:slow one"


async def test_kill_9_of_the_owner_loses_nothing(pair: tuple[Worker, Worker, Path]) -> None:
    # Given A running a slow turn, with two more messages queued behind it
    a, b, record = pair
    first = asyncio.create_task(a.send("crash", "slow first"))
    await _wait_for(lambda: any(r["k"] == "start" for r in read_records(record)))
    queued = [asyncio.create_task(b.send("crash", f"then {i}")) for i in range(2)]
    await asyncio.sleep(0.1)
    # When A is killed with SIGKILL mid-turn
    killed_at = time.monotonic()
    a.signal(signal.SIGKILL)
    # Then B commits A's message within lease TTL + sweep interval (+ slack), and the queued ones after it
    await _wait_for(lambda: any(r["k"] == "end" for r in read_records(record)), timeout=10)
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < 1.0 + 0.2 + 1.5, recovered_in
    answers = await asyncio.gather(*queued)
    assert all(ans["ok"] for ans in answers), answers
    with pytest.raises(ConnectionError):
        await first
    conv = (await b.request("get", conv="crash"))["result"]
    assert conv["turns"] == 3
    users = [u["text"] for u in conv["history"] if u["role"] == "user"]
    assert users == ["slow first", "then 0", "then 1"] or users == ["slow first", "then 1", "then 0"]
    ends = [r for r in read_records(record) if r["k"] == "end"]
    assert sorted(r["text"] for r in ends) == ["slow first", "then 0", "then 1"]  # nothing doubled
    stats = (await b.request("stats"))["result"]
    assert stats["takeovers"] >= 1


async def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)
