"""Metrics from real ``statefleet serve`` processes on Redis: several workers, and a kill -9 takeover."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from serve.harness import ServeProcess

from ._support import scrape, total

pytestmark = pytest.mark.parametrize("backend", ["redis"], indirect=True)

COMMITTED = ("committed", "retried-after-takeover")


async def test_two_workers_count_every_committed_turn_exactly_once(any_store_url: str, tmp_path: Path) -> None:
    # Given one `serve` with two worker processes sharing the port (multi-process metrics)
    server = ServeProcess("echo", any_store_url, tmp_path, "--workers", "2")
    try:
        # When 30 conversations take 10 turns each (connections spread over both workers)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:

            async def user(n: int) -> set[str]:
                pids = set()
                for turn in range(10):
                    response = await client.post(f"{server.url}/v1/conversations/c{n}/messages",
                                                 json={"text": f"m{turn}"})
                    assert response.status_code == 200, response.text
                    pids.add(response.json()["reply"]["text"].split(":")[0])
                return pids

            pids = set().union(*await asyncio.gather(*(user(n) for n in range(30))))
            turns = 0
            for n in range(30):
                turns += (await client.get(f"{server.url}/v1/conversations/c{n}")).json()["turns"]
        assert len(pids) == 2, "both workers ran turns"
        assert turns == 300
        # Then every scrape, whichever worker answers it, counts exactly the committed turns (each worker
        # flushes its counts every second: wait for the flush after the last turn)
        await asyncio.sleep(1.5)
        for _ in range(4):
            samples = scrape(server.url)
            assert total(samples, "statefleet_turns_total", {"outcome": COMMITTED}) == turns
            assert total(samples, "statefleet_turns_total", {"outcome": ("failed", "interrupted")}) == 0
            assert total(samples, "statefleet_turn_duration_seconds_count", {"phase": "end_to_end"}) == turns
            assert total(samples, "statefleet_http_requests_total",
                         {"route": "/v1/conversations/{id}/messages", "status": "200"}) == turns
            assert total(samples, "statefleet_store_operation_duration_seconds_count", {"operation": "commit"}) \
                == turns
            # and the fleet-wide backlog is reported once, not once per worker
            assert [v for _, v in samples["statefleet_inbox_backlog"]] == [0.0]
            assert total(samples, "statefleet_fleet_instances") == 2
    finally:
        server.stop()


async def test_kill_9_takeover_is_counted_and_logged_with_both_instances(any_store_url: str, tmp_path: Path) -> None:
    # Given two instances on Redis, and a slow turn accepted and running on A
    a = ServeProcess("slow", any_store_url, tmp_path, "--lease-ttl", "1")
    b = ServeProcess("slow", any_store_url, tmp_path, "--lease-ttl", "1")
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            fleet = (await client.get(f"{a.url}/v1/fleet")).json()
            a_id = fleet["instances"][0]["id"]
            b_id = next(i["id"] for i in fleet["instances"] if i["id"] != a_id)
            before = total(scrape(b.url), "statefleet_lease_takeovers_total")
            accepted = await client.post(f"{a.url}/v1/conversations/victim/messages?wait=false",
                                         json={"text": "hello", "metadata": {"sleep": 0.5}})
            assert accepted.status_code == 202
            deadline = time.monotonic() + 5
            while total(scrape(a.url), "statefleet_turns_in_flight") < 1 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            # When A is killed with SIGKILL mid-turn
            a.signal(signal.SIGKILL)
            a.proc.wait(5)
            # Then B takes the conversation over and commits the message
            deadline = time.monotonic() + 15
            conversation: dict[str, object] = {}
            while time.monotonic() < deadline:
                conversation = (await client.get(f"{b.url}/v1/conversations/victim")).json()
                if conversation.get("turns") == 1:
                    break
                await asyncio.sleep(0.1)
            assert conversation.get("turns") == 1, conversation
        samples = scrape(b.url)
        assert total(samples, "statefleet_lease_takeovers_total") == before + 1
        assert total(samples, "statefleet_turns_total", {"outcome": "retried-after-takeover"}) == 1
        # and B's log has one JSON line naming both instances
        lines = [json.loads(line) for line in b.log_path.read_text().splitlines() if line.startswith("{")]
        takeovers = [line for line in lines if "took over" in line["msg"]]
        assert len(takeovers) == 1, takeovers
        line = takeovers[0]
        assert line["instance"] == b_id and line["previous_owner"] == a_id
        assert a_id in line["msg"] and b_id in line["msg"]
        assert line["conversation_id"] == "victim" and line["attempt"] == 2
    finally:
        a.stop()
        b.stop()
