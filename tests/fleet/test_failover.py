"""Failover and resharding under load (slow): two engine processes on a dedicated Redis Cluster or Sentinel
deployment, conversations sending turns back to back with idempotency keys and retries, while a primary is
killed -9 (its replica promoted) or a third of the slots move.

The engines run the fault suite's agent (tests/faults/worker.py), which appends every committed message to
``state["seen"]``: the final state is the exact list of what committed, in commit order. Each conversation sends
its messages one at a time (``<conv>#0``, ``<conv>#1``, …), each retried with the same Idempotency-Key on the
other engine until answered or 30 s have passed. Then, for every conversation, what committed must be exactly
what its sender was acknowledged, in order, each once: no turn duplicated, none reordered, and — the store URL
carries ``wait_replicas=1`` — no acknowledged turn lost to the failover.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from statefleet.loadtest.client import RETRYABLE, RETRYABLE_CODES
from statefleet.testing.engine_process import EngineProcess, EngineProcessGone
from statefleet.testing.redis_cluster import LocalRedisCluster
from statefleet.testing.redis_sentinel import LocalRedisSentinel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER = Path(__file__).parents[1] / "faults" / "worker.py"
#: Replica acknowledgements: an acknowledged write is on a replica before the engine goes on.
WAIT = "wait_replicas=1&wait_timeout=1000"
CONVERSATIONS = 12
#: How long one message is retried (same Idempotency-Key) before it counts as failed, as the load tester does.
RETRY_BUDGET = 30.0


def _with_wait(url: str) -> str:
    return url + ("&" if "?" in url else "?") + WAIT


@dataclass
class Talk:
    """One conversation as its sender saw it."""

    conv: str
    #: (text, turn) of every acknowledged message, in sending order, with when the answer came.
    acked: list[tuple[str, int]] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    #: Messages given up on after the retry budget, with the last answer.
    failed: list[tuple[str, Any]] = field(default_factory=list)
    retries: int = 0


async def _send(workers: list[EngineProcess], talk: Talk, n: int) -> None:
    """Send message ``n`` of ``talk`` until it is answered or the retry budget is spent."""
    text, key = f"{talk.conv}#{n}", f"{talk.conv}-k{n}"
    started = time.monotonic()
    attempt = 0
    while True:
        worker = workers[(n + attempt) % len(workers)]
        try:
            answer = await worker.request("send", timeout=20, conv=talk.conv, text=text, key=key, reply_timeout=15)
        except (TimeoutError, EngineProcessGone) as exc:
            answer = {"ok": False, "error": "no_answer", "status": 504, "message": repr(exc)}
        if answer["ok"]:
            talk.acked.append((text, int(answer["result"]["turn"])))
            talk.acked_at.append(time.monotonic())
            return
        retryable = answer.get("status") in RETRYABLE or answer.get("error") in RETRYABLE_CODES
        if not retryable or time.monotonic() - started > RETRY_BUDGET:
            talk.failed.append((text, answer))
            return
        attempt += 1
        talk.retries += 1
        await asyncio.sleep(min(1.0, 0.05 * 2 ** (attempt - 1)))


async def _talk(workers: list[EngineProcess], talk: Talk, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        await _send(workers, talk, n)
        if talk.failed:
            return
        n += 1
        await asyncio.sleep(0.03)


@dataclass
class Load:
    workers: list[EngineProcess]
    talks: list[Talk]
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    def acked(self) -> int:
        return sum(len(t.acked) for t in self.talks)

    async def close(self) -> None:
        """Stop the senders (each ends its message first, within the retry budget), then the engines."""
        self.stop.set()
        await asyncio.wait(self.tasks, timeout=RETRY_BUDGET + 25)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(w.close() for w in self.workers))

    async def until_acked(self, more: int, timeout: float) -> None:
        """Wait until ``more`` further messages are acknowledged (the load runs)."""
        target = self.acked() + more
        async with asyncio.timeout(timeout):
            while self.acked() < target:  # noqa: ASYNC110 - polls counters the senders bump
                await asyncio.sleep(0.05)


@pytest.fixture
async def load_on(tmp_path: Path) -> AsyncIterator[Any]:
    """``await load_on(url, conversations)``: two engine processes on ``url`` and a sender per conversation; all
    stopped and checked for leaks at the end."""
    started: list[Load] = []

    async def start(url: str, conversations: list[str]) -> Load:
        record = tmp_path / "handler.log"
        argv = ["--store", url, "--record", str(record), "--lease-ttl", "1", "--sweep", "0.2"]
        workers = list(await asyncio.gather(*(EngineProcess.spawn(WORKER, argv, log=tmp_path / f"engine-{i}.log")
                                              for i in range(2))))
        stop = asyncio.Event()
        talks = [Talk(conv) for conv in conversations]
        load = Load(workers, talks, stop, [asyncio.create_task(_talk(workers, t, stop)) for t in talks])
        started.append(load)
        return load

    yield start
    for load in started:
        await load.close()


async def _stop_and_check(load: Load, after: float | None = None) -> None:
    """Stop sending; then every conversation's committed messages are exactly the acknowledged ones, in order,
    once each; none failed after retries; and each had a message acknowledged after ``after`` (it went on)."""
    load.stop.set()
    async with asyncio.timeout(RETRY_BUDGET + 20):
        await asyncio.gather(*load.tasks)
    problems: list[str] = []
    for talk in load.talks:
        problems += await _check(load, talk, after)
    assert not problems, "\n".join(problems)


async def _check(load: Load, talk: Talk, after: float | None) -> list[str]:
    """What is wrong with one conversation, read back once its inbox is empty."""
    problems: list[str] = []
    if talk.failed:
        problems.append(f"{talk.conv}: failed after retries: {talk.failed}")
    if after is not None and not any(t > after for t in talk.acked_at):
        problems.append(f"{talk.conv}: nothing acknowledged after the fault (acked {len(talk.acked)})")
    conv: dict[str, Any] = {}
    async with asyncio.timeout(15):
        while True:
            answer = await load.workers[0].request("get", timeout=10, conv=talk.conv)
            if answer["ok"] and answer["result"] is not None and not answer["result"]["pending"]:
                conv = answer["result"]
                break
            await asyncio.sleep(0.1)
    committed = [entry["text"] for entry in conv["state"].get("seen", [])]
    acked = [text for text, _ in talk.acked]
    if len(set(committed)) != len(committed):
        twice = sorted({t for t in committed if committed.count(t) > 1})
        problems.append(f"{talk.conv}: committed twice: {twice}")
    lost = [text for text in acked if text not in committed]
    if lost:
        problems.append(f"{talk.conv}: acknowledged but not committed (lost): {lost}")
    wrong_turn = [(text, turn) for text, turn in talk.acked
                  if turn > len(committed) or committed[turn - 1] != text]
    if wrong_turn and not lost:
        problems.append(f"{talk.conv}: acknowledged as a turn that holds another message: {wrong_turn[:5]}")
    if committed != acked and not problems:  # none of the above, yet not the same list
        problems.append(f"{talk.conv}: committed {committed[-5:]} (of {len(committed)}), "
                        f"acknowledged {acked[-5:]} (of {len(acked)})")
    if conv["turns"] != len(committed):
        problems.append(f"{talk.conv}: turn counter {conv['turns']}, {len(committed)} messages committed")
    return problems


def _slot(conv: str) -> int:
    return int(key_slot(f"sf:{{default:{conv}}}:m".encode()))


@pytest.fixture
def cluster() -> Iterator[LocalRedisCluster]:
    """A dedicated cluster (3 primaries + 3 replicas): these tests kill its nodes and move its slots."""
    with LocalRedisCluster() as dedicated:
        yield dedicated


async def test_kill_9_of_a_cluster_primary_under_load(cluster: LocalRedisCluster, load_on: Any) -> None:
    # Given two engines on a cluster with replica acknowledgements, conversations on every primary sending turns
    convs = [f"kill-{i}" for i in range(CONVERSATIONS)]
    primaries = {cluster.primary_for_slot(_slot(conv)) for conv in convs}
    assert len(primaries) == 3, "the conversations should live on every primary"
    load = await load_on(_with_wait(cluster.url), convs)
    await load.until_acked(100, timeout=30)
    # When the primary of the first conversation is killed -9, its replica promoted, and the node started again
    victim = cluster.primary_for_slot(_slot(convs[0]))
    await asyncio.to_thread(cluster.kill, victim)
    promoted = await asyncio.to_thread(cluster.wait_for_failover, victim, 30)
    assert promoted != victim
    # (Until then the new primary has no replica to acknowledge its writes: its conversations wait.)
    await asyncio.to_thread(cluster.restart, victim, 30)
    recovered = time.monotonic()
    await load.until_acked(200, timeout=40)
    await asyncio.sleep(1.0)
    # Then every conversation went on; none lost an acknowledged turn, none committed a message twice
    await _stop_and_check(load, after=recovered)


async def test_resharding_a_third_of_the_slots_under_load(cluster: LocalRedisCluster, load_on: Any) -> None:
    # Given two engines on a cluster, conversations on every primary sending turns
    convs = [f"move-{i}" for i in range(CONVERSATIONS)]
    load = await load_on(_with_wait(cluster.url), convs)
    await load.until_acked(100, timeout=30)
    before = {conv: cluster.primary_for_slot(_slot(conv)) for conv in convs}
    # When a third of the slots move to the first primary (MIGRATE, clients redirected with ASK and MOVED)
    target = await asyncio.to_thread(cluster.reshard, 1 / 3, 60)
    done = time.monotonic()
    moved = [conv for conv in convs if before[conv] != target and cluster.primary_for_slot(_slot(conv)) == target]
    await load.until_acked(100, timeout=30)
    # Then nothing failed, was lost or doubled, and every conversation went on
    await _stop_and_check(load, after=done)
    assert moved, f"no conversation's slot moved (owners before {before}, target {target})"


async def test_kill_9_of_the_sentinel_primary_under_load(load_on: Any) -> None:
    with LocalRedisSentinel() as deployment:
        # Given two engines on a Sentinel-run primary with 2 replicas and replica acknowledgements
        load = await load_on(_with_wait(deployment.url), [f"sent-{i}" for i in range(CONVERSATIONS)])
        try:
            await load.until_acked(100, timeout=30)
            # When the primary is killed -9 and the sentinels promote a replica
            old = await asyncio.to_thread(deployment.kill_primary)
            new = await asyncio.to_thread(deployment.wait_for_failover, old, 30)
            assert new != old
            promoted = time.monotonic()
            await load.until_acked(200, timeout=40)
            await asyncio.sleep(1.0)
            # Then every conversation went on; no acknowledged turn lost, none doubled
            await _stop_and_check(load, after=promoted)
        finally:
            await load.close()  # the engines stop before the deployment does
