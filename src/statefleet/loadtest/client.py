"""The HTTP side of a simulated user: send a message (JSON or SSE) and read a conversation, with
idempotent retries.

A message is retried with the same ``Idempotency-Key`` on connection errors, timeouts, a stream cut short,
502, 503 and 504 — honouring ``Retry-After`` — so a retry never makes a second turn: the server answers it
with the original result. A retry goes to the next target, as a load balancer would send it elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from .stats import Recorder

#: HTTP statuses worth retrying with the same Idempotency-Key.
RETRYABLE = frozenset({502, 503, 504})
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_SSE_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
#: The longest server-sent event a stream may hold unfinished (aiohttp's bound on one line, as before).
MAX_EVENT_BYTES = 512 * 1024


class RequestFailed(Exception):
    """One attempt failed; ``kind`` names how (``connect``, ``timeout``, ``http_503``, ...)."""

    def __init__(self, kind: str, retryable: bool, retry_after: float | None = None, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    """The server's answer to one message."""

    turn: int
    reply: str
    #: Seconds from the first attempt until the reply.
    latency: float
    #: Seconds from the first attempt until the first token (streamed turns only).
    ttft: float | None
    retries: int
    streamed: bool


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def sse_event(block: bytes) -> tuple[str, bytes]:
    """(event name, data) of one server-sent event's lines; comments and other fields are ignored."""
    event, data = "message", []
    for line in block.split(b"\n"):
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            event = value.decode()
        elif field == b"data":
            data.append(value)
    return event, b"\n".join(data)


class Client:
    """Talks to the fleet for every user of one process over one pooled aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, targets: tuple[str, ...], recorder: Recorder,
                 retry_budget: float, tenant: str | None = None, rng: random.Random | None = None) -> None:
        self.session = session
        self.targets = tuple(t.rstrip("/") for t in targets)
        self.recorder = recorder
        self.retry_budget = retry_budget
        self.rng = rng or random.Random(0)
        self._extra = {"X-Tenant": tenant} if tenant else {}

    async def send(self, conversation_id: str, text: str, key: str, stream: bool, target: int) -> Answer | None:
        """Send one message until it is answered or the retry budget is spent (None: the turn failed)."""
        started = time.monotonic()
        first_token: list[float] = []
        attempt = 0
        body = json.dumps({"text": text}).encode()
        while True:
            base = self.targets[(target + attempt) % len(self.targets)]
            url = f"{base}/v1/conversations/{conversation_id}/messages"
            headers = {**(_SSE_HEADERS if stream else _JSON_HEADERS), "Idempotency-Key": key, **self._extra}
            try:
                if stream:
                    result = await self._post_stream(url, body, headers, first_token)
                else:
                    result = await self._post_json(url, body, headers)
                now = time.monotonic()
                ttft = (first_token[0] - started) if first_token else None
                return Answer(int(result["turn"]), str(result["reply"]["text"]), now - started, ttft, attempt,
                              stream)
            except RequestFailed as exc:
                failure = exc
            except (KeyError, TypeError, ValueError) as exc:
                failure = RequestFailed("bad_response", False, detail=str(exc))
            now = time.monotonic()
            self.recorder.error(now, failure.kind)
            if not failure.retryable or now - started + 0.05 > self.retry_budget:
                self.recorder.turn_failed(now)
                return None
            attempt += 1
            self.recorder.retry()
            await asyncio.sleep(self._backoff(attempt, failure.retry_after))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 5.0) + float(self.rng.uniform(0, 0.05))
        return min(1.0, 0.05 * 2.0 ** (attempt - 1)) * float(self.rng.uniform(0.5, 1.0))

    async def _post_json(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        with _transport_failures():
            async with self.session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    raise await _http_failure(response)
                data: dict[str, Any] = await response.json(content_type=None)
                return data

    async def _post_stream(self, url: str, body: bytes, headers: dict[str, str],
                           first_token: list[float]) -> dict[str, Any]:
        with _transport_failures():
            async with self.session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    raise await _http_failure(response)
                # Whatever arrived, split into whole events: one read per network chunk, not one per line.
                buffer = b""
                async for data in response.content.iter_any():
                    buffer += data
                    if b"\r" in buffer:
                        buffer = buffer.replace(b"\r\n", b"\n")
                    *blocks, buffer = buffer.split(b"\n\n")
                    if len(buffer) > MAX_EVENT_BYTES:
                        raise RequestFailed("bad_response", False,
                                            detail=f"an unfinished event over {MAX_EVENT_BYTES} bytes")
                    for block in blocks:
                        event, payload = sse_event(block)
                        if event == "token":
                            if not first_token:
                                first_token.append(time.monotonic())
                        elif event == "reply":
                            reply: dict[str, Any] = json.loads(payload)
                            return reply
                        elif event == "error":
                            error = json.loads(payload).get("error", {})
                            code = str(error.get("code", "error"))
                            raise RequestFailed(f"stream_{code}", code in RETRYABLE_CODES)
                raise RequestFailed("stream_cut", True, detail="the stream ended without a reply")

    async def view(self, conversation_id: str, target: int) -> dict[str, Any] | None:
        """The server's view of the conversation, retried like a message (None: unreachable or not found)."""
        started = time.monotonic()
        attempt = 0
        while True:
            base = self.targets[(target + attempt) % len(self.targets)]
            try:
                async with self.session.get(f"{base}/v1/conversations/{conversation_id}",
                                            headers=self._extra) as response:
                    if response.status == 404:
                        return {"turns": 0, "history": []}
                    if response.status != 200:
                        raise await _http_failure(response)
                    data: dict[str, Any] = await response.json(content_type=None)
                    return data
            except RequestFailed as exc:
                failure = exc
            except aiohttp.ClientConnectorError:
                failure = RequestFailed("connect", True)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError):
                failure = RequestFailed("disconnected", True)
            except TimeoutError:
                failure = RequestFailed("timeout", True)
            now = time.monotonic()
            self.recorder.error(now, f"view_{failure.kind}")
            if not failure.retryable or now - started > self.retry_budget:
                return None
            attempt += 1
            await asyncio.sleep(self._backoff(attempt, failure.retry_after))


#: Error codes of statefleet (``StatefleetError.code``) that a retry with the same Idempotency-Key may cure.
RETRYABLE_CODES = frozenset(
    ("overloaded", "draining", "store_unavailable", "outcome_unknown", "lease_lost", "turn_timeout")
)


@contextlib.contextmanager
def _transport_failures() -> Iterator[None]:
    """Connection-level failures as retryable ``RequestFailed``s, named by kind."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise RequestFailed("connect", True, detail=str(exc)) from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
        raise RequestFailed("disconnected", True, detail=str(exc)) from None
    except TimeoutError:
        raise RequestFailed("timeout", True) from None


async def _http_failure(response: aiohttp.ClientResponse) -> RequestFailed:
    code = ""
    try:
        data = await response.json(content_type=None)
        code = str(data.get("error", {}).get("code", ""))
    except Exception:
        pass
    kind = f"http_{response.status}" + (f"_{code}" if code and response.status not in RETRYABLE else "")
    return RequestFailed(kind, response.status in RETRYABLE, _retry_after(response.headers), code)
