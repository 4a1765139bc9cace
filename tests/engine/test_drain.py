"""Leaving ``async with Engine(...)`` while a turn runs longer than the lease: the engine keeps the lease until
the turn ends, so no other engine runs the same message meanwhile (issue 11, defect 3)."""

from __future__ import annotations

import asyncio
import time

import pytest

from statefleet import Agent, Engine, EngineSettings, Turn
from statefleet.store import open_store

#: A lease that expires well within the turn: without heartbeats during the drain it would be taken over.
SETTINGS = EngineSettings(lease_ttl=1.0, sweep_interval=0.1)
TURN_SECONDS = 2.5


def slow_agent(intervals: list[tuple[float, float | None]], started: asyncio.Event) -> Agent:
    """An agent whose handler takes ``TURN_SECONDS`` and logs each run's (start, end) in ``intervals``."""
    agent = Agent("slow")

    @agent.handler
    async def handle(turn: Turn) -> None:
        intervals.append((time.monotonic(), None))
        run = len(intervals) - 1
        started.set()
        try:
            await asyncio.sleep(TURN_SECONDS)
        finally:
            intervals[run] = (intervals[run][0], time.monotonic())
        turn.reply(f"done: {turn.text}")

    return agent


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_turn_longer_than_the_lease_finishes_on_its_engine_when_it_stops(any_store_url: str) -> None:
    intervals: list[tuple[float, float | None]] = []
    started = asyncio.Event()
    agent = slow_agent(intervals, started)
    store_a, store_b = await open_store(any_store_url), await open_store(any_store_url)
    try:
        async with Engine(agent, store_b, SETTINGS) as engine_b:
            # Given engine A has accepted a message and runs its turn, engine B sweeping the same store
            async with Engine(agent, store_a, SETTINGS) as engine_a:
                _message_id, reply = await engine_a.submit("c", "hello", idempotency_key="k-1")
                await asyncio.wait_for(started.wait(), timeout=5)
            # When A's block is left mid-turn (stop with the default drain timeout), and B keeps sweeping
            # for longer than a lease
            result = await asyncio.wait_for(reply, timeout=5)
            await asyncio.sleep(2 * SETTINGS.lease_ttl)
            conversation = await engine_b.get("c")
        # Then A's caller got its reply, the handler ran once, and the conversation has exactly that turn
        assert (result.reply, result.turn, result.duplicate) == ("done: hello", 1, False)
        assert len(intervals) == 1, f"the message ran {len(intervals)} times: {intervals}"
        assert intervals[0][1] is not None
        assert conversation is not None and conversation.turns == 1
        assert engine_b.stats.takeovers == 0
    finally:
        await store_a.close()
        await store_b.close()
