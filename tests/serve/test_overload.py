"""Honest overload through ``statefleet serve``: past ``--max-in-flight`` a message is refused at once (503,
``Retry-After``, code ``overloaded``) and nothing it carried is run; what was accepted is committed.

The test agent holds every turn until the test opens a gate (a file), so exactly ``--max-in-flight`` requests
can be in flight whatever the machine's speed: no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import websockets

from .harness import ServeProcess

LIMIT = 4
REQUESTS = 60


async def _answers_until(tasks: list[asyncio.Task[httpx.Response]], count: int) -> None:
    """Wait until ``count`` of ``tasks`` are done (the refused ones; the accepted ones wait for the gate)."""
    pending = set(tasks)
    while len(tasks) - len(pending) < count:
        done, pending = await asyncio.wait(pending, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert done, f"only {len(tasks) - len(pending)} of {len(tasks)} requests answered; expected {count}"


@pytest.mark.parametrize(("backend", "configured_by"), [("redis", "flag"), ("sqlite", "environment")],
                         indirect=["backend"])
async def test_past_the_limit_messages_get_503_at_once_and_every_accepted_one_commits(
    any_store_url: str, tmp_path: Path, configured_by: str
) -> None:
    # Given an instance limited to 4 requests in flight (by flag, or by STATEFLEET_MAX_IN_FLIGHT)
    if configured_by == "flag":
        server = ServeProcess("gated", any_store_url, tmp_path, "--max-in-flight", str(LIMIT))
    else:
        server = ServeProcess("gated", any_store_url, tmp_path, env={"STATEFLEET_MAX_IN_FLIGHT": str(LIMIT)})
    gate = tmp_path / "gate"
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

            async def send(n: int) -> httpx.Response:
                return await client.post(f"/v1/conversations/c{n}/messages", headers={"Idempotency-Key": f"k{n}"},
                                         json={"text": f"m{n}", "metadata": {"gate": str(gate)}})

            # When 60 messages to 60 conversations arrive at once, and no turn can end before the gate opens
            tasks = [asyncio.create_task(send(n)) for n in range(REQUESTS)]
            await _answers_until(tasks, REQUESTS - LIMIT)
            gate.touch()
            responses = await asyncio.gather(*tasks)

            # Then exactly the limit was accepted, and every other message refused as overload, with Retry-After
            statuses = [r.status_code for r in responses]
            assert sorted(set(statuses)) == [200, 503], statuses
            assert statuses.count(200) == LIMIT
            for response in responses:
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "1"
                    assert response.json()["error"]["code"] == "overloaded"
            # and every accepted turn is in the store, while no refused message left anything behind
            for n, response in enumerate(responses):
                read = await client.get(f"/v1/conversations/c{n}")
                if response.status_code == 200:
                    assert read.status_code == 200 and read.json()["turns"] == 1, (n, read.text)
                else:
                    assert read.status_code == 404, (n, read.text)
    finally:
        gate.touch()
        server.stop()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_streaming_websocket_and_fire_and_forget_messages_count_against_the_same_limit(
    any_store_url: str, tmp_path: Path
) -> None:
    # Given an instance limited to 2 in flight, filled by two fire-and-forget messages held at the gate
    server = ServeProcess("gated", any_store_url, tmp_path, "--max-in-flight", "2")
    gate = tmp_path / "gate"
    held = {"text": "held", "metadata": {"gate": str(gate)}}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            for n in range(2):
                accepted = await client.post(f"/v1/conversations/held{n}/messages?wait=false", json=held)
                assert accepted.status_code == 202, accepted.text
            # When one more arrives as fire-and-forget, as SSE, and over a WebSocket
            late = await client.post("/v1/conversations/late/messages?wait=false", json=held)
            streamed = await client.post("/v1/conversations/sse/messages", json=held,
                                         headers={"Accept": "text/event-stream"})
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/conversations/ws/ws") as socket:
                await socket.send(json.dumps(held))
                refused = json.loads(await socket.recv())
                # Then each is refused before anything runs: 503 + Retry-After, an error frame on the socket
                for response in (late, streamed):
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"] == "1"
                    assert response.json()["error"]["code"] == "overloaded"
                assert refused["type"] == "error" and refused["error"]["code"] == "overloaded", refused
                # and once the held turns end, the same socket is served
                gate.touch()
                for n in range(2):
                    while (await client.get(f"/v1/conversations/held{n}")).json().get("turns") != 1:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                while True:  # the fire-and-forget callers leave the count when their turns' results are in
                    await socket.send(json.dumps({**held, "idempotency_key": "after"}))
                    frame = json.loads(await socket.recv())
                    if frame["type"] == "reply":
                        break
                    assert frame["error"]["code"] == "overloaded", frame
                    await asyncio.sleep(0.05)
            for conversation in ("late", "sse"):
                assert (await client.get(f"/v1/conversations/{conversation}")).status_code == 404
    finally:
        gate.touch()
        server.stop()
