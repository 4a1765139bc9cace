"""A store that loses its data under a running fleet (Redis restarted without persistence, flushed) is noticed
by every instance and reported loudly (issue 11, defect 5)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from statefleet import Agent, Engine, EngineSettings, Turn
from statefleet.store import open_store
from statefleet.testing import LocalRedisServer

SETTINGS = EngineSettings(registry_ttl=0.9, store_reset_hold=30.0)


def echo_agent() -> Agent:
    agent = Agent("echo")

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.reply(f"turn {turn.turn}")

    return agent


async def _until(condition: object, timeout: float) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, "not noticed in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_restart_without_persistence_is_noticed_by_every_instance(caplog: pytest.LogCaptureFixture) -> None:
    with LocalRedisServer() as server:
        store_a, store_b = await open_store(server.url), await open_store(server.url)
        try:
            async with Engine(echo_agent(), store_a, SETTINGS) as a, Engine(echo_agent(), store_b, SETTINGS) as b:
                # Given a fleet that has served a conversation
                assert (await a.send("c", "hello")).turn == 1
                assert a.epoch.epoch is not None and a.epoch.epoch == b.epoch.epoch
                assert not a.epoch.holding
                # When Redis restarts empty (no persistence) under it
                with caplog.at_level(logging.ERROR, logger="statefleet.turns"):
                    server.restart()
                    # Then both instances notice within a few registry refreshes (well under 10 s)
                    await _until(lambda: a.epoch.last_reset is not None and b.epoch.last_reset is not None, 10)
                assert a.epoch.holding and b.epoch.holding
                assert a.epoch.last_reset is not None and a.epoch.last_reset.current == a.epoch.epoch
                assert b.epoch.epoch == a.epoch.epoch  # both now know the new epoch
                assert sum("the store lost its data" in r.getMessage() for r in caplog.records) == 2
                # And the fleet goes on serving: the lost conversation starts again at turn 1
                assert (await b.send("c", "hello again")).turn == 1
        finally:
            await store_a.close()
            await store_b.close()


async def test_a_restart_that_keeps_the_data_is_not_a_reset() -> None:
    with LocalRedisServer(persistent=True) as server:
        store = await open_store(server.url)
        try:
            async with Engine(echo_agent(), store, SETTINGS) as engine:
                assert (await engine.send("c", "hello")).turn == 1
                known = engine.epoch.epoch
                server.restart()
                # A few registry refreshes (every 0.3 s) later the same epoch is read back: nothing was lost
                await asyncio.sleep(2.0)
                assert engine.epoch.epoch == known and engine.epoch.last_reset is None
                assert (await engine.send("c", "hello again", timeout=10)).turn == 2
        finally:
            await store.close()
