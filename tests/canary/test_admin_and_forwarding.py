"""The admin route of the routing weights, and forwarding between in-process servers of two versions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from server._support import serve
from statefleet import Agent, EngineSettings, Turn
from statefleet.routing import pick_version
from statefleet.server import ServerSettings, create_app


def agent(version: str) -> Agent:
    made = Agent("canary", version=version)

    @made.handler
    async def handle(turn: Turn) -> None:
        turn.reply(f"{version} answers {turn.text}")

    return made


def settings(**overrides: object) -> ServerSettings:
    return ServerSettings(engine=EngineSettings(lease_ttl=0.6, sweep_interval=0.1, fleet_view_interval=0.1),
                          drain_timeout=2.0, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def two_versions(tmp_path) -> AsyncIterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """A v1 and a v2 server on one embedded SQLite store (forwarding needs no Redis)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    v1_app, v2_app = create_app(agent("v1"), url, settings()), create_app(agent("v2"), url, settings())
    async with serve(v2_app) as v2_url:
        v2_app.state.engine.address = v2_url.removeprefix("http://")
        await v2_app.state.engine._upkeep.register()  # type: ignore[union-attr]
        async with serve(v1_app) as v1_url:
            yield v1_url, v2_url


async def test_the_admin_route_reads_and_changes_the_weights_with_an_audit(two_versions: tuple[str, str]) -> None:
    v1, _ = two_versions
    async with httpx.AsyncClient(base_url=v1) as client:
        assert (await client.get("/v1/admin/routing")).json() == {"revision": 0, "weights": {}, "log": []}
        changed = await client.put("/v1/admin/routing", json={"weights": {"v1": 90, "v2": 10}, "reason": "try v2",
                                                              "revision": 0}, headers={"x-statefleet-actor": "ops"})
        assert changed.status_code == 200 and changed.json() == {"revision": 1, "weights": {"v1": 90, "v2": 10}}
        stale = await client.put("/v1/admin/routing", json={"weights": {"v1": 50, "v2": 50}, "revision": 0})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "routing_conflict"
        for body, message in [({"weights": {"v1": 90}}, "sum to 100"), ({}, '"weights" is required'),
                              ({"weights": {"v1": 100}, "reason": 3}, '"reason" must be a string'),
                              ({"weights": {"v1": 100}, "revision": "1"}, '"revision" must be')]:
            refused = await client.put("/v1/admin/routing", json=body)
            assert refused.status_code == 422 and message in refused.json()["error"]["message"], refused.text
        log = (await client.get("/v1/admin/routing")).json()["log"]
        assert [(e["revision"], e["actor"], e["reason"]) for e in log] == [(1, "http ops", "try v2")]


async def test_new_conversations_follow_the_weights_and_are_forwarded_with_their_key(
        two_versions: tuple[str, str]) -> None:
    v1, _ = two_versions
    async with httpx.AsyncClient(timeout=10) as client:
        await client.put(f"{v1}/v1/admin/routing", json={"weights": {"v1": 0, "v2": 100}})
        # v1 applied them at once; v2 reads them within its fleet view interval, and both forward the same way
        answer = await client.post(f"{v1}/v1/conversations/c1/messages", json={"text": "hi"},
                                   headers={"idempotency-key": "k1"})
        assert answer.status_code == 200 and answer.json()["version"] == "v2"
        assert answer.headers["x-statefleet-version"] == "v2" and answer.headers["x-statefleet-forwarded-by"]
        assert "statefleet-version=v2; Path=/v1/conversations/c1" in answer.headers["set-cookie"]
        # A retry with the same key, at either instance, is the same turn
        again = await client.post(f"{v1}/v1/conversations/c1/messages", json={"text": "hi"},
                                  headers={"idempotency-key": "k1"})
        assert again.json()["turn"] == 1 and again.headers["idempotent-replayed"] == "true"
        # wait=false is forwarded too
        queued = await client.post(f"{v1}/v1/conversations/c1/messages?wait=false", json={"text": "later"})
        assert queued.status_code == 202 and queued.headers["x-statefleet-forwarded-by"]


async def test_a_loop_between_instances_ends_at_the_hop_limit(two_versions: tuple[str, str]) -> None:
    v1, _ = two_versions
    async with httpx.AsyncClient(timeout=10) as client:
        await client.put(f"{v1}/v1/admin/routing", json={"weights": {"v1": 0, "v2": 100}})
        # A request that already went through two instances is not passed on a third time
        answer = await client.post(f"{v1}/v1/conversations/c2/messages", json={"text": "hi"},
                                   headers={"x-statefleet-hops": "2"})
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert "forwarded 2 time(s)" in answer.json()["error"]["message"]
        bad = await client.post(f"{v1}/v1/conversations/c2/messages", json={"text": "hi"},
                                headers={"x-statefleet-hops": "many"})
        assert bad.status_code == 400


async def test_a_version_without_instances_answers_503_and_creates_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'state.db'}"
    app = create_app(agent("v1"), url, settings(version_url_template="http://127.0.0.1:9/{version}"))
    async with serve(app) as v1, httpx.AsyncClient(timeout=10) as client:
        await client.put(f"{v1}/v1/admin/routing", json={"weights": {"v1": 50, "v2": 50}})
        conversation = next(f"c{n}" for n in range(100)
                            if pick_version({"v1": 50, "v2": 50}, "default", f"c{n}") == "v2")
        # No v2 in the registry: the URL template is tried (nothing listens there), then 503
        answer = await client.post(f"{v1}/v1/conversations/{conversation}/messages", json={"text": "hi"})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "version_unavailable"
        assert (await client.get(f"{v1}/v1/conversations/{conversation}")).status_code == 404
        metrics = (await client.get(f"{v1}/metrics")).text
        assert ('statefleet_forwarded_messages_total{agent="canary",outcome="unavailable",target="v2",'
                'version="v1"} 1.0') in metrics


def test_a_bad_version_url_template_is_refused() -> None:
    from statefleet.errors import ConfigError

    with pytest.raises(ConfigError, match="with \\{version\\} in it"):
        settings(version_url_template="http://support:8000")

