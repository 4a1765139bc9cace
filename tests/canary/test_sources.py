"""Where the analysis reads its counts: the fleet registry of a real SQLite store, and a Prometheus HTTP API
served by a small real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from statefleet.canary import MetricsQueryFailed, PrometheusSource, RegistrySource
from statefleet.engine.turn_counters import TurnCounters
from statefleet.observability.metrics import Metrics
from statefleet.store import Store, open_store

# -- the fleet registry ------------------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    await store.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def turns(counters: TurnCounters, n: int, *, failed: int = 0) -> TurnCounters:
    for i in range(n):
        counters.record_turn(i >= failed, 0.2)
    return counters


async def register(store: Store, instance: str, version: str, started_at: float, counters: TurnCounters) -> None:
    info = {"id": instance, "version": version, "started_at": started_at, "counters": counters.snapshot()}
    await store.register_instance(instance, info, ttl=60)


async def test_registry_counts_each_versions_turns_since_the_previous_read(sqlite_store: Store) -> None:
    # Given two instances that served turns before the canary started
    clock = Clock(1000.0)
    a, b = turns(TurnCounters(), 10), turns(TurnCounters(), 5)
    await register(sqlite_store, "a", "v1", 100.0, a)
    await register(sqlite_store, "b", "v2", 100.0, b)
    source = RegistrySource(sqlite_store, clock=clock)
    # When the source takes its baseline, then reads after an interval of turns
    first = await source.interval(["v1", "v2"])
    await register(sqlite_store, "a", "v1", 100.0, turns(a, 50, failed=1))
    await register(sqlite_store, "b", "v2", 100.0, turns(b, 30, failed=3))
    clock.now = 1060.0
    second = await source.interval(["v1", "v2"])
    # Then the baseline is empty, and the interval holds only the turns since
    assert first["v1"].turns == 0 and first["v2"].turns == 0
    assert (second["v1"].turns, second["v1"].errors) == (50, 1)
    assert (second["v2"].turns, second["v2"].errors) == (30, 3)
    assert sum(second["v2"].turn_buckets) == 30 and second["v2"].turn_quantile(0.5) is not None


async def test_registry_follows_restarts_arrivals_and_departures(sqlite_store: Store) -> None:
    clock = Clock(1000.0)
    a, b = turns(TurnCounters(), 10), turns(TurnCounters(), 5)
    await register(sqlite_store, "a", "v1", 100.0, a)
    await register(sqlite_store, "b", "v2", 100.0, b)
    source = RegistrySource(sqlite_store, clock=clock)
    await source.interval(["v1", "v2"])

    # Given, within one interval: "b" restarts under the same id (its counters start again from zero),
    # "c" starts, "d" shows up for the first time but started long before the previous read, "a" goes away,
    # and two entries the canary has no business with: another version, and a release without counters
    await register(sqlite_store, "b", "v2", 1030.0, turns(TurnCounters(), 10, failed=1))
    c = turns(TurnCounters(), 20)
    await register(sqlite_store, "c", "v2", 1040.0, c)
    d = turns(TurnCounters(), 40, failed=40)
    await register(sqlite_store, "d", "v2", 500.0, d)
    await register(sqlite_store, "e", "v3", 1040.0, turns(TurnCounters(), 7))
    await sqlite_store.register_instance("old", {"id": "old", "version": "v2", "started_at": 1040.0}, ttl=60)
    await sqlite_store.deregister_instance("a")
    clock.now = 1060.0
    counts = await source.interval(["v1", "v2"])

    # Then the restarted and the new instance count from zero, the late one is only a baseline, the gone one
    # adds nothing, and other versions are not answered
    assert set(counts) == {"v1", "v2"}
    assert counts["v1"].turns == 0
    assert (counts["v2"].turns, counts["v2"].errors) == (30, 1)

    # And at the next read, every instance still there counts its difference
    await register(sqlite_store, "c", "v2", 1040.0, turns(c, 5))
    await register(sqlite_store, "d", "v2", 500.0, turns(d, 5, failed=5))
    clock.now = 1120.0
    counts = await source.interval(["v1", "v2"])
    assert (counts["v2"].turns, counts["v2"].errors) == (10, 5)


# -- Prometheus -------------------------------------------------------------------------------------------------


def selector(query: str) -> tuple[str, dict[str, tuple[str, str]], float]:
    """The series name, the label matchers (name → (op, value)) and the range in seconds of a source's query."""
    expr: Any = promql_parser.parse(query)
    matrix = expr.expr.args[0]
    vector = matrix.vector_selector
    matchers = {m.name: (str(m.op).rsplit(".", 1)[-1], m.value) for m in vector.matchers.matchers}
    return vector.name, matchers, matrix.range.total_seconds()


def test_queries_parse_and_select_the_metrics_instances_export() -> None:
    # Given the metric families a real instance exports (names and labels)
    metrics = Metrics("support", "v2")
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    # When the source builds its queries
    queries = PrometheusSource("http://prometheus:9090", agent="support").queries("v2", 60)
    # Then each parses, selects an exported series by labels it has, over the interval
    assert set(queries) == {"turns", "errors", "turn_buckets", "ttft_buckets"}
    for query in queries.values():
        name, matchers, seconds = selector(query)
        assert name in exported, name
        assert set(matchers) <= exported[name], (query, exported[name])
        assert matchers["version"] == ("Equal", "v2") and matchers["agent"] == ("Equal", "support")
        assert seconds == 60
    assert selector(queries["turns"])[1]["outcome"][0] == "Re"
    assert selector(queries["errors"])[1]["outcome"] == ("Equal", "failed")
    assert selector(queries["turn_buckets"])[1]["phase"] == ("Equal", "end_to_end")
    by: Any = promql_parser.parse(queries["turn_buckets"])
    assert by.modifier.labels == ["le"]


def test_queries_escape_label_values_and_omit_the_agent_when_not_given() -> None:
    query = PrometheusSource("http://p").queries('v"2\\', 1.5)["turns"]
    _, matchers, seconds = selector(query)
    assert matchers["version"] == ("Equal", 'v"2\\') and "agent" not in matchers and seconds == 1.5


@dataclass
class FakePrometheus:
    """A Prometheus HTTP API on 127.0.0.1 answering the queries from a table of per-version results."""

    #: (version, query name) → the result list; a query name the table lacks answers an empty vector.
    results: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    respond: Callable[[str], web.Response] | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hang: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        query = request.query["query"]
        self.queries.append(query)
        if self.hang:
            await self.release.wait()
        if self.respond is not None:
            return self.respond(query)
        name, matchers, _ = selector(query)
        kind = {"statefleet_turn_duration_seconds_bucket": "turn_buckets",
                "statefleet_time_to_first_token_seconds_bucket": "ttft_buckets"}.get(name)
        if kind is None:
            kind = "errors" if matchers["outcome"] == ("Equal", "failed") else "turns"
        result = self.results.get((matchers["version"][1], kind), [])
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})


@pytest.fixture
async def prometheus() -> AsyncIterator[tuple[FakePrometheus, str]]:
    fake = FakePrometheus()
    app = web.Application()
    app.router.add_get("/api/v1/query", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}/"
    fake.release.set()
    await runner.cleanup()


def scalar(value: str) -> list[dict[str, Any]]:
    return [{"metric": {}, "value": [1_700_000_000.0, value]}]


def buckets(**cumulative: str) -> list[dict[str, Any]]:
    return [{"metric": {"le": le.replace("_", ".").replace("inf", "+Inf")}, "value": [1_700_000_000.0, v]}
            for le, v in cumulative.items()]


async def test_prometheus_answers_are_decoded_into_interval_counts(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.results = {
        ("v1", "turns"): scalar("1000.4"), ("v1", "errors"): scalar("2.2"),
        ("v1", "turn_buckets"): buckets(**{"0_1": "500.2", "0_25": "900.3", "0_5": "990", "1": "1000.4",
                                           "inf": "1000.4"}),
        ("v2", "turns"): scalar("99.6"), ("v2", "errors"): scalar("NaN"),
        # increase() extrapolates: a rounded bucket may come out below the one before; counts stay monotonic
        ("v2", "turn_buckets"): buckets(**{"0_1": "10.6", "0_25": "10.4", "0_5": "99.6", "inf": "99.6"}),
        ("v2", "ttft_buckets"): buckets(**{"0_05": "80", "0_1": "95", "inf": "100"}),
    }
    clock = Clock(0.0)
    source = PrometheusSource(url, timeout=2.0, clock=clock)
    # The first call is the baseline: nothing to ask yet
    first = await source.interval(["v1", "v2"])
    assert fake.queries == [] and first["v1"].turns == 0
    clock.now = 60.0
    counts = await source.interval(["v1", "v2"])

    assert len(fake.queries) == 8 and all("[60s]" in q for q in fake.queries)
    v1, v2 = counts["v1"], counts["v2"]
    assert (v1.turns, v1.errors) == (1000, 2)
    assert v1.turn_bounds == (0.1, 0.25, 0.5, 1.0) and v1.turn_buckets == (500, 400, 90, 10, 0)
    assert v1.turn_quantile(0.99) == pytest.approx(0.5)  # rank 990: the top of the (0.25, 0.5] bucket
    assert v1.ttft_count == 0 and v1.ttft_quantile(0.99) is None
    assert (v2.turns, v2.errors) == (100, 0)  # NaN (no samples in the window) counts as 0
    assert v2.turn_buckets == (11, 0, 89, 0)
    assert v2.ttft_count == 100 and v2.ttft_bounds == (0.05, 0.1) and v2.ttft_buckets == (80, 15, 5)
    assert v2.ttft_quantile(0.5) == pytest.approx(0.05 * 50 / 80)
    # The window is the time since the previous call
    clock.now = 90.5
    await source.interval(["v1"])
    assert all("[30500ms]" in q for q in fake.queries[8:])


async def test_prometheus_errors_are_reported_clearly(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    clock = Clock(0.0)
    source = PrometheusSource(url, timeout=2.0, clock=clock)
    await source.interval(["v2"])

    clock.now += 60
    fake.respond = lambda q: web.json_response(
        {"status": "error", "errorType": "bad_data", "error": "1:1: parse error"}, status=400)
    with pytest.raises(MetricsQueryFailed, match=r"refused 'sum\(increase.*\(HTTP 400\): 1:1: parse error"):
        await source.interval(["v2"])

    clock.now += 60
    fake.respond = lambda q: web.Response(text="<html>Grafana</html>", content_type="text/html")
    with pytest.raises(MetricsQueryFailed, match=r"answered HTTP 200 with no JSON.*base URL"):
        await source.interval(["v2"])

    clock.now += 60
    fake.respond = lambda q: web.json_response({"status": "success", "data": {"resultType": "matrix", "result": []}})
    with pytest.raises(MetricsQueryFailed, match="with no instant vector"):
        await source.interval(["v2"])


async def test_prometheus_not_answering_is_reported_within_the_timeout(
        prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.hang = True
    clock = Clock(0.0)
    source = PrometheusSource(url, timeout=0.2, clock=clock)
    await source.interval(["v2"])
    clock.now = 60.0
    with pytest.raises(MetricsQueryFailed, match=r"did not answer.*Timeout"):
        await asyncio.wait_for(source.interval(["v2"]), 5)


async def test_prometheus_unreachable_is_reported() -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clock = Clock(0.0)
    source = PrometheusSource(f"http://127.0.0.1:{port}", timeout=2.0, clock=clock)
    await source.interval(["v2"])
    clock.now = 60.0
    with pytest.raises(MetricsQueryFailed, match=f"Prometheus at http://127.0.0.1:{port} did not answer"):
        await source.interval(["v2"])
