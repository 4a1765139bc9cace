"""Helpers of the server tests: a real uvicorn server on a free port, a test agent, an SSE parser."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn

from statefleet import Agent, EngineSettings, Turn
from statefleet.server import ServerSettings, StatefleetApp
from statefleet.testing import free_port

FAST = ServerSettings(engine=EngineSettings(lease_ttl=0.6, sweep_interval=0.1), drain_timeout=2.0)


def make_agent(*, hooks: bool = True) -> Agent:
    """Echoes. With ``hooks``, metadata ``tokens`` (≤ 5) streams that many tokens 50 ms apart, ``sleep``
    (≤ 2 s) waits and ``fail: true`` raises."""
    agent = Agent("echo", history_window=100)

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.state["count"] = turn.state.get("count", 0) + 1
        turn.state["seen"] = len(turn.history)
        if not hooks:
            turn.reply(f"echo: {turn.text}", data={"turn": turn.turn})
            return
        tokens = turn.metadata.get("tokens")
        for i in range(min(tokens, 5) if isinstance(tokens, int) else 0):
            await turn.emit(f"t{i} ")
            await asyncio.sleep(0.05)
        sleep = turn.metadata.get("sleep")
        if isinstance(sleep, int | float) and not isinstance(sleep, bool):
            await asyncio.sleep(min(max(sleep, 0), 2))
        if turn.metadata.get("fail") is True:
            raise RuntimeError("asked to fail")
        turn.reply(f"echo: {turn.text}", data={"turn": turn.turn})

    return agent


@contextlib.contextmanager
def serve_in_thread(app: StatefleetApp) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread with its own event loop, for synchronous clients."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio", lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.asynccontextmanager
async def serve(app: StatefleetApp) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free port until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio", lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn exited before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.drain()  # ends open event streams, so the shutdown does not wait for them
        server.should_exit = True
        await task


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Parse an SSE response into ``{"id"?, "event", "data"}`` dicts (comments and ``retry:`` skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "event" in fields or "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name != "retry":
                fields[name] = value.removeprefix(" ")

