"""A store that loses its data under a running server is reported by ``/readyz``, a metric and the log."""

from __future__ import annotations

import asyncio
import time

import httpx

from statefleet import EngineSettings
from statefleet.server import ServerSettings, create_app
from statefleet.testing import LocalRedisServer

from ._support import make_agent, serve

SETTINGS = ServerSettings(engine=EngineSettings(registry_ttl=0.9, store_reset_hold=30.0), metrics=True)


async def test_a_wiped_store_fails_readiness_and_counts_in_the_metrics() -> None:
    with LocalRedisServer() as redis:
        app = create_app(make_agent(), redis.url, SETTINGS)
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
            # Given a ready server that has served a conversation
            assert (await http.post("/v1/conversations/c/messages", json={"text": "hi"})).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            # When the store is wiped under it (FLUSHALL: what a restart without persistence leaves)
            redis.flush()
            # Then within a few registry refreshes /readyz answers 503 store_reset, with Retry-After
            started = time.monotonic()
            while (ready := await http.get("/readyz")).status_code == 200:
                assert time.monotonic() - started < 10, "the wipe was not noticed within 10 s"
                await asyncio.sleep(0.1)
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "store_reset"
            assert "retry-after" in ready.headers
            # and the metric counts it once
            metrics = (await http.get("/metrics")).text
            line = next(row for row in metrics.splitlines() if row.startswith("statefleet_store_resets_total{"))
            assert line.endswith(" 1.0"), line
            # and messages are still served (the lost conversation starts again)
            again = await http.post("/v1/conversations/c/messages", json={"text": "hi again"})
            assert again.status_code == 200 and again.json()["turn"] == 1
