"""One engine process for ``benchmarks/recovery.py``, driven by ``statefleet.testing.engine_process`` commands.

``--block``: the handler never returns (it sleeps 10 minutes), so every message sent here keeps its lease — the
instance that gets killed. Otherwise the handler replies at once with the instance id (the survivors).

Logs go to stderr as ``statefleet serve`` writes them (JSON lines, level info), the per-takeover warning
included, and at the end one line ``{"store_ops": {kind: calls}}``. With ``--record``, the engine's takeovers,
the starts of taken-over turns and their commits are written there as JSON lines ``[kind, conversation id, wall
time]`` (buffered, flushed every 0.2 s: the measurement adds no write per event).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, where benchmarks/http.py would shadow the
# standard library's http.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from statefleet import Agent, Engine, EngineSettings, Turn, open_store  # noqa: E402
from statefleet.observability.logs import configure_logging  # noqa: E402
from statefleet.store import ConversationKey  # noqa: E402
from statefleet.testing.engine_process import serve_commands  # noqa: E402


class Recorder:
    """An engine observer that notes when takeovers, taken-over turns and their commits happen."""

    def __init__(self, path: str) -> None:
        self.lines: list[str] = []
        self.out = Path(path).open("a")  # closed by flush_forever

    def _note(self, kind: str, key: ConversationKey) -> None:
        self.lines.append(json.dumps([kind, key.id, time.time()]))

    def takeover(self, key: ConversationKey, previous_owner: str | None, attempt: int) -> None:
        self._note("takeover", key)

    def turn_started(self, key: ConversationKey, message_id: str, attempt: int, trace: str | None) -> None:
        if attempt > 1:
            self._note("start", key)

    def turn_finished(self, key: ConversationKey, *, outcome: str, attempt: int, handler_seconds: float,
                      total_seconds: float, commit_seconds: float) -> None:
        if attempt > 1:
            self._note("commit", key)

    def message_received(self, key: ConversationKey, message_id: str) -> None:
        return None

    def backend_call(self, call: Any) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def __getattr__(self, name: str) -> Any:  # every other hook: nothing to note
        return lambda *args, **kwargs: None

    async def flush_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(0.2)
                self.flush()
        finally:
            self.flush()
            self.out.close()

    def flush(self) -> None:
        lines, self.lines = self.lines, []
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()


def build_agent(block: bool, instance: list[str]) -> Agent:
    agent = Agent("recovery", history_window=6)

    @agent.handler
    async def handle(turn: Turn) -> None:
        if block:
            await asyncio.sleep(600)
        turn.reply(instance[0])

    return agent


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--block", action="store_true")
    parser.add_argument("--max-in-flight", type=int, default=EngineSettings.max_in_flight)
    parser.add_argument("--record", default="")
    args = parser.parse_args()
    configure_logging("info", json_lines=True)
    instance = [""]
    store = await open_store(args.store)
    recorder = Recorder(args.record) if args.record else None
    engine = Engine(build_agent(args.block, instance), store, EngineSettings(max_in_flight=args.max_in_flight),
                    observer=recorder)
    instance[0] = engine.instance_id
    flusher = asyncio.create_task(recorder.flush_forever()) if recorder is not None else None
    try:
        await serve_commands(engine, store)
        # the store calls this engine made, by kind (reclaim calls per takeover: sweeps that collided)
        stats = getattr(store, "stats", None)  # RedisStore's StoreStats
        sys.stderr.write(json.dumps({"store_ops": None if stats is None else stats.ops}) + "\n")
    finally:
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher


if __name__ == "__main__":
    asyncio.run(main())
