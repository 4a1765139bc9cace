"""Start engines in separate OS processes (tests/fleet/worker.py) and talk to them over pipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from statefleet.testing.engine_process import EngineProcess

WORKER = Path(__file__).with_name("worker.py")


class Worker(EngineProcess):
    """One engine process (``worker.py``) with its options as keyword arguments."""

    @classmethod
    async def start(cls, store_url: str, **options: object) -> Worker:
        argv = ["--store", store_url]
        for name, value in options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        process = await cls.spawn(WORKER, argv)
        assert isinstance(process, Worker)
        return process

    async def send(self, conv: str, text: str, key: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        return await self.request("send", timeout=timeout, conv=conv, text=text, key=key)


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
