"""The floor of the llm benchmark: a raw ASGI app that streams the mock LLM's tokens to the client and keeps
each conversation in a dict — no store, no lease, no inbox, no event log, no idempotency, no metrics.

It speaks just enough of statefleet's API for the load tester (``POST .../messages`` as SSE: ``token``
events, one ``reply`` event with the turn number, ``done``; ``GET /v1/conversations/{id}`` with ``turns`` and
the history window; ``/readyz``), and calls the model exactly as ``lean_llm_agent.py`` does (aiohttp, one
``orjson.loads`` per event), with the garbage-collector settings a statefleet server uses. Under uvicorn
(uvloop, httptools) on the same CPU it shows what one Python process can do with this workload on this machine
before statefleet adds anything: the llm benchmark measures it in the same run.

Serve with ``OPENAI_BASE_URL=http://.../v1 uvicorn benchmarks.apps.bare_llm_proxy:app``.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson

from statefleet._gc import FrozenHeap, tune_for_serving

from ._asgi import Receive, Scope, Send, respond

WINDOW = 10
PREFIX = "/v1/conversations/"
SUFFIX = "/messages"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Conversation:
    __slots__ = ("history", "turns")

    def __init__(self) -> None:
        self.turns = 0
        self.history: list[dict[str, Any]] = []


class BareLLMProxy:
    def __init__(self) -> None:
        self.conversations: dict[str, Conversation] = {}
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/readyz":
            await respond(send, 200, b'{"status":"ready"}')
            return
        if not path.startswith(PREFIX):
            await respond(send, 404, b'{"error":{"code":"not_found","message":"no route"}}')
            return
        if scope["method"] == "POST" and path.endswith(SUFFIX):
            await self.message(path[len(PREFIX):-len(SUFFIX)], receive, send)
        elif scope["method"] == "GET":
            conversation = self.conversations.get(path[len(PREFIX):])
            if conversation is None:
                await respond(send, 404, b'{"error":{"code":"conversation_not_found","message":"no such"}}')
            else:
                await respond(send, 200, orjson.dumps({"turns": conversation.turns, "history": conversation.history,
                                                       "pending": 0}))
        else:
            await respond(send, 405, b'{"error":{"code":"method_not_allowed","message":"no"}}')

    async def message(self, conversation_id: str, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            chunk = await receive()
            body += chunk.get("body", b"")
            if not chunk.get("more_body", False):
                break
        text = orjson.loads(body)["text"]
        conversation = self.conversations.setdefault(conversation_id, Conversation())
        messages = [{"role": h["role"], "content": h["text"]} for h in conversation.history]
        messages.append({"role": "user", "content": text})
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        parts: list[str] = []
        buffer = b""
        assert self.session is not None
        async with self.session.post("chat/completions", json={"model": "mock", "messages": messages,
                                                                "stream": True}) as response:
            response.raise_for_status()
            async for data in response.content.iter_any():
                buffer += data
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    if not event.startswith(b"data: {"):
                        continue
                    choices = orjson.loads(event[6:]).get("choices") or [{}]
                    token = choices[0].get("delta", {}).get("content")
                    if token:
                        parts.append(token)
                        await send({"type": "http.response.body", "more_body": True,
                                    "body": b"event: token\ndata: " + orjson.dumps({"text": token}) + b"\n\n"})
        conversation.turns += 1
        turn = conversation.turns
        reply = "".join(parts)
        conversation.history += [{"turn": turn, "role": "user", "text": text},
                                 {"turn": turn, "role": "assistant", "text": reply}]
        del conversation.history[:-WINDOW]
        data = orjson.dumps({"conversation_id": conversation_id, "turn": turn, "reply": {"text": reply}})
        await send({"type": "http.response.body", "more_body": False,
                    "body": b"event: reply\ndata: " + data + b"\n\nevent: done\ndata: {}\n\n"})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                tune_for_serving()
                FrozenHeap().start_thread()
                self.session = aiohttp.ClientSession(
                    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8300/v1").rstrip("/") + "/",
                    connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = BareLLMProxy()
