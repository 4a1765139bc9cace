"""The floor: a raw ASGI app (no framework) that keeps a conversation's window in Redis with no guarantees.

``app`` does ONE Lua call per message: append the message and the echo reply to the conversation's list,
trim it to the window, return the window — one EVALSHA. ``app_two`` does the two calls a turn with a lease
needs (take the lease and read the window; commit the utterances and free the lease) and nothing else: no
inbox, no fencing beyond the token check, no idempotency, no takeover. It is a reference figure for how much
of statefleet's cost is simply its second round trip.

Serve with ``BENCH_REDIS_URL=redis://... uvicorn benchmarks.apps.bare_lua:app`` (or ``:app_two``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from itertools import count

import redis.asyncio as aioredis

from ._asgi import Receive, Scope, Send, respond

WINDOW = 5
LEASE_TTL_MS = 3000
PREFIX = "/v1/conversations/"
SUFFIX = "/messages"

# KEYS[1] history list. ARGV[1], ARGV[2] the user and the reply utterance (JSON); ARGV[3] window.
APPEND_AND_READ = """
redis.call('RPUSH', KEYS[1], ARGV[1], ARGV[2])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
return redis.call('LRANGE', KEYS[1], 0, -1)
"""

# KEYS[1] lease string, KEYS[2] history list. ARGV[1] lease token, ARGV[2] lease ttl (ms).
# Returns the window, or false when another request holds the lease.
LEASE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('LRANGE', KEYS[2], 0, -1)
end
return false
"""

# KEYS[1] lease string, KEYS[2] history list. ARGV[1] lease token, ARGV[2], ARGV[3] the user and the reply
# utterance, ARGV[4] window. Returns the new window, or false when the lease was lost.
COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('RPUSH', KEYS[2], ARGV[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('DEL', KEYS[1])
return redis.call('LRANGE', KEYS[2], 0, -1)
"""


class BareLuaApp:
    """``POST /v1/conversations/{id}/messages`` → ``{"reply": ..., "history": [...]}``, with 1 or 2 EVALSHA."""

    def __init__(self, lua_calls: int) -> None:
        self.lua_calls = lua_calls
        self.redis: aioredis.Redis | None = None
        self.shas: dict[str, str] = {}
        self.tokens = count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        path: str = scope["path"]
        if scope["method"] != "POST" or not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
            await respond(send, 404, b'{"error":"not found"}')
            return
        conversation_id = path[len(PREFIX):-len(SUFFIX)]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        text = json.loads(body)["text"]
        now = time.time()
        user = json.dumps({"role": "user", "text": text, "ts": now})
        reply = json.dumps({"role": "assistant", "text": text, "ts": now})
        if self.lua_calls == 1:
            window = await self.append_and_read(conversation_id, user, reply)
        else:
            window = await self.lease_and_commit(conversation_id, user, reply)
        if window is None:
            await respond(send, 409, b'{"error":"lease lost"}')
            return
        await respond(send, 200, b'{"reply":' + json.dumps(text).encode() + b',"history":[' + b",".join(window) + b"]}")

    async def append_and_read(self, conversation_id: str, user: str, reply: str) -> list[bytes]:
        assert self.redis is not None
        key = f"bare:{{{conversation_id}}}:h"
        return await self.redis.evalsha(self.shas["append"], 1, key, user, reply, WINDOW)  # type: ignore[no-any-return]

    async def lease_and_commit(self, conversation_id: str, user: str, reply: str) -> list[bytes] | None:
        assert self.redis is not None
        lease, history = f"bare2:{{{conversation_id}}}:l", f"bare2:{{{conversation_id}}}:h"
        token = f"{os.getpid()}-{next(self.tokens)}"
        # A busy conversation (two of wrk's random picks colliding) waits for its lease, as a turn would.
        while True:
            window = await self.redis.evalsha(self.shas["lease"], 2, lease, history, token, LEASE_TTL_MS)
            if window is not None:
                break
            await asyncio.sleep(0.001)
        # (the handler would run here, with `window`)
        return await self.redis.evalsha(  # type: ignore[no-any-return]
            self.shas["commit"], 2, lease, history, token, user, reply, WINDOW
        )

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.redis = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"], max_connections=256)
                for name, script in (("append", APPEND_AND_READ), ("lease", LEASE), ("commit", COMMIT)):
                    self.shas[name] = await self.redis.script_load(script)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.redis is not None:
                    await self.redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = BareLuaApp(lua_calls=1)
app_two = BareLuaApp(lua_calls=2)
