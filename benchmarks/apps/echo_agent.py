"""No-op agents for ``statefleet serve benchmarks/apps/echo_agent.py:agent`` (or ``:streaming_agent``).

``agent`` echoes the message back (window 5): the server's own cost per turn, with nothing of the agent's.
``streaming_agent`` emits one token as its very first statement, then replies. The handler records no
timestamps: the benchmark measures time to first token client-side, and since the emit comes first the
handler's own offset to it is ~0, so what the client sees is what statefleet adds.
"""

from __future__ import annotations

import asyncio

from statefleet import Agent, Turn

agent = Agent("echo", history_window=5)


@agent.handler
async def echo(turn: Turn) -> None:
    turn.reply(turn.text)


streaming_agent = Agent("echo-stream", history_window=5)


@streaming_agent.handler
async def echo_streaming(turn: Turn) -> None:
    await turn.emit("tok")
    turn.reply(turn.text)


paced_agent = Agent("paced", history_window=10)


@paced_agent.handler
async def paced(turn: Turn) -> None:
    """A model's timing without a model: first token after 100 ms, then 29 more over ~0.9 s."""
    await asyncio.sleep(0.1)
    for i in range(30):
        if i:
            await asyncio.sleep(0.9 / 29)
        await turn.emit(f"tok{i} ")
    turn.reply("done")
