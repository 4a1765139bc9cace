"""Tracing with the SDK's in-memory exporter: the span tree of a turn, and traceparent to a real HTTP backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server._support import FAST, serve
from statefleet import Agent, Turn
from statefleet.observability import backend_call
from statefleet.server import ServerSettings, create_app
from statefleet.store.memory import MemoryStore

INBOUND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A real local HTTP "LLM" that records the headers of every call."""
    seen: list[dict[str, str]] = []

    async def complete(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"text": "forty-two"})

    app = web.Application()
    app.router.add_post("/v1/complete", complete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def llm_agent(backend_url: str) -> Agent:
    agent = Agent("traced", version="v7")

    @agent.handler
    async def handle(turn: Turn) -> None:
        async with httpx.AsyncClient() as http, backend_call("llm", turn) as call:
            response = await http.post(f"{backend_url}/v1/complete", json={"prompt": turn.text},
                                       headers=call.headers)
            call.check_status(response.status_code)
        turn.reply(response.json()["text"])

    return agent


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_span_tree_of_a_turn_and_traceparent_to_the_backend(
    backend: tuple[str, list[dict[str, str]]],
) -> None:
    # Given a server tracing into memory, and a handler that calls a real HTTP backend
    backend_url, seen = backend
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = ServerSettings(engine=FAST.engine, drain_timeout=2.0, tracer_provider=provider)
    app = create_app(llm_agent(backend_url), MemoryStore(), settings)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        # When a client that is itself traced sends a message
        response = await client.post("/v1/conversations/c1/messages", json={"text": "meaning of life?"},
                                     headers={"traceparent": INBOUND})
        assert response.status_code == 200, response.text
        assert response.json()["reply"]["text"] == "forty-two"
        for _ in range(50):  # the request span ends just after the response is sent
            if any(s.name.startswith("POST ") for s in exporter.get_finished_spans()):
                break
            await asyncio.sleep(0.02)
    spans = exporter.get_finished_spans()
    request = by_name(spans, "POST /v1/conversations/{id}/messages")
    turn = by_name(spans, "turn")
    accept = by_name(spans, "store.accept")
    handler = by_name(spans, "handler")
    commit = by_name(spans, "store.commit")
    llm = by_name(spans, "backend llm")
    # Then the request continues the client's trace, and the turn hangs under it: accept, handler, commit
    trace_id = int(INBOUND.split("-")[1], 16)
    assert all(s.context.trace_id == trace_id for s in (request, turn, accept, handler, commit, llm))
    assert request.parent is not None and request.parent.span_id == int(INBOUND.split("-")[2], 16)
    assert request.attributes is not None and request.attributes["http.route"] == "/v1/conversations/{id}/messages"
    assert request.attributes["http.response.status_code"] == 200
    assert turn.parent is not None and turn.parent.span_id == request.context.span_id
    for child in (accept, handler, commit):
        assert child.parent is not None and child.parent.span_id == turn.context.span_id, child.name
    assert handler.start_time is not None and commit.start_time is not None and handler.end_time is not None
    assert accept.end_time is not None and accept.end_time <= handler.start_time
    assert handler.end_time <= commit.start_time
    assert handler.attributes is not None and handler.attributes["statefleet.conversation_id"] == "c1"
    # and the backend call is the handler's child, whose traceparent (and idempotency key) the backend got
    assert llm.parent is not None and llm.parent.span_id == handler.context.span_id
    assert len(seen) == 1
    assert seen[0]["traceparent"] == f"00-{trace_id:032x}-{llm.context.span_id:016x}-01"
    assert seen[0]["Idempotency-Key"].startswith("default/c1/")


async def test_a_turn_run_after_a_takeover_links_to_the_original_trace() -> None:
    # Given a message accepted (with its trace context) by an instance that died before running it
    from statefleet import Engine, EngineSettings
    from statefleet.observability.tracing import TracingObserver
    from statefleet.store import ConversationKey, InboundMessage, Limits

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = MemoryStore()
    key = ConversationKey("default", "c2")
    message = InboundMessage("m-1", "hello", {}, None, 0.0, "fp", INBOUND)
    await store.accept(key, message, version="v1", owner="dead", policy="enqueue", limits=Limits(lease_ttl=0.05))
    await asyncio.sleep(0.1)
    agent = Agent("a")

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.reply("ok")

    engine = Engine(agent, store, EngineSettings(lease_ttl=0.5, sweep_interval=0.05))
    engine.observer = TracingObserver(provider.get_tracer("test"), engine.instance_id, "v1")
    # When another instance's sweeper takes it over and runs it
    async with engine:
        for _ in range(100):
            view = await store.load(key)
            if view is not None and view.turns == 1:
                break
            await asyncio.sleep(0.02)
    spans = exporter.get_finished_spans()
    retry = by_name(spans, "turn.retry")
    handler = by_name(spans, "handler")
    # Then the re-run starts a new trace that links to the turn the message was accepted in
    assert retry.parent is None and retry.context.trace_id != int(INBOUND.split("-")[1], 16)
    assert [link.context.trace_id for link in retry.links] == [int(INBOUND.split("-")[1], 16)]
    assert retry.attributes is not None and retry.attributes["statefleet.attempt"] == 2
    assert retry.attributes["statefleet.outcome"] == "committed"
    assert handler.parent is not None and handler.parent.span_id == retry.context.span_id
    assert by_name(spans, "lease.takeover").attributes["statefleet.previous_owner"] == "dead"  # type: ignore[index]
