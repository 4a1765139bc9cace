"""Agents the load-test tests serve: a no-op one that streams one token (enough to be in flight when killed)."""

from __future__ import annotations

import asyncio

from statefleet import Agent, Turn

agent = Agent("noop", version="v1", history_window=6)


@agent.handler
async def handle(turn: Turn) -> None:
    await turn.emit("ok ")
    await asyncio.sleep(0.005)
    turn.reply(f"ok {turn.turn}")
