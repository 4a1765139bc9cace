"""Two ``statefleet serve`` processes behind no load balancer at all: the client alternates between them."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import ServeProcess


@pytest.fixture
def pair(any_store_url: str, tmp_path: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    a = ServeProcess("echo", any_store_url, tmp_path, "--lease-ttl", "1")
    b = ServeProcess("echo", any_store_url, tmp_path, "--lease-ttl", "1")
    yield a, b
    a.stop()
    b.stop()


@pytest.mark.parametrize("backend", ["redis", "sqlite"], indirect=True)
async def test_50_conversations_x_20_turns_alternating_instances_keep_continuity(
    pair: tuple[ServeProcess, ServeProcess],
) -> None:
    # Given two instances sharing one store, and a client that alternates between them on every turn
    a, b = pair
    async with httpx.AsyncClient(timeout=30) as client:

        async def user(n: int) -> None:
            said: list[str] = []
            for turn in range(20):
                target = (a, b)[(n + turn) % 2]
                response = await client.post(f"{target.url}/v1/conversations/user-{n}/messages",
                                             json={"text": f"u{n}-t{turn}"})
                assert response.status_code == 200, response.text
                body = response.json()
                # Then each turn sees exactly the window the user built, whichever instance answers
                assert body["turn"] == turn + 1
                assert body["reply"]["data"]["history"] == said[-6:]
                assert body["reply"]["data"]["n"] == turn + 1
                said += [f"u{n}-t{turn}", body["reply"]["text"]]

        await asyncio.gather(*(user(n) for n in range(50)))
        for n in range(0, 50, 7):
            conv = (await client.get(f"{b.url}/v1/conversations/user-{n}")).json()
            assert conv["turns"] == 20 and conv["state"] == {"n": 20}
        # and each instance sees the whole fleet in the shared registry
        fleet = (await client.get(f"{a.url}/v1/fleet")).json()
        assert [i["address"] for i in fleet["instances"]] == [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
        # and the backlog drains to 0 (on Redis, an instance's freed-lease hints go out within 50 ms)
        deadline = time.monotonic() + 5
        while fleet["backlog"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            fleet = (await client.get(f"{a.url}/v1/fleet")).json()
        assert fleet["backlog"] == 0


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_sigterm_with_200_turns_in_flight_loses_nothing(any_store_url: str, tmp_path: Path) -> None:
    # Given A draining within 1.5 s, B beside it, and 200 slow turns in flight on A:
    # half finish within the drain (0.5 s), half cannot (4 s) and must be handed over to B
    a = ServeProcess("slow", any_store_url, tmp_path, "--lease-ttl", "1", "--drain-timeout", "1.5")
    b = ServeProcess("slow", any_store_url, tmp_path, "--lease-ttl", "1")
    try:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            statuses_a: list[int] = []

            async def turn(n: int) -> dict[str, object]:
                body = {"text": f"m{n}", "metadata": {"sleep": 0.5 if n % 2 else 4.0}}
                headers = {"Idempotency-Key": f"key-{n}"}
                for target in (a, b, b, b):
                    try:
                        response = await client.post(f"{target.url}/v1/conversations/c{n}/messages",
                                                     json=body, headers=headers)
                    except httpx.TransportError:
                        await asyncio.sleep(0.2)
                        continue
                    if target is a:
                        statuses_a.append(response.status_code)
                    if response.status_code == 200:
                        return dict(response.json())
                    assert response.status_code == 503, response.text
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                raise AssertionError(f"turn {n} never succeeded")

            tasks = [asyncio.create_task(turn(n)) for n in range(200)]
            await _wait_until(lambda: _in_flight(a) >= 200, timeout=15)
            # When A gets SIGTERM
            a.signal(signal.SIGTERM)
            # Then /readyz turns 503 at once, while A still serves its in-flight turns
            ready = await client.get(f"{a.url}/readyz")
            assert ready.status_code == 503
            refused = await client.post(f"{a.url}/v1/conversations/late/messages", json={"text": "hi"})
            assert refused.status_code == 503 and refused.headers["retry-after"]
            results = await asyncio.gather(*tasks)
            # and A exits 0
            assert a.proc.wait(30) == 0, a.log()
            # and every accepted message was committed exactly once, by A or (handed over) by B
            assert statuses_a.count(200) >= 1
            for n in range(200):
                conv = (await client.get(f"{b.url}/v1/conversations/c{n}")).json()
                assert conv["turns"] == 1, (n, conv)
                assert results[n]["turn"] == 1
            assert "handing" in a.log() or statuses_a.count(503) >= 1
    finally:
        a.stop()
        b.stop()


def _in_flight(instance: ServeProcess) -> int:
    try:
        fleet = httpx.get(f"{instance.url}/v1/fleet", timeout=2).json()
    except httpx.HTTPError:
        return 0
    return int(sum(i.get("in_flight", 0) for i in fleet["instances"]))


async def _wait_until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_workers_share_the_port_as_separate_instances(any_store_url: str, tmp_path: Path) -> None:
    # Given one serve command with two worker processes
    server = ServeProcess("echo", any_store_url, tmp_path, "--workers", "2")
    try:
        pids: set[str] = set()
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(60):
                # fresh connections, so the kernel spreads them over both workers
                async with httpx.AsyncClient(timeout=30) as fresh:
                    response = await fresh.post(f"{server.url}/v1/conversations/w/messages", json={"text": f"m{i}"})
                assert response.status_code == 200, response.text
                pids.add(response.json()["reply"]["text"].split(":")[0])
                if len(pids) == 2 and i >= 10:
                    break
            conv = (await client.get(f"{server.url}/v1/conversations/w")).json()
        # Then both answered, and the conversation is one continuous history
        assert len(pids) == 2
        assert conv["turns"] == i + 1
        # and SIGTERM stops both workers and the supervisor cleanly
        server.signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0, server.log()
    finally:
        server.stop()
