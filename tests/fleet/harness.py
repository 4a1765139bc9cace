"""Start engines in separate OS processes (tests/fleet/worker.py) and talk to them over pipes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")


class Worker:
    """One engine process. ``request`` sends a command and waits for its answer."""

    def __init__(self, proc: asyncio.subprocess.Process, instance: str) -> None:
        self.proc = proc
        self.instance = instance
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, store_url: str, **options: object) -> Worker:
        argv = [sys.executable, str(WORKER), "--store", store_url]
        for name, value in options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        return cls(proc, ready["ready"])

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            answer = json.loads(line)
            future = self._pending.pop(answer["id"], None)
            if future is not None and not future.done():
                future.set_result(answer)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("worker exited"))

    async def request(self, op: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self.proc.stdin.write((json.dumps({"op": op, "id": ident, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, timeout)

    async def send(self, conv: str, text: str, key: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        return await self.request("send", timeout=timeout, conv=conv, text=text, key=key)

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "quit"}\n')
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (TimeoutError, ConnectionError, BrokenPipeError):
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        try:
            await self._reader
        except (asyncio.CancelledError, ConnectionError):
            pass


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
