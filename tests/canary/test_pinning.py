"""Canary pinning on a real fleet: `statefleet serve` processes of two versions on one real redis-server.

Every conversation stays on one version for its whole life, new ones follow the weights (by the stable hash of
their id), a message that reaches the other version is forwarded (plain, SSE, WebSocket), and a version with no
live instance answers 503 — its conversations are never served, nor taken over, by another version.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from statefleet.routing import pick_version
from statefleet.testing import ServeProcess

AGENT = f"{Path(__file__).with_name('agents.py')}:agent"
TENANT = "default"
FORWARDED = re.compile(r'^statefleet_forwarded_messages_total\{.*outcome="forwarded".*\} (\S+)$', re.M)


def serve(redis_url: str, version: str, tmp_path: Path, name: str, **env: str) -> ServeProcess:
    process = ServeProcess(AGENT, redis_url, log=tmp_path / f"{name}.log",
                           env={"CANARY_VERSION": version, **env})
    return process


@pytest.fixture
def fleet(redis_url: str, tmp_path: Path) -> Iterator[list[ServeProcess]]:
    """Two v1 instances and one v2 instance (the last), weights 90/10."""
    processes = [serve(redis_url, "v1", tmp_path, "a"), serve(redis_url, "v1", tmp_path, "b"),
                 serve(redis_url, "v2", tmp_path, "c")]
    try:
        for process in processes:
            process.wait_ready()
        set_weights(processes[0], {"v1": 90, "v2": 10})
        yield processes
    finally:
        for process in processes:
            process.stop(signal.SIGKILL)


def set_weights(process: ServeProcess, weights: dict[str, int]) -> None:
    answer = httpx.put(f"{process.url}/v1/admin/routing", json={"weights": weights, "reason": "test"},
                       headers={"x-statefleet-actor": "pytest"}, timeout=10)
    assert answer.status_code == 200, answer.text
    # Every instance reads the weights at least once a second (fleet_view_interval).


def forwarded_total(process: ServeProcess) -> float:
    text = httpx.get(f"{process.url}/metrics", timeout=10).text
    return sum(float(value) for value in FORWARDED.findall(text))


async def converse(client: aiohttp.ClientSession, urls: list[str], conversation: str, turns: int,
                   log: dict[str, list[tuple[str, str, bool]]], rng: random.Random) -> None:
    """``turns`` messages to instances chosen at random, each after the previous reply: (url, version, forwarded)."""
    for n in range(turns):
        url = rng.choice(urls)
        async with client.post(f"{url}/v1/conversations/{conversation}/messages", json={"text": f"m{n}"},
                               headers={"idempotency-key": f"{conversation}-{n}"}) as answer:
            body = await answer.json()
            assert answer.status == 200, (conversation, n, answer.status, body)
            forwarded = "x-statefleet-forwarded-by" in answer.headers
            assert answer.headers["x-statefleet-version"] == body["version"]
        assert body["reply"]["text"] == f"{body['version']} answers m{n}"  # the code of that version ran it
        log.setdefault(conversation, []).append((url, body["version"], forwarded))


@pytest.mark.slow
async def test_a_thousand_conversations_stay_on_one_version_and_new_ones_follow_changed_weights(
        fleet: list[ServeProcess], redis_url: str) -> None:
    # Given two v1 instances and one v2 instance at weights 90/10
    urls = [process.url for process in fleet]
    version_of = {process.url: ("v2" if process is fleet[2] else "v1") for process in fleet}
    await asyncio.sleep(1.2)  # every instance has read the weights
    rng = random.Random(14)
    log: dict[str, list[tuple[str, str, bool]]] = {}
    started: dict[str, float] = {}
    first = [f"conv-{n}" for n in range(1000)]
    later = [f"late-{n}" for n in range(200)]
    slots = asyncio.Semaphore(48)
    loop = asyncio.get_running_loop()
    mid_run = asyncio.Event()

    async def one(conversation: str, turns: int) -> None:
        async with slots:
            started[conversation] = loop.time()
            if len(started) == 400:
                mid_run.set()
            await converse(client, urls, conversation, turns, log, rng)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                     connector=aiohttp.TCPConnector(limit=64)) as client:
        # When 1,000 conversations of 10 turns each go to the three instances in random order...
        running = [asyncio.create_task(one(conversation, 10)) for conversation in first]
        await mid_run.wait()
        # ...and, mid-run, the weights change to 50/50 (through one instance's admin route)
        changing = loop.time()
        await asyncio.to_thread(set_weights, fleet[1], {"v1": 50, "v2": 50})
        changed = loop.time() + 1.0  # every instance has read them within a second
        late = [asyncio.create_task(one(conversation, 3)) for conversation in later]
        await asyncio.gather(*running, *late)

    # Then every conversation's replies all come from one version: the one the weights at its start picked
    before = [c for c in first if started[c] < changing]
    after = [c for c in [*first, *later] if started[c] > changed]
    assert len(before) >= 400 and len(after) >= 200
    for conversation in before:
        versions = {version for _, version, _ in log[conversation]}
        assert versions == {pick_version({"v1": 90, "v2": 10}, TENANT, conversation)}, conversation
    for conversation in after:
        versions = {version for _, version, _ in log[conversation]}
        assert versions == {pick_version({"v1": 50, "v2": 50}, TENANT, conversation)}, conversation
    for conversation in [*first, *later]:
        assert len({version for _, version, _ in log[conversation]}) == 1, conversation
    # (The share of a set of ids is a property of the hash: 90/10 over these 1,000 ids.)
    share = sum(pick_version({"v1": 90, "v2": 10}, TENANT, c) == "v2" for c in first) / len(first)
    assert 0.08 <= share <= 0.12
    late_share = sum(log[c][0][1] == "v2" for c in after) / len(after)
    assert 0.40 <= late_share <= 0.60
    # And every message that landed on the wrong version was forwarded, and counted as such
    wrong = [(url, version, forwarded) for turns in log.values() for url, version, forwarded in turns
             if version_of[url] != version]
    assert wrong and all(forwarded for _, _, forwarded in wrong)
    assert not any(forwarded for turns in log.values() for url, version, forwarded in turns
                   if version_of[url] == version)
    assert sum(forwarded_total(process) for process in fleet) == len(wrong)
    # And nothing was lost or duplicated: each conversation holds exactly its messages, in order, run by one version
    async with httpx.AsyncClient(timeout=30) as client:
        for conversation, turns in [*[(c, 10) for c in first], *[(c, 3) for c in later]]:
            state = (await client.get(f"{urls[0]}/v1/conversations/{conversation}")).json()
            assert state["turns"] == turns
            assert state["state"]["texts"] == [f"m{n}" for n in range(turns)]
            assert state["state"]["ran_by"] == [log[conversation][0][1]]


@pytest.mark.slow
async def test_a_forwarded_stream_streams_its_tokens_over_sse_and_websocket(fleet: list[ServeProcess]) -> None:
    # Given a conversation pinned to v2
    v1, v2 = fleet[0], fleet[2]
    await asyncio.sleep(1.2)
    conversation = next(f"s-{n}" for n in range(1000) if pick_version({"v1": 90, "v2": 10}, TENANT, f"s-{n}") == "v2")
    async with httpx.AsyncClient(timeout=30) as client:
        first = await client.post(f"{v2.url}/v1/conversations/{conversation}/messages", json={"text": "hello"})
        assert first.json()["version"] == "v2"
        # When a streamed message reaches a v1 instance
        async with client.stream("POST", f"{v1.url}/v1/conversations/{conversation}/messages",
                                 json={"text": "stream me"}, headers={"accept": "text/event-stream"}) as answer:
            assert answer.status_code == 200
            assert answer.headers["x-statefleet-forwarded-by"] and answer.headers["x-statefleet-version"] == "v2"
            events = [line async for line in answer.aiter_lines() if line.startswith(("event:", "data:"))]
    # Then its tokens, reply and end arrive through the forwarding instance, from v2
    names = [line.split(": ", 1)[1] for line in events if line.startswith("event:")]
    assert names == ["token", "reply", "done"]
    data = [json.loads(line.split(": ", 1)[1]) for line in events if line.startswith("data:")]
    assert data[0]["text"] == "v2:" and data[1]["version"] == "v2" and data[1]["turn"] == 2
    # And a WebSocket to the v1 instance carries the v2 conversation's turns too
    async with aiohttp.ClientSession() as session:
        ws_url = v1.url.replace("http", "ws") + f"/v1/conversations/{conversation}/ws"
        async with session.ws_connect(ws_url) as socket:
            await socket.send_json({"text": "over the socket", "idempotency_key": "ws-1"})
            frames = [await asyncio.wait_for(socket.receive_json(), 10) for _ in range(2)]
    assert [frame["type"] for frame in frames] == ["token", "reply"]
    assert frames[0]["text"] == "v2:" and frames[1]["version"] == "v2" and frames[1]["turn"] == 3
    assert frames[1]["reply"]["text"] == "v2 answers over the socket"


async def v2_conversations(count: int, prefix: str) -> list[str]:
    return [c for c in (f"{prefix}-{n}" for n in range(count * 30))
            if pick_version({"v1": 90, "v2": 10}, TENANT, c) == "v2"][:count]


@pytest.mark.slow
async def test_without_a_live_v2_instance_its_conversations_wait_and_are_never_run_by_v1(
        redis_url: str, tmp_path: Path) -> None:
    # Given one v1 and one v2 instance at 90/10, v2 turns taking 1 s
    v1 = serve(redis_url, "v1", tmp_path, "v1")
    v2 = serve(redis_url, "v2", tmp_path, "v2", CANARY_DELAY="1.0")
    restarted: ServeProcess | None = None
    try:
        v1.wait_ready()
        v2.wait_ready()
        set_weights(v1, {"v1": 90, "v2": 10})
        await asyncio.sleep(1.2)
        idle, busy = await v2_conversations(3, "idle"), await v2_conversations(5, "busy")
        async with httpx.AsyncClient(timeout=30) as client:
            for conversation in idle:
                assert (await client.post(f"{v1.url}/v1/conversations/{conversation}/messages",
                                          json={"text": "m0"})).json()["version"] == "v2"
            # When v2 turns are running (and more messages wait behind them) and the only v2 instance is killed
            for conversation in busy:
                for n in range(2):
                    accepted = await client.post(
                        f"{v1.url}/v1/conversations/{conversation}/messages?wait=false", json={"text": f"m{n}"},
                        headers={"idempotency-key": f"{conversation}-{n}"})
                    assert accepted.status_code == 202, accepted.text
            await asyncio.sleep(0.3)
            v2.stop(signal.SIGKILL)
            # Then new messages of v2 conversations get 503 + Retry-After, idle or busy, at any instance
            for conversation in [idle[0], busy[0]]:
                refused = await client.post(f"{v1.url}/v1/conversations/{conversation}/messages", json={"text": "x"})
                assert refused.status_code == 503 and refused.headers["retry-after"]
                assert refused.json()["error"]["code"] == "version_unavailable"
            # And v1 never takes the accepted v2 messages over, long after their leases expired
            await asyncio.sleep(6)
            for conversation in busy:
                state = (await client.get(f"{v1.url}/v1/conversations/{conversation}")).json()
                assert state["pending"] >= 1 and state["state"].get("ran_by", ["v2"]) == ["v2"]
            fleet_view = (await client.get(f"{v1.url}/v1/fleet")).json()
            assert all(instance["stats"]["takeovers"] == 0 for instance in fleet_view["instances"])
            # When v2 is back
            restarted = serve(redis_url, "v2", tmp_path, "v2-again")
            restarted.wait_ready()
            # Then the accepted messages run on v2 and the conversations go on with their full history
            for conversation in busy:
                for _ in range(200):
                    state = (await client.get(f"{v1.url}/v1/conversations/{conversation}")).json()
                    if state["pending"] == 0:
                        break
                    await asyncio.sleep(0.1)
                assert state["turns"] == 2 and state["state"]["texts"] == ["m0", "m1"], state
                assert state["state"]["ran_by"] == ["v2"]
                again = await client.post(f"{v1.url}/v1/conversations/{conversation}/messages", json={"text": "m2"})
                assert again.status_code == 200 and again.json()["version"] == "v2" and again.json()["turn"] == 3
            for conversation in idle:
                again = await client.post(f"{v1.url}/v1/conversations/{conversation}/messages", json={"text": "m1"})
                assert again.status_code == 200 and again.json()["turn"] == 2
    finally:
        for process in (v1, v2, restarted):
            if process is not None:
                process.stop(signal.SIGKILL)
