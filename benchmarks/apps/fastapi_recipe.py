"""The usual recipe, as blog posts write it: FastAPI + synchronous redis-py, chat history in a Redis list.

Per utterance (the user's message, then the reply) three separate calls: LPUSH it, LTRIM the list to the
window, LRANGE the window. The endpoint is a plain ``def``, so FastAPI runs it in its threadpool. No lease,
no idempotency, no durability beyond Redis itself: two messages to one conversation interleave freely.

Serve with ``BENCH_REDIS_URL=redis://... uvicorn benchmarks.apps.fastapi_recipe:app``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from fastapi import FastAPI
from pydantic import BaseModel

WINDOW = 5

app = FastAPI()
store = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


class Message(BaseModel):
    text: str


def remember(conversation_id: str, role: str, text: str) -> list[Any]:
    key = f"recipe:{conversation_id}"
    store.lpush(key, json.dumps({"role": role, "text": text, "ts": time.time()}))
    store.ltrim(key, 0, WINDOW - 1)
    return [json.loads(item) for item in reversed(store.lrange(key, 0, WINDOW - 1))]  # type: ignore[union-attr]


@app.post("/v1/conversations/{conversation_id}/messages")
def post_message(conversation_id: str, message: Message) -> dict[str, Any]:
    remember(conversation_id, "user", message.text)
    reply = message.text  # the no-op echo agent
    history = remember(conversation_id, "assistant", reply)
    return {"reply": reply, "history": history}
