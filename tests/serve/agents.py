"""Agents the serving tests run with ``statefleet serve tests/serve/agents.py:<name>``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

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


gated = Agent("gated", history_window=6)


@gated.handler
async def handle_gated(turn: Turn) -> None:
    """Holds the turn until the file named by metadata ``gate`` exists: the test decides when turns end."""
    gate = Path(turn.metadata["gate"])
    while not gate.exists():  # noqa: ASYNC110, ASYNC240 - another process opens the gate; one stat per poll
        await asyncio.sleep(0.02)
    turn.reply(turn.text)
