"""The probes a Kubernetes Deployment points at mean what their names say, on a real ``statefleet serve``: with its
Redis gone, liveness (``/healthz``) stays 200 — restarting the pod would not bring Redis back, and restarting every
pod of the fleet on a Redis blip is the outage — while readiness (``/readyz``) turns 503, so traffic goes elsewhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statefleet.testing import LocalRedisServer, ServeProcess

AGENT = f"{Path(__file__).parents[1] / 'serve' / 'agents.py'}:echo"
#: The path the rendered Deployment's livenessProbe and startupProbe use; readinessProbe uses /readyz.
LIVENESS = "/healthz"
READINESS = "/readyz"


@pytest.fixture
def serve_on_throwaway_redis(tmp_path: Path) -> Iterator[tuple[ServeProcess, LocalRedisServer]]:
    redis = LocalRedisServer()
    serve = ServeProcess(AGENT, redis.url, "--log-level", "info", log=tmp_path / "serve.log")
    try:
        serve.wait_ready()
        yield serve, redis
    finally:
        serve.stop()
        redis.stop()


@pytest.mark.slow
def test_liveness_stays_200_while_readiness_fails_with_the_store_gone(
    serve_on_throwaway_redis: tuple[ServeProcess, LocalRedisServer],
) -> None:
    serve, redis = serve_on_throwaway_redis
    with httpx.Client(base_url=serve.url, timeout=5) as client:
        # Given an instance that is live and ready, and serves a turn
        assert client.get(LIVENESS).status_code == 200
        assert client.get(READINESS).status_code == 200
        assert client.post("/v1/conversations/probe/messages", json={"text": "hi"}).status_code == 200

        # When its Redis dies
        redis.stop()

        # Then readiness fails within a few seconds, and liveness answers 200 at every look meanwhile
        deadline = time.monotonic() + 10
        readiness = client.get(READINESS)
        while readiness.status_code == 200 and time.monotonic() < deadline:
            assert client.get(LIVENESS).status_code == 200
            time.sleep(0.1)
            readiness = client.get(READINESS)
        assert readiness.status_code == 503, serve.log_tail()
        assert readiness.json()["error"]["code"] == "store_unavailable"
        assert "retry-after" in readiness.headers

        # And it stays so: alive (the kubelet keeps the pod), not ready (no traffic), the process still up
        for _ in range(10):
            live = client.get(LIVENESS)
            assert live.status_code == 200 and live.json() == {"status": "ok"}
            assert client.get(READINESS).status_code == 503
            time.sleep(0.2)
        assert serve.proc.poll() is None, serve.log_tail()
