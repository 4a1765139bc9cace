"""One engine in its own OS process, driven by JSON lines on stdin; answers JSON lines on stdout.

Commands and answers: ``statefleet.testing.engine_process``. The handler appends "start"/"end" records to
``--record`` (one O_APPEND write per line, so records of several processes interleave whole), sleeps
``--slow`` seconds on a message's first attempt when the text starts with "slow", and replies with what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from statefleet import Agent, Engine, EngineSettings, Turn, open_store
from statefleet.testing.engine_process import serve_commands


def build_agent(args: argparse.Namespace, instance: list[str]) -> Agent:
    agent = Agent("fleet-test", history_window=args.window)
    record_fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if args.record else None

    def record(kind: str, turn: Turn) -> None:
        if record_fd is not None:
            line = json.dumps({"k": kind, "t": time.monotonic(), "msg": turn.message_id, "text": turn.text,
                               "pid": os.getpid(), "attempt": turn.attempt}) + "\n"
            os.write(record_fd, line.encode())

    @agent.handler
    async def handle(turn: Turn) -> None:
        record("start", turn)
        if turn.text.startswith("slow") and turn.attempt == 1:
            await asyncio.sleep(args.slow)
        else:
            await asyncio.sleep(args.pause)
        turn.state["n"] = turn.state.get("n", 0) + 1
        turn.reply(f"{instance[0]}:{turn.text}", data={
            "history": [u["text"] for u in turn.history], "state_n": turn.state["n"], "turn": turn.turn,
            "pid": os.getpid(), "attempt": turn.attempt,
        })
        record("end", turn)

    return agent


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--window", type=int, default=6)
    parser.add_argument("--record", default="")
    parser.add_argument("--slow", type=float, default=5.0)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--lease-ttl", type=float, default=1.0)
    parser.add_argument("--sweep", type=float, default=0.2)
    args = parser.parse_args()
    instance = [""]
    store = await open_store(args.store)
    engine = Engine(build_agent(args, instance), store,
                    EngineSettings(lease_ttl=args.lease_ttl, sweep_interval=args.sweep))
    instance[0] = engine.instance_id
    await serve_commands(engine, store)

if __name__ == "__main__":
    asyncio.run(main())
