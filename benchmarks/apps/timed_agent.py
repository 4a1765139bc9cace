"""Agents with a known service time, for ``benchmarks/overload.py``: ``statefleet serve
benchmarks/apps/timed_agent.py:sleeping`` (or ``:cpu_bound``, ``:cpu_bound_async``).

``SF_BENCH_SERVICE_MS`` (read at import) sets the time:

- ``sleeping`` awaits ``asyncio.sleep`` for it — a turn that waits on a model or an API and costs the
  instance almost no CPU (its capacity is what the server itself costs per turn);
- ``cpu_bound`` computes for that much CPU time of its thread, as a plain (sync) handler, which statefleet
  runs in a worker thread — how a handler that parses, renders or scores should be written;
- ``cpu_bound_async`` computes as long inside an ``async`` handler, blocking the event loop meanwhile — the
  mistake, measured so its cost is known.

Each replies with the message's text; the state counts the turns, so a read-back can check every commit.
"""

from __future__ import annotations

import asyncio
import os
import time

from statefleet import Agent, Turn

SERVICE_S = float(os.environ.get("SF_BENCH_SERVICE_MS", "100")) / 1000


def _burn(seconds: float) -> None:
    """Compute for ``seconds`` of this thread's CPU time (not wall time: on a shared machine the cost is known)."""
    deadline = time.thread_time() + seconds
    x = 0
    while time.thread_time() < deadline:
        for i in range(200):
            x += i * i


sleeping = Agent("sleeping", history_window=5)


@sleeping.handler
async def sleep_then_reply(turn: Turn) -> None:
    await asyncio.sleep(SERVICE_S)
    turn.state["turns"] = turn.state.get("turns", 0) + 1
    turn.reply(turn.text)


cpu_bound = Agent("cpu-bound", history_window=5)


@cpu_bound.handler
def compute_then_reply(turn: Turn) -> None:
    _burn(SERVICE_S)
    turn.state["turns"] = turn.state.get("turns", 0) + 1
    turn.reply(turn.text)


cpu_bound_async = Agent("cpu-bound-async", history_window=5)


@cpu_bound_async.handler
async def compute_in_the_loop_then_reply(turn: Turn) -> None:
    _burn(SERVICE_S)
    turn.state["turns"] = turn.state.get("turns", 0) + 1
    turn.reply(turn.text)
