"""The JSON API against a real uvicorn server: round trips, continuity, probes, and every error case."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from statefleet.server import StatefleetApp, create_app
from statefleet.store import open_store
from statefleet.store.base import ConversationKey
from statefleet.store.memory import MemoryStore

from ._support import FAST, make_agent, serve


async def test_json_round_trip(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/conversations/alice123/messages", json={"text": "hello"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["conversation_id"] == "alice123" and body["turn"] == 1 and body["version"] == "v1"
    assert body["reply"] == {"text": "echo: hello", "data": {"turn": 1}}
    assert body["events"] == 1 and isinstance(body["message_id"], str)

    conversation = (await client.get("/v1/conversations/alice123")).json()
    assert conversation["turns"] == 1 and conversation["pending"] == 0 and conversation["version"] == "v1"
    assert [(u["role"], u["text"]) for u in conversation["history"]] == [("user", "hello"), ("agent", "echo: hello")]
    assert conversation["state"] == {"count": 1, "seen": 0}


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
async def test_continuity_over_20_turns_on_every_backend(backend: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'state.db'}"}.get(backend)
    if url is None:
        url = request.getfixturevalue("redis_url")
    store = await open_store(url)
    try:
        async with serve(create_app(make_agent(), store, FAST)) as base, httpx.AsyncClient(base_url=base) as http:
            for i in range(20):
                response = await http.post("/v1/conversations/c-1/messages", json={"text": f"m{i}"})
                assert response.status_code == 200, response.text
                assert response.json()["turn"] == i + 1
            conversation = (await http.get("/v1/conversations/c-1")).json()
    finally:
        await store.close()
    assert conversation["turns"] == 20
    assert conversation["state"] == {"count": 20, "seen": 38}  # every turn saw all turns before it
    assert [u["text"] for u in conversation["history"]][-2:] == ["m19", "echo: m19"]


async def test_tenants_are_separate(client: httpx.AsyncClient) -> None:
    await client.post("/v1/conversations/c/messages", json={"text": "a"}, headers={"X-Tenant": "acme"})
    assert (await client.get("/v1/conversations/c", headers={"X-Tenant": "acme"})).status_code == 200
    assert (await client.get("/v1/conversations/c")).status_code == 404


async def test_idempotency_key_retry_gets_the_original_result(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/conversations/c/messages", json={"text": "a"}, headers={"Idempotency-Key": "k1"})
    again = await client.post("/v1/conversations/c/messages", json={"text": "a"}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert (await client.get("/v1/conversations/c")).json()["turns"] == 1
    reused = await client.post("/v1/conversations/c/messages", json={"text": "b"}, headers={"Idempotency-Key": "k1"})
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"


async def test_delete(client: httpx.AsyncClient) -> None:
    await client.post("/v1/conversations/c/messages", json={"text": "a"})
    response = await client.delete("/v1/conversations/c")
    assert response.status_code == 204 and response.content == b""
    assert (await client.get("/v1/conversations/c")).status_code == 404
    missing = await client.delete("/v1/conversations/c")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_probes_and_fleet(client: httpx.AsyncClient, app: StatefleetApp) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    fleet = (await client.get("/v1/fleet")).json()
    instances = fleet["instances"]
    assert len(instances) == 1 and fleet["backlog"] == 0
    me = instances[0]
    assert me["id"] == app.engine.instance_id and me["version"] == "v1" and me["in_flight"] == 0
    assert me["address"] == f"127.0.0.1:{client.base_url.port}" and me["started_at"] > 0


async def test_readyz_fails_while_draining_and_new_messages_get_503(client: httpx.AsyncClient,
                                                                   app: StatefleetApp) -> None:
    # Given a serving instance, when it begins to drain
    app.drain()
    # Then it is alive but not ready, and refuses new work with Retry-After
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
    assert ready.json()["error"]["code"] == "draining"
    post = await client.post("/v1/conversations/c/messages", json={"text": "a"})
    assert post.status_code == 503 and post.headers["retry-after"] == "1"
    assert post.json()["error"]["code"] == "draining"


async def test_readyz_fails_when_the_store_is_down(client: httpx.AsyncClient, memory_store: MemoryStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async def down() -> None:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(memory_store, "ping", down)
    response = await client.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable"
    assert response.headers["retry-after"] == "1"


async def test_busy_conversation_with_policy_reject_is_409(client: httpx.AsyncClient) -> None:
    slow = asyncio.create_task(
        client.post("/v1/conversations/c/messages", json={"text": "a", "metadata": {"sleep": 0.5}}))
    await asyncio.sleep(0.15)
    busy = await client.post("/v1/conversations/c/messages", json={"text": "b", "double_texting": "reject"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "conversation_busy"
    assert (await slow).status_code == 200


async def test_handler_failure_is_a_json_500(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/conversations/c/messages", json={"text": "a", "metadata": {"fail": True}})
    assert response.status_code == 500 and response.json()["error"]["code"] == "turn_failed"


BAD_REQUESTS = [
    # (description, method, path, kwargs, status, code)
    ("malformed JSON", "POST", "/v1/conversations/c/messages", {"content": b"{nope"}, 400, "malformed_json"),
    ("empty body", "POST", "/v1/conversations/c/messages", {"content": b""}, 400, "malformed_json"),
    ("body is a list", "POST", "/v1/conversations/c/messages", {"json": ["hi"]}, 400, "malformed_json"),
    ("NaN", "POST", "/v1/conversations/c/messages", {"content": b'{"text": NaN}'}, 400, "malformed_json"),
    ("bad UTF-8", "POST", "/v1/conversations/c/messages", {"content": b'{"text": "\xff"}'}, 400, "malformed_json"),
    ("deep nesting", "POST", "/v1/conversations/c/messages", {"content": b"[" * 100_000}, 400, "malformed_json"),
    ("text missing", "POST", "/v1/conversations/c/messages", {"json": {"metadata": {}}}, 422, "invalid_message"),
    ("text not a string", "POST", "/v1/conversations/c/messages", {"json": {"text": 5}}, 422, "invalid_message"),
    ("text blank", "POST", "/v1/conversations/c/messages", {"json": {"text": "  "}}, 422, "invalid_message"),
    ("metadata a list", "POST", "/v1/conversations/c/messages", {"json": {"text": "a", "metadata": [1]}}, 422,
     "invalid_message"),
    ("bad policy", "POST", "/v1/conversations/c/messages", {"json": {"text": "a", "double_texting": "x"}}, 422,
     "invalid_message"),
    ("bad idempotency key", "POST", "/v1/conversations/c/messages",
     {"json": {"text": "a"}, "headers": {"Idempotency-Key": "has space"}}, 422, "invalid_message"),
    ("message too large", "POST", "/v1/conversations/c/messages", {"json": {"text": "a" * 70_000}}, 413,
     "message_too_large"),
    ("body too large", "POST", "/v1/conversations/c/messages", {"content": b"x" * (1024 * 1024)}, 413,
     "body_too_large"),
    ("not JSON", "POST", "/v1/conversations/c/messages",
     {"content": b"text=hi", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415,
     "unsupported_media_type"),
    ("bad wait", "POST", "/v1/conversations/c/messages?wait=maybe", {"json": {"text": "a"}}, 400, "bad_request"),
    ("bad conversation id", "POST", "/v1/conversations/bad%20id/messages", {"json": {"text": "a"}}, 400,
     "invalid_conversation_id"),
    ("id too long", "GET", "/v1/conversations/" + "x" * 129, {}, 400, "invalid_conversation_id"),
    ("bad tenant", "GET", "/v1/conversations/c", {"headers": {"X-Tenant": "a/b"}}, 400, "invalid_conversation_id"),
    ("unknown conversation", "GET", "/v1/conversations/c", {}, 404, "not_found"),
    ("unknown route", "GET", "/v2/nothing", {}, 404, "not_found"),
    ("trailing slash", "GET", "/v1/conversations/c/", {}, 404, "not_found"),
    ("deeper path", "GET", "/v1/conversations/c/messages/x", {}, 404, "not_found"),
    ("wrong method", "GET", "/v1/conversations/c/messages", {}, 405, "method_not_allowed"),
    ("wrong method on probe", "POST", "/healthz", {}, 405, "method_not_allowed"),
    ("plain GET of the WebSocket", "GET", "/v1/conversations/c/ws", {}, 426, "upgrade_required"),
    ("bad Last-Event-ID", "GET", "/v1/conversations/c/events", {"headers": {"Last-Event-ID": "abc"}}, 400,
     "invalid_event_id"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"),
                         [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS])
async def test_bad_requests_get_a_json_error_and_change_nothing(
    client: httpx.AsyncClient, memory_store: MemoryStore, method: str, path: str, kwargs: dict[str, object],
    status: int, code: str,
) -> None:
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.content)
    assert body["error"]["code"] == code and body["error"]["message"]
    if status == 405:
        assert response.headers["allow"]
    assert await memory_store.load(ConversationKey("default", "c")) is None
    assert await memory_store.read_events(ConversationKey("default", "c"), after=None, limit=10) == []
