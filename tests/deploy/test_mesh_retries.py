"""A mesh or load balancer that retries a POST never runs a second turn: without an Idempotency-Key, a message takes
the request's x-request-id (set once by Envoy/Istio at the edge, kept on every retry) as its key. Against a real
``statefleet serve`` on Redis, with httpx; ``--no-request-id-idempotency`` (``STATEFLEET_REQUEST_ID_IDEMPOTENCY``)
turns it off."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from statefleet.testing import LocalRedisServer, ServeProcess

AGENT = f"{Path(__file__).parents[1] / 'serve' / 'agents.py'}:slow"  # sleeps metadata.sleep s, counts its runs


def start(store: str, logdir: Path, *args: str, env: dict[str, str] | None = None) -> ServeProcess:
    serve = ServeProcess(AGENT, store, "--log-level", "info", *args, log=logdir / f"serve-{uuid.uuid4().hex}.log",
                         env=env)
    try:
        serve.wait_ready()
    except BaseException:
        serve.stop()
        raise
    return serve


@pytest.fixture(scope="module")
def serve_url(redis_server: LocalRedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One instance with the default settings for the module's tests; each test has conversations of its own."""
    serve = start(redis_server.url, tmp_path_factory.mktemp("serve"))
    try:
        yield serve.url
    finally:
        serve.stop()


@pytest.fixture
def client(serve_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_url, timeout=30) as client:
        yield client


@pytest.fixture
def cid() -> str:
    """A conversation id no other test uses."""
    return f"c-{uuid.uuid4().hex}"


def post(client: httpx.Client, conversation: str, text: str, headers: dict[str, str], *, how: str = "json",
         sleep: float = 0.0) -> dict[str, Any]:
    """POST a message the way ``how`` says (json, sse, or wait=false); the reply (or the 202 body) as JSON."""
    url = f"/v1/conversations/{conversation}/messages"
    body = {"text": text, "metadata": {"sleep": sleep}}
    if how == "sse":
        with client.stream("POST", url, json=body, headers={**headers, "accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            frames = [frame for frame in response.read().decode().split("\n\n") if frame]
        replies = [frame for frame in frames if frame.startswith("event: reply\n")]
        assert len(replies) == 1, frames
        data: dict[str, Any] = json.loads(replies[0].split("data: ", 1)[1])
        data["replayed"] = None  # SSE answers carry no idempotent-replayed header
        return data
    response = client.post(url + ("?wait=false" if how == "wait=false" else ""), json=body, headers=headers)
    assert response.status_code == (202 if how == "wait=false" else 200), response.text
    result: dict[str, Any] = response.json()
    result["replayed"] = response.headers.get("idempotent-replayed") == "true"
    return result


def turns_of(client: httpx.Client, conversation: str) -> int:
    response = client.get(f"/v1/conversations/{conversation}")
    assert response.status_code == 200
    return int(response.json()["turns"])


@pytest.mark.parametrize("retry_as", ["json", "sse", "wait=false"])
def test_a_post_replayed_with_its_x_request_id_runs_one_turn(client: httpx.Client, cid: str, retry_as: str) -> None:
    # Given a message posted with only the x-request-id a mesh sets at its edge
    first = post(client, cid, "hello", {"x-request-id": "9f3c2a4e-0b1d-4c7e-9a55-2f1e8d6b7c01"})
    assert first["turn"] == 1 and not first["replayed"]

    # When the mesh replays the same request (same body, same x-request-id) — as JSON, SSE or fire-and-forget
    second = post(client, cid, "hello", {"x-request-id": "9f3c2a4e-0b1d-4c7e-9a55-2f1e8d6b7c01"}, how=retry_as)

    # Then the retry gets the first attempt's result, and the conversation has one turn
    assert second["message_id"] == first["message_id"]
    if retry_as != "wait=false":
        assert (second["turn"], second["reply"]) == (first["turn"], first["reply"])
    if retry_as == "json":
        assert second["replayed"]
    assert turns_of(client, cid) == 1


def test_a_retry_while_the_first_attempt_still_runs_waits_for_it(client: httpx.Client, cid: str) -> None:
    # Given a turn that takes a second, and a mesh whose per-try timeout gave up on it and retried
    headers = {"x-request-id": "edge-request-1"}
    results: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: results.append(post(client, cid, "slow one", headers, sleep=1.0)))
    first.start()
    try:
        # When the retry arrives while the first attempt still runs
        while client.get(f"/v1/conversations/{cid}").status_code == 404:
            assert first.is_alive()
            time.sleep(0.01)
        assert not results  # the first attempt has not been answered yet
        retry = post(client, cid, "slow one", headers, sleep=1.0)
    finally:
        first.join()

    # Then both answers are the one turn's, and the handler ran once
    assert retry["message_id"] == results[0]["message_id"] and retry["reply"] == results[0]["reply"]
    conversation = client.get(f"/v1/conversations/{cid}").json()
    assert conversation["turns"] == 1 and conversation["state"] == {"runs": 1}


def test_different_x_request_ids_run_two_turns(client: httpx.Client, cid: str) -> None:
    first = post(client, cid, "hello", {"x-request-id": "edge-a"})
    second = post(client, cid, "hello", {"x-request-id": "edge-b"})
    assert second["message_id"] != first["message_id"] and not second["replayed"]
    assert turns_of(client, cid) == 2


def test_one_x_request_id_is_scoped_to_its_conversation(client: httpx.Client, cid: str) -> None:
    post(client, f"{cid}-a", "hello", {"x-request-id": "edge-shared"})
    other = post(client, f"{cid}-b", "hello", {"x-request-id": "edge-shared"})
    assert other["turn"] == 1 and not other["replayed"]
    assert turns_of(client, f"{cid}-a") == 1 and turns_of(client, f"{cid}-b") == 1


def test_an_idempotency_key_wins_over_the_x_request_id(client: httpx.Client, cid: str) -> None:
    # Given a message sent with both headers
    first = post(client, cid, "hello", {"idempotency-key": "k1", "x-request-id": "edge-1"})
    # When the client's own key differs under the same x-request-id, it is a new message
    second = post(client, cid, "hello", {"idempotency-key": "k2", "x-request-id": "edge-1"})
    assert second["message_id"] != first["message_id"] and not second["replayed"]
    # And when the client's key repeats under a new x-request-id, it is the same message
    third = post(client, cid, "hello", {"idempotency-key": "k1", "x-request-id": "edge-2"})
    assert third["message_id"] == first["message_id"] and third["replayed"]
    assert turns_of(client, cid) == 2


def test_an_x_request_id_reused_for_another_message_is_refused_like_a_key(client: httpx.Client, cid: str) -> None:
    post(client, cid, "hello", {"x-request-id": "edge-reused"})
    response = client.post(f"/v1/conversations/{cid}/messages", json={"text": "something else"},
                           headers={"x-request-id": "edge-reused"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused" and "x-request-id:edge-reused" in error["message"]
    assert turns_of(client, cid) == 1


def test_an_x_request_id_that_cannot_be_a_key_is_ignored(client: httpx.Client, cid: str) -> None:
    # 255 characters with the key's prefix would be too long; the message is served, without idempotency
    headers = {"x-request-id": "r" * 250}
    first = post(client, cid, "hello", headers)
    second = post(client, cid, "hello", headers)
    assert second["message_id"] != first["message_id"]
    assert turns_of(client, cid) == 2


@pytest.mark.parametrize("switch", ["flag", "env"])
def test_with_request_id_idempotency_off_each_post_runs_a_turn(
    redis_server: LocalRedisServer, tmp_path: Path, cid: str, switch: str
) -> None:
    # Not redis_url: flushing would look like a store reset to the module's instance on the same server
    args, env = (("--no-request-id-idempotency",), None) if switch == "flag" else \
        ((), {"STATEFLEET_REQUEST_ID_IDEMPOTENCY": "false"})
    serve = start(redis_server.url, tmp_path, *args, env=env)
    try:
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            headers = {"x-request-id": "edge-1"}
            first = post(client, cid, "hello", headers)
            second = post(client, cid, "hello", headers)
            assert second["message_id"] != first["message_id"] and not second["replayed"]
            assert turns_of(client, cid) == 2
            # An Idempotency-Key still works as ever
            keyed = post(client, cid, "again", {"idempotency-key": "k1", **headers})
            assert post(client, cid, "again", {"idempotency-key": "k1", **headers})["message_id"] == \
                keyed["message_id"]
            assert turns_of(client, cid) == 3
    finally:
        serve.stop()
