"""``statefleet mock-llm``: an OpenAI-compatible ``/v1/chat/completions`` server for load tests.

Streaming (``"stream": true``, SSE ``chat.completion.chunk`` events then ``data: [DONE]``) and not, with a
configurable time to first token, tokens per second, reply length, error rate and latency spikes — so a
streaming agent can be load-tested without paying for, or waiting on, a real model.

>>> MockSettings(ttft=0.2, tokens_per_s=30, reply_tokens=30).reply_seconds
1.2
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ._gc import tune_for_serving
from ._json import dumps
from .errors import ConfigError
from .loadtest.histogram import Histogram

if TYPE_CHECKING:
    from aiohttp import web

_WORDS = ("the", "order", "is", "on", "its", "way", "and", "should", "arrive", "soon", "thanks", "for",
          "waiting", "we", "checked", "your", "account", "everything", "looks", "fine")


@dataclass(frozen=True)
class MockSettings:
    """How the mock model behaves."""

    #: Seconds before the first token.
    ttft: float = 0.2
    #: Tokens per second after the first.
    tokens_per_s: float = 30.0
    #: Tokens in each reply.
    reply_tokens: int = 30
    #: Fraction of requests answered 500 (or, streaming, cut after the first tokens).
    error_rate: float = 0.0
    #: Fraction of requests delayed by ``spike_seconds`` before the first token.
    spike_rate: float = 0.0
    spike_seconds: float = 2.0
    #: Seed of the random choices.
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.tokens_per_s <= 0:
            raise ConfigError("--tokens-per-s must be > 0")
        if self.reply_tokens < 1:
            raise ConfigError("--reply-tokens must be ≥ 1")
        for name in ("error_rate", "spike_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 1")

    @property
    def reply_seconds(self) -> float:
        """Seconds one streamed reply takes: first token after ``ttft``, the rest at ``tokens_per_s``."""
        return round(self.ttft + self.reply_tokens / self.tokens_per_s, 6)


class MockLLM:
    """The server's behaviour, apart from the HTTP framework, so it can be reused in tests."""

    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.requests = 0
        #: From each streamed request's arrival to its first token's write, as the mock itself saw it (the
        #: configured TTFT plus the mock's own delays under load): the baseline a load test compares with.
        self.first_token = Histogram()

    def words(self, prompt: str) -> list[str]:
        n = self.settings.reply_tokens
        seed = sum(prompt.encode()) if prompt else 0
        return [_WORDS[(seed + i) % len(_WORDS)] + (" " if i + 1 < n else ".") for i in range(n)]

    def first_delay(self) -> float:
        delay = self.settings.ttft
        if self.settings.spike_rate and self.rng.random() < self.settings.spike_rate:
            delay += self.settings.spike_seconds
        return delay

    def fails(self) -> bool:
        return bool(self.settings.error_rate) and self.rng.random() < self.settings.error_rate

    def build_app(self) -> web.Application:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        loop = type(asyncio.get_running_loop())
        return web.json_response({"status": "ok", "requests": self.requests, "ttft_ms": self.first_token.summary_ms(),
                                  "loop": f"{loop.__module__}.{loop.__qualname__}"})

    async def models(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "mock"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        started = time.monotonic()
        self.requests += 1
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "invalid_request_error", "messages must be a list")
        model = str(body.get("model") or "mock")
        prompt = " ".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
        words = self.words(prompt)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        failing = self.fails()
        if not body.get("stream"):
            if failing:
                return _error(500, "server_error", "the mock model failed (error rate)")
            await asyncio.sleep(self.first_delay() + (len(words) - 1) / self.settings.tokens_per_s)
            return web.json_response({
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                             "finish_reason": "stop"}],
                "usage": _usage(prompt, words),
            })
        if failing and self.rng.random() < 0.5:
            return _error(500, "server_error", "the mock model failed (error rate)")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        first = self.first_delay()
        cut = len(words) // 2 if failing else None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + dumps(data) + b"\n\n"

        for i, word in enumerate(words):
            # Paced against the start, so tokens do not drift later under load.
            due = started + first + i / self.settings.tokens_per_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if cut is not None and i == cut:
                # A failure mid-stream: the connection ends without [DONE].
                response.force_close()
                return response
            delta: dict[str, Any] = {"content": word}
            if i == 0:
                delta["role"] = "assistant"
            await response.write(chunk(delta))
            if i == 0:
                self.first_token.record(time.monotonic() - started)
        # The finish chunk, [DONE] and the end of the body leave in one write (one packet for the client to read).
        await response.write_eof(chunk({}, "stop") + b"data: [DONE]\n\n")
        return response


def _usage(prompt: str, words: list[str]) -> dict[str, int]:
    prompt_tokens = max(1, len(prompt.split()))
    return {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words)}


def _error(status: int, kind: str, message: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"error": {"message": message, "type": kind, "code": None}}, status=status)


def serve(settings: MockSettings, host: str, port: int) -> None:
    """Run the mock until interrupted."""
    from aiohttp import web

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    app = MockLLM(settings).build_app()
    print(f"mock LLM on http://{host}:{port}/v1 — ttft {settings.ttft:g}s, {settings.tokens_per_s:g} tokens/s, "
          f"{settings.reply_tokens} tokens per reply", flush=True)
    tune_for_serving()  # its pauses would add to the model's time to first token it is meant to fake
    # The loop is passed in: run_app makes a plain asyncio one of its own otherwise (set_event_loop is ignored).
    web.run_app(app, host=host, port=port, print=None, access_log=None, backlog=4096, loop=loop)


@click.command("mock-llm")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8300, show_default=True)
@click.option("--ttft", default="200ms", show_default=True, help="Time to first token.")
@click.option("--tokens-per-s", type=float, default=30.0, show_default=True, help="Tokens per second after the first.")
@click.option("--reply-tokens", type=int, default=30, show_default=True, help="Tokens in each reply.")
@click.option("--error-rate", type=float, default=0.0, show_default=True, help="Fraction of requests that fail.")
@click.option("--spike-rate", type=float, default=0.0, show_default=True,
              help="Fraction of requests delayed by --spike before the first token.")
@click.option("--spike", default="2s", show_default=True, help="Length of a latency spike.")
@click.option("--seed", type=int, default=None, help="Seed of the random choices.")
def mock_llm(host: str, port: int, ttft: str, tokens_per_s: float, reply_tokens: int, error_rate: float,
             spike_rate: float, spike: str, seed: int | None) -> None:
    """An OpenAI-compatible /v1/chat/completions server (streaming and not) with configurable timing and faults."""
    import sys

    from .loadtest.units import parse_duration

    try:
        settings = MockSettings(parse_duration(ttft, "--ttft"), tokens_per_s, reply_tokens, error_rate, spike_rate,
                                parse_duration(spike, "--spike"), seed)
    except ConfigError as exc:
        click.echo(f"statefleet mock-llm: {exc}", err=True)
        sys.exit(2)
    serve(settings, host, port)
