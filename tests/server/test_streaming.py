"""SSE replies, the /events log with Last-Event-ID resume, fire-and-forget sends, and the WebSocket."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import httpx
import pytest
import websockets

from statefleet.server import StatefleetApp, create_app
from statefleet.store.memory import MemoryStore

from ._support import FAST, make_agent, serve, sse_events

SSE = {"Accept": "text/event-stream"}


async def test_sse_tokens_arrive_before_the_reply(client: httpx.AsyncClient) -> None:
    # Given a handler that emits 3 tokens 50 ms apart
    body = {"text": "hi", "metadata": {"tokens": 3}}
    arrivals: list[tuple[str, dict[str, object], float]] = []
    async with client.stream("POST", "/v1/conversations/c/messages", json=body, headers=SSE) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in sse_events(response):
            arrivals.append((event["event"], json.loads(event["data"]), time.monotonic()))
    # Then the tokens came one by one, before the reply, and the stream ended with done
    assert [name for name, _, _ in arrivals] == ["token", "token", "token", "reply", "done"]
    assert [data["text"] for _, data, _ in arrivals[:3]] == ["t0 ", "t1 ", "t2 "]
    assert arrivals[3][2] - arrivals[0][2] >= 0.1  # the first token did not wait for the reply
    reply = arrivals[3][1]
    assert reply["reply"] == {"text": "echo: hi", "data": {"turn": 1}} and reply["events"] == 4
    assert reply["message_id"] == response.headers["x-message-id"]


async def test_sse_error_after_start_is_an_error_event(client: httpx.AsyncClient) -> None:
    body = {"text": "hi", "metadata": {"tokens": 1, "fail": True}}
    async with client.stream("POST", "/v1/conversations/c/messages", json=body, headers=SSE) as response:
        events = [event async for event in sse_events(response)]
    assert [e["event"] for e in events] == ["token", "error", "done"]
    assert json.loads(events[1]["data"])["error"]["code"] == "turn_failed"


async def test_sse_bad_input_is_a_plain_json_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/conversations/c/messages", json={"text": ""}, headers=SSE)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_message"


async def read_events(client: httpx.AsyncClient, count: int, last_event_id: str | None = None
                      ) -> list[dict[str, str]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict[str, str]] = []
    async with client.stream("GET", "/v1/conversations/c/events", headers=headers) as response:
        assert response.status_code == 200
        async for event in sse_events(response):
            events.append(event)
            if len(events) == count:
                break
    return events


async def test_events_resume_with_last_event_id_gets_each_later_event_exactly_once(
    client: httpx.AsyncClient,
) -> None:
    # Given a follower connected before anything happened
    follower = asyncio.create_task(read_events(client, 3))
    await asyncio.sleep(0.05)
    # When a turn streams 2 tokens and its reply
    await client.post("/v1/conversations/c/messages", json={"text": "one", "metadata": {"tokens": 2}})
    first = await follower
    assert [e["event"] for e in first] == ["token", "token", "reply"]
    # ...and more turns happen while the follower is away
    for text in ("two", "three"):
        await client.post("/v1/conversations/c/messages", json={"text": text, "metadata": {"tokens": 1}})
    # Then reconnecting after the second event gets the rest, exactly once, in order
    resumed = await read_events(client, 5, last_event_id=first[1]["id"])
    assert [e["event"] for e in resumed] == ["reply", "token", "reply", "token", "reply"]
    assert resumed[0]["id"] == first[2]["id"]
    ids = [e["id"] for e in first[:2] + resumed]
    assert len(set(ids)) == len(ids) == 7
    assert [json.loads(e["data"])["text"] for e in resumed if e["event"] == "reply"] == [
        "echo: one", "echo: two", "echo: three"]
    # And resuming from the last one waits for new events only
    tail = asyncio.create_task(read_events(client, 1, last_event_id=resumed[-1]["id"]))
    await asyncio.sleep(0.1)
    assert not tail.done()
    await client.post("/v1/conversations/c/messages", json={"text": "four"})
    (last,) = await tail
    assert json.loads(last["data"])["text"] == "echo: four"


async def test_events_stream_ends_when_the_server_drains(client: httpx.AsyncClient, app: StatefleetApp) -> None:
    async with client.stream("GET", "/v1/conversations/c/events") as response:
        await asyncio.sleep(0.05)
        app.drain()
        rest = [line async for line in response.aiter_lines()]  # ends instead of hanging
    assert all(not line or line.startswith("retry") for line in rest)


async def test_wait_false_answers_202_and_the_reply_shows_on_events(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post("/v1/conversations/c/messages?wait=false",
                                 json={"text": "later", "metadata": {"sleep": 0.3}})
    assert response.status_code == 202 and time.monotonic() - started < 0.3
    accepted = response.json()
    assert accepted["conversation_id"] == "c" and accepted["message_id"]
    # The message is in the store already; its reply appears on the event log.
    (reply,) = await read_events(client, 1)
    assert reply["event"] == "reply"
    data = json.loads(reply["data"])
    assert data["message_id"] == accepted["message_id"] and data["text"] == "echo: later"


def ws_url(client: httpx.AsyncClient, conversation: str = "c") -> str:
    return f"ws://127.0.0.1:{client.base_url.port}/v1/conversations/{conversation}/ws"


async def test_websocket_round_trip_with_streaming(client: httpx.AsyncClient) -> None:
    async with websockets.connect(ws_url(client)) as socket:
        await socket.send(json.dumps({"text": "hi", "metadata": {"tokens": 3}, "idempotency_key": "w1"}))
        frames = [json.loads(await socket.recv()) for _ in range(4)]
        assert [f["type"] for f in frames] == ["token", "token", "token", "reply"]
        assert frames[3]["reply"]["text"] == "echo: hi" and frames[3]["turn"] == 1
        # a second message on the same socket continues the conversation
        await socket.send(json.dumps({"text": "again"}))
        assert json.loads(await socket.recv())["turn"] == 2


@pytest.mark.parametrize(("frame", "code"), [
    ("{not json", "malformed_json"),
    ("[1]", "malformed_json"),
    ('{"metadata": {}}', "invalid_message"),
    ('{"text": 3}', "invalid_message"),
    ('{"text": "a", "metadata": "x"}', "invalid_message"),
    ('{"text": "a", "double_texting": "never"}', "invalid_message"),
    (json.dumps({"text": "a" * 200_000}), "body_too_large"),
])
async def test_websocket_bad_frames_get_an_error_and_the_socket_stays_open(
    client: httpx.AsyncClient, frame: str, code: str,
) -> None:
    async with websockets.connect(ws_url(client), max_size=None) as socket:
        await socket.send(frame)
        error = json.loads(await socket.recv())
        assert error["type"] == "error" and error["error"]["code"] == code
        await socket.send(json.dumps({"text": "still here"}))
        assert json.loads(await socket.recv())["reply"]["text"] == "echo: still here"
    assert (await client.get("/v1/conversations/c")).json()["turns"] == 1


async def test_websocket_with_a_bad_conversation_id_is_closed_with_an_error(client: httpx.AsyncClient) -> None:
    async with websockets.connect(ws_url(client, "bad%20id")) as socket:
        error = json.loads(await socket.recv())
        assert error["error"]["code"] == "invalid_conversation_id"
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()
        assert socket.close_code == 1008


async def test_events_this_instance_appends_wake_its_followers_without_waiting_for_a_poll(
    memory_store: MemoryStore,
) -> None:
    # Given an instance whose /events streams would read the store only once a minute on their own
    slow_polls = dataclasses.replace(FAST, events_poll_interval=60.0, events_poll_max=60.0)
    app = create_app(make_agent(), memory_store, slow_polls)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        follower = asyncio.create_task(read_events(client, 4))  # 3 tokens and the reply
        await asyncio.sleep(0.2)  # the stream is open and has read the (empty) log once
        # When a turn on this instance streams tokens and commits
        response = await client.post("/v1/conversations/c/messages", json={"text": "hi", "metadata": {"tokens": 3}})
        assert response.status_code == 200
        # Then the follower gets every event at once (the test's 10 s timeout is far below a 60 s poll)
        events = await asyncio.wait_for(follower, 10)
        assert [e["event"] for e in events] == ["token", "token", "token", "reply"]
