"""The store fails while a turn commits (a real redis-server frozen with SIGSTOP): the caller is never told
"failed" about a turn that committed (issue 11, defect 1).

Each test starts its own redis-server, since it freezes it. ``?socket_timeout=`` makes a frozen server's
silence an error within a fraction of a second instead of the default 5 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from statefleet import Agent, Engine, EngineSettings, Turn
from statefleet.errors import OutcomeUnknown
from statefleet.store import open_store
from statefleet.testing import LocalRedisServer


@pytest.fixture
def frozen_redis() -> Iterator[LocalRedisServer]:
    with LocalRedisServer() as server:
        yield server


def gated_agent(started: asyncio.Event, gate: asyncio.Event) -> Agent:
    """A handler that signals its start, then waits for ``gate`` before replying (so the test can freeze the
    store between the handler's end and its commit)."""
    agent = Agent("gated")

    @agent.handler
    async def handle(turn: Turn) -> None:
        started.set()
        await gate.wait()
        turn.state["runs"] = turn.state.get("runs", 0) + 1
        turn.reply(f"done: {turn.text}")

    return agent


async def test_a_commit_the_store_froze_through_is_resolved_not_failed(
    frozen_redis: LocalRedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    started, gate = asyncio.Event(), asyncio.Event()
    store = await open_store(frozen_redis.url + "?socket_timeout=0.3")
    try:
        async with Engine(gated_agent(started, gate), store, EngineSettings(resolve_timeout=10.0)) as engine:
            # Given a turn whose handler has run
            _id, reply = await engine.submit("c", "pay", idempotency_key="k-1")
            await asyncio.wait_for(started.wait(), 5)
            # When the store freezes just as it commits, for longer than a reply may take, then thaws
            frozen_redis.pause()
            try:
                with caplog.at_level(logging.WARNING, logger="statefleet.turns"):
                    gate.set()
                    await asyncio.sleep(1.5)
            finally:
                frozen_redis.resume()
            result = await asyncio.wait_for(reply, 15)
            conversation = await engine.get("c")
        # Then the commit failed on the wire (the path under test ran)...
        assert any("finding out whether it landed" in r.getMessage() for r in caplog.records), caplog.text
        # ...and the caller still gets the committed turn, which committed exactly once
        assert (result.turn, result.reply) == (1, "done: pay")
        assert conversation is not None and conversation.turns == 1 and conversation.state == {"runs": 1}
    finally:
        await store.close()


async def test_a_store_away_longer_than_the_resolve_timeout_answers_outcome_unknown_then_a_retry_tells(
    frozen_redis: LocalRedisServer,
) -> None:
    started, gate = asyncio.Event(), asyncio.Event()
    store = await open_store(frozen_redis.url + "?socket_timeout=0.3")
    settings = EngineSettings(resolve_timeout=1.0, lease_ttl=1.0, sweep_interval=0.1)
    try:
        async with Engine(gated_agent(started, gate), store, settings) as engine:
            # Given a turn whose handler has run, and a store that freezes as it commits, for longer than the
            # engine waits to find out
            _id, reply = await engine.submit("c", "pay", idempotency_key="k-1")
            await asyncio.wait_for(started.wait(), 5)
            frozen_redis.pause()
            try:
                gate.set()
                # Then the caller is told the outcome is unknown (503 + Retry-After), never "failed"
                with pytest.raises(OutcomeUnknown, match="same Idempotency-Key"):
                    await asyncio.wait_for(reply, 15)
            finally:
                frozen_redis.resume()
            # And when it retries with the same key, it gets the one committed turn
            again = await engine.send("c", "pay", idempotency_key="k-1", timeout=15)
            conversation = await engine.get("c")
        assert (again.turn, again.reply) == (1, "done: pay")
        assert conversation is not None and conversation.turns == 1 and conversation.state == {"runs": 1}
    finally:
        await store.close()
