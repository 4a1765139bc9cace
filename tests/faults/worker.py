"""One engine in its own OS process for the fault suite, driven by JSON lines on stdin; answers on stdout.

Commands and answers (what a client of the HTTP API would see: a result, or an error code with its HTTP
status): ``statefleet.testing.engine_process``.

The agent keeps an exact record of what committed: each turn appends ``{"text", "run", "turn"}`` to
``state["seen"]``, so the final state lists every committed message in commit order, and names the handler
run that committed it. Every handler run appends "start" and "end" records (``run``, conversation, message id,
pid, attempt, ``time.monotonic()``) to ``--record``, one ``O_APPEND`` write per line, so records of several
processes interleave whole. ``metadata["sleep"]`` is how long the handler sleeps (every attempt);
``metadata["fail"]`` makes it raise after sleeping.

``--break-fencing`` is the deliberately broken build: it patches, in this process only, the Redis store's
commit script so that the lease owner / fencing token check is skipped. The fault suite must catch it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid

from statefleet import Agent, Engine, EngineSettings, Turn, open_store
from statefleet.testing.engine_process import serve_commands

FENCING_CHECK = "if r[1] ~= owner or r[2] ~= token then"


def break_fencing() -> None:
    """Skip the fencing check of ``commit.lua`` in this process (test code only; the product is untouched)."""
    from statefleet.store import redis as redis_store

    original = redis_store._script_source

    def patched(name: str) -> str:
        source = original(name)
        if name != "commit":
            return source
        if FENCING_CHECK not in source:
            raise RuntimeError(f"commit.lua no longer contains {FENCING_CHECK!r}; update --break-fencing")
        return source.replace(FENCING_CHECK, "if false then")

    redis_store._script_source = patched  # type: ignore[assignment]


def build_agent(record_path: str) -> Agent:
    agent = Agent("fault-test", history_window=4)
    record_fd = os.open(record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(kind: str, turn: Turn, run: str) -> None:
        line = json.dumps({"k": kind, "t": time.monotonic(), "run": run, "conv": turn.conversation_id,
                           "msg": turn.message_id, "text": turn.text, "pid": os.getpid(),
                           "attempt": turn.attempt}) + "\n"
        os.write(record_fd, line.encode())

    @agent.handler
    async def handle(turn: Turn) -> None:
        run = uuid.uuid4().hex[:12]
        record("start", turn, run)
        await asyncio.sleep(float(turn.metadata.get("sleep", 0.0)))
        if turn.metadata.get("fail"):
            record("end", turn, run)
            raise RuntimeError(f"message {turn.text!r} asked the handler to fail")
        seen = turn.state.setdefault("seen", [])
        seen.append({"text": turn.text, "run": run, "turn": turn.turn})
        turn.reply(turn.text, data={"run": run, "turn": turn.turn, "pid": os.getpid(), "attempt": turn.attempt})
        record("end", turn, run)

    return agent


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--lease-ttl", type=float, default=0.5)
    parser.add_argument("--sweep", type=float, default=0.1)
    parser.add_argument("--break-fencing", action="store_true")
    args = parser.parse_args()
    if args.break_fencing:
        break_fencing()
    store = await open_store(args.store)
    engine = Engine(build_agent(args.record), store,
                    EngineSettings(lease_ttl=args.lease_ttl, sweep_interval=args.sweep))
    await serve_commands(engine, store)


if __name__ == "__main__":
    asyncio.run(main())
