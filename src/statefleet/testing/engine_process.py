"""An engine in its own OS process, driven by JSON lines on stdin and answering JSON lines on stdout: the loop
that the tests' engine workers share (tests/fleet/worker.py, tests/faults/worker.py), each with its own agent.

Commands: ``{"op": "send", "id": n, "conv", "text", "key"?, "metadata"?, "policy"?, "reply_timeout"?}``,
``{"op": "get", "id": n, "conv"}``, ``{"op": "stats", "id": n}``, ``{"op": "quit"}``. The first line out is
``{"ready": instance id, "pid": pid}``. An error answer carries what a client of the HTTP API would see: the
code and its status (an exception that is not a ``StatefleetError`` is ``internal`` / 500, as the server
answers it).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from ..engine import Engine
from ..errors import StatefleetError
from ..store import Store


def answer(payload: dict[str, Any]) -> None:
    """Write one answer line."""
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def error_answer(ident: int, exc: BaseException) -> dict[str, Any]:
    """The answer to command ``ident`` that raised ``exc``."""
    if isinstance(exc, StatefleetError):
        return {"id": ident, "ok": False, "error": exc.code, "status": exc.status, "message": str(exc)}
    return {"id": ident, "ok": False, "error": "internal", "status": 500, "message": repr(exc)}


async def _run(engine: Engine, cmd: dict[str, Any]) -> None:
    ident = cmd["id"]
    try:
        if cmd["op"] == "send":
            result = await engine.send(
                cmd["conv"], cmd["text"], idempotency_key=cmd.get("key"), metadata=cmd.get("metadata"),
                double_texting=cmd.get("policy"), timeout=cmd.get("reply_timeout", 300.0),
            )
            answer({"id": ident, "ok": True, "result": {**result.to_json(), "duplicate": result.duplicate}})
        elif cmd["op"] == "get":
            conv = await engine.get(cmd["conv"])
            answer({"id": ident, "ok": True, "result": None if conv is None else conv.to_json()})
        elif cmd["op"] == "stats":
            answer({"id": ident, "ok": True, "result": {
                "instance": engine.instance_id, "fenced": engine.stats.fenced,
                "takeovers": engine.stats.takeovers, "committed": engine.stats.committed}})
        else:
            answer({"id": ident, "ok": False, "error": "bad_request", "status": 400,
                    "message": f"unknown op {cmd['op']!r}"})
    except Exception as exc:  # every answer reaches the client, as the HTTP server's would
        answer(error_answer(ident, exc))


async def serve_commands(engine: Engine, store: Store) -> None:
    """Start ``engine``, answer commands from stdin until ``quit`` or end of input, then stop it and close
    ``store``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    async with engine:
        answer({"ready": engine.instance_id, "pid": os.getpid()})
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            task = asyncio.create_task(_run(engine, cmd))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    await store.close()
