"""Agents the serving tests run with ``statefleet serve tests/serve/agents.py:<name>``."""

from __future__ import annotations

import asyncio
import os

from statefleet import Agent, Turn

echo = Agent("echo", history_window=6)


@echo.handler
async def handle_echo(turn: Turn) -> None:
    turn.state["n"] = turn.state.get("n", 0) + 1
    turn.reply(f"{os.getpid()}:{turn.text}", data={"history": [u["text"] for u in turn.history],
                                                    "n": turn.state["n"]})


slow = Agent("slow", history_window=6)


@slow.handler
async def handle_slow(turn: Turn) -> None:
    await asyncio.sleep(float(turn.metadata.get("sleep", 1.0)))
    turn.state["runs"] = turn.state.get("runs", 0) + 1
    turn.reply(f"{os.getpid()}:{turn.text}")
