"""A small fake of the statefleet HTTP API (aiohttp), correct or deliberately broken, for the checker's tests.

Modes: ``ok``; ``drop_history`` (the view forgets the older half of the history); ``duplicate`` (every 7th
message of a conversation commits twice); ``stale`` (the view lags one turn behind); ``reorder`` (the view's
history has its two newest utterances swapped); ``endless_event`` (a stream of one event that never ends).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

from aiohttp import web

WINDOW = 6


class FakeFleet:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.history: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.turns: dict[str, int] = defaultdict(int)
        self.replies: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/conversations/{cid}/messages", self.post)
        app.router.add_get("/v1/conversations/{cid}", self.get)
        return app

    def _commit(self, cid: str, text: str) -> dict[str, Any]:
        self.turns[cid] += 1
        turn = self.turns[cid]
        reply = f"ok {turn}"
        self.history[cid] += [{"role": "user", "text": text, "ts": 0, "turn": turn},
                              {"role": "agent", "text": reply, "ts": 0, "turn": turn}]
        return {"conversation_id": cid, "message_id": f"m{turn}", "turn": turn, "version": "v1",
                "reply": {"text": reply, "data": None}, "events": 2}

    async def post(self, request: web.Request) -> web.StreamResponse:
        cid = request.match_info["cid"]
        key = request.headers.get("Idempotency-Key", "")
        text = (await request.json())["text"]
        if key in self.replies:
            result = self.replies[key]
        else:
            if self.mode == "duplicate" and (self.turns[cid] + 1) % 7 == 0:
                self._commit(cid, text)  # the bug: the same message commits twice
            result = self.replies[key] = self._commit(cid, text)
        if "text/event-stream" not in request.headers.get("Accept", ""):
            return web.json_response(result)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.mode == "endless_event":  # one event that never ends, 64 KiB at a time
            await response.write(b"event: token\ndata: ")
            for _ in range(16):
                await response.write(b"x" * 65536)
            await response.write_eof()
            return response
        # CRLF lines, a comment, and the reply cut in two writes: the tester must reassemble events.
        await response.write(b': hello\r\n\r\nevent: token\r\ndata: {"text":"ok "}\r\n\r\n')
        reply = b"event: reply\r\ndata: " + json.dumps(result).encode() + b"\r\n\r\nevent: done\ndata: {}\n\n"
        await response.write(reply[:20])
        await asyncio.sleep(0.002)
        await response.write(reply[20:])
        await response.write_eof()
        return response

    async def get(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        history = self.history[cid][-WINDOW:]
        turns = self.turns[cid]
        if self.mode == "drop_history" and turns >= 3:
            history = history[len(history) // 2:]
            history = history[:-2]
        elif self.mode == "stale" and turns >= 2:
            turns -= 1
            history = self.history[cid][-WINDOW - 2:-2]
        elif self.mode == "reorder" and len(history) >= 4:
            history = [*history[:-4], history[-2], history[-1], history[-4], history[-3]]
        return web.json_response({"conversation_id": cid, "version": "v1", "turns": turns, "history": history,
                                  "state": {}, "pending": 0})


async def start(mode: str) -> tuple[web.AppRunner, str, FakeFleet]:
    fleet = FakeFleet(mode)
    runner = web.AppRunner(fleet.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", fleet
