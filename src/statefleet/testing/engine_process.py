"""An engine in its own OS process, driven by JSON lines on stdin and answering JSON lines on stdout: the loop
the tests' engine workers run (``serve_commands``; tests/fleet/worker.py, tests/faults/worker.py, each with its
own agent), and the client the tests drive them with (``EngineProcess``).

Commands: ``{"op": "send", "id": n, "conv", "text", "key"?, "metadata"?, "policy"?, "reply_timeout"?}``,
``{"op": "get", "id": n, "conv"}``, ``{"op": "stats", "id": n}``, ``{"op": "quit"}``. The first line out is
``{"ready": instance id, "pid": pid}``. An error answer carries what a client of the HTTP API would see: the
code and its status (an exception that is not a ``StatefleetError`` is ``internal`` / 500, as the server
answers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from pathlib import Path
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


class EngineProcessGone(ConnectionError):
    """The engine process exited (or was killed) before it answered."""


class EngineProcess:
    """One engine process running ``serve_commands``; ``request`` sends a command and waits for its answer."""

    def __init__(self, proc: asyncio.subprocess.Process, instance: str) -> None:
        self.proc = proc
        #: The engine's instance id.
        self.instance = instance
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, script: Path, argv: list[str], log: Path | None = None) -> EngineProcess:
        """Start ``python script *argv`` (its stderr appended to ``log``) and wait for its ready line."""
        with contextlib.ExitStack() as files:
            stderr = files.enter_context(log.open("ab")) if log is not None else None
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        assert proc.stdout is not None
        try:
            ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        except (TimeoutError, ValueError):
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"engine process {script.name} {argv} did not start") from None
        return cls(proc, ready["ready"])

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self._reader.done()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                answer = json.loads(line)
            except ValueError:  # the tail of a line a kill -9 cut
                continue
            future = self._pending.pop(answer["id"], None)
            if future is not None and not future.done():
                future.set_result(answer)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(EngineProcessGone(f"engine process {self.pid} exited"))
        self._pending.clear()

    async def request(self, op: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """Send one command; its answer, or ``EngineProcessGone`` / ``TimeoutError``."""
        if not self.alive or self.proc.stdin is None:
            raise EngineProcessGone(f"engine process {self.pid} is not running")
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self.proc.stdin.write((json.dumps({"op": op, "id": ident, **fields}) + "\n").encode())
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._pending.pop(ident, None)
            raise EngineProcessGone(f"engine process {self.pid} is not reading: {exc}") from exc
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(ident, None)

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    async def close(self) -> None:
        """Ask it to quit (thawing it first), kill it if it does not within 10 s."""
        if self.proc.returncode is None:
            self.signal(signal.SIGCONT)
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "quit"}\n')
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (TimeoutError, ConnectionError, RuntimeError):
                self.proc.kill()
                await self.proc.wait()
        await self._reader

