"""``statefleet status --once`` against a real server; the log filter; /metrics parsed by the official parser."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve.harness import ServeProcess
from server._support import FAST, make_agent, serve
from statefleet.observability.logs import JSONFormatter, TerminalFormatter, TurnContextFilter
from statefleet.server import create_app
from statefleet.status import quantile
from statefleet.store.memory import MemoryStore


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_status_once_shows_the_fleet(any_store_url: str, tmp_path: Path) -> None:
    # Given two instances that have run a few turns
    a = ServeProcess("echo", any_store_url, tmp_path)
    b = ServeProcess("echo", any_store_url, tmp_path)
    try:
        for n in range(6):
            target = (a, b)[n % 2]
            assert httpx.post(f"{target.url}/v1/conversations/s{n}/messages", json={"text": "hi"},
                              timeout=10).status_code == 200
        ids = [i["id"] for i in httpx.get(f"{a.url}/v1/fleet", timeout=10).json()["instances"]]
        # When an operator asks for one snapshot
        out = subprocess.run([sys.executable, "-m", "statefleet", "status", a.url, "--once", "--interval", "0.2"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"})
        # Then every instance, its version, the backlog and the p99 are on the screen
        assert out.returncode == 0, out.stderr
        for instance in ids:
            assert instance in out.stdout
        assert "backlog 0" in out.stdout and "instances 2" in out.stdout
        assert "p99 turn" in out.stdout and "v1" in out.stdout
    finally:
        a.stop()
        b.stop()


def test_status_fails_clearly_when_nothing_listens() -> None:
    out = subprocess.run([sys.executable, "-m", "statefleet", "status", "http://127.0.0.1:9", "--once"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "cannot read" in out.stderr


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.99, buckets) == pytest.approx(0.95)
    assert quantile(0.99, {float("inf"): 0.0}) is None


async def test_metrics_exposition_parses_with_the_official_parser() -> None:
    # Given a server that ran turns, one of which failed, and streamed tokens
    app = create_app(make_agent(), MemoryStore(), FAST)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert (await client.post("/v1/conversations/p1/messages", json={"text": "a"})).status_code == 200
        streamed = await client.post("/v1/conversations/p1/messages", json={"text": "b", "metadata": {"tokens": 2}},
                                     headers={"accept": "text/event-stream"})
        assert streamed.status_code == 200
        failed = await client.post("/v1/conversations/p2/messages", json={"text": "c", "metadata": {"fail": True}})
        assert failed.status_code == 500
        assert (await client.get("/v1/conversations/p1")).status_code == 200
        response = await client.get("/metrics")
    # Then every line is valid exposition format, and names follow the conventions
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name, family in families.items():
        assert name.startswith("statefleet_"), name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert "seconds" in name
    def value(name: str, **labels: str) -> float:
        family = families[name]
        return sum(s.value for s in family.samples
                   if s.name.endswith(("_total", "_count")) and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("statefleet_turns", outcome="committed", version="v1", agent="echo") == 2
    assert value("statefleet_turns", outcome="failed") == 1
    assert value("statefleet_time_to_first_token_seconds") == 1
    assert value("statefleet_turn_duration_seconds", phase="handler") == 3
    # and routes are templated: never a raw conversation id
    routes = {s.labels["route"] for s in families["statefleet_http_requests"].samples}
    assert "/v1/conversations/{id}/messages" in routes and "/v1/conversations/{id}" in routes
    assert not any("p1" in route for route in routes)
    assert value("statefleet_http_requests", route="/v1/conversations/{id}/messages", status="500") == 1


async def test_no_metrics_route_when_metrics_are_off() -> None:
    from statefleet.server import ServerSettings

    app = create_app(make_agent(), MemoryStore(), ServerSettings(engine=FAST.engine, metrics=False))
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.post("/v1/conversations/x/messages", json={"text": "a"})).status_code == 200


async def test_every_log_line_of_a_turn_names_the_turn() -> None:
    # Given the CLI's JSON log handler, with its turn-context filter
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(TurnContextFilter())
    logger = logging.getLogger("tests.agent")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    from statefleet import Agent, Engine, Turn

    agent = Agent("logs", version="v3")

    @agent.handler
    async def handle(turn: Turn) -> None:
        logger.info("looking up order %s", turn.text)
        turn.reply("ok")

    try:
        # When the handler logs while a turn runs
        async with Engine(agent, MemoryStore()) as engine:
            result = await engine.send("conv-9", "A-17")
            logger.info("outside any turn")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    # Then the line carries the conversation, message, turn, version and instance
    assert inside["msg"] == "looking up order A-17"
    assert inside["conversation_id"] == "conv-9" and inside["message_id"] == result.message_id
    assert inside["turn"] == 1 and inside["version"] == "v3" and inside["instance"] == engine.instance_id
    assert "conversation_id" not in outside


def test_terminal_lines_append_the_turn_context() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.conversation_id = "c1"
    record.turn = 4
    line = TerminalFormatter().format(record)
    assert line.endswith("hello [conversation_id=c1 turn=4]")
