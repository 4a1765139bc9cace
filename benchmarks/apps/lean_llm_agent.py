"""The streaming LLM agent of ``examples/llm_agent.py``, calling the model with a lean SSE client (aiohttp,
one ``orjson.loads`` per event) instead of the official ``openai`` SDK.

Profiling the example under the 5,000-conversation benchmark showed ~75% of the server's CPU in the SDK's
per-chunk parsing (pydantic model construction), so on 2 cores it measured the SDK, not statefleet. This
agent makes the same request to the same OpenAI-compatible endpoint and streams the same tokens.
"""

from __future__ import annotations

import os

import aiohttp
import orjson

from statefleet import Agent, Turn

agent = Agent("llm-lean", version="v1", history_window=10)
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(
            base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8300/v1").rstrip("/") + "/",
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=60),
        )
    return _session


@agent.handler
async def handle(turn: Turn) -> None:
    messages = [{"role": "user" if u["role"] == "user" else "assistant", "content": u["text"]} for u in turn.history]
    messages.append({"role": "user", "content": turn.text})
    body = {"model": "mock", "messages": messages, "stream": True}
    parts: list[str] = []
    buffer = b""
    async with session().post("chat/completions", json=body,
                              headers={"Idempotency-Key": turn.idempotency_key}) as response:
        response.raise_for_status()
        async for data in response.content.iter_any():  # what arrived: usually one whole event
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: {"):
                    continue  # [DONE], comments
                choices = orjson.loads(event[6:]).get("choices") or [{}]
                text = choices[0].get("delta", {}).get("content")
                if text:
                    parts.append(text)
                    turn.emit(text)
    turn.state["answers"] = int(turn.state.get("answers", 0)) + 1
    turn.reply("".join(parts))
