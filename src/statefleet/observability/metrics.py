"""Prometheus metrics of one server process, exported at ``/metrics``.

``Metrics`` holds every metric; ``MetricsObserver`` feeds the turn metrics from the engine's hooks;
``MeteredStore`` (``store_metrics.py``) times store operations. Names and labels are listed in
docs/observability.md. Every metric about turns carries ``agent`` and ``version``: an instance serves one
version, so canary analysis and alerts compare versions by these labels.

With several worker processes (``statefleet serve --workers N``) the runner points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start; each worker then writes its
values to memory-mapped files there, and whichever worker answers a scrape adds up every worker's files
(gauges of live workers only: ``livesum``). Fleet-wide values read from the store (inbox backlog, live
instances) are not per-process: a custom collector in the answering process exports them once, never summed.

The hot path does not touch prometheus_client: the per-turn counts and observations go to plain Python
numbers (``FastCounter``, ``FastHistogram``: no lock, no memory-mapped write), which ``Metrics.flush`` adds
to the real metrics every second and before every scrape. A scrape thus sees its own process exactly and
other workers as of their last flush (at most a second old); a worker killed with SIGKILL loses at most its
last second of counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..store.base import ConversationKey, Store
from .hooks import MessageSpan

if TYPE_CHECKING:
    from .backends import BackendCall

#: The environment variable that switches prometheus_client to multi-process mode (read at its import).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: ``Content-Type`` of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
BACKEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

#: ``statefleet_turns_total`` outcomes. A turn that committed on a later attempt (its first owner died or
#: handed it back) counts as ``retried-after-takeover`` *instead of* ``committed``: the outcomes partition
#: the turns, so sum(outcome) is the throughput and committed + retried-after-takeover the commits.
OUTCOMES = ("committed", "failed", "rejected", "interrupted", "retried-after-takeover")
ACCEPT_KINDS = ("leased", "queued", "duplicate", "rejected", "wrong_version")
ABANDON_REASONS = ("lost", "fenced", "drain")
STREAM_KINDS = ("sse", "websocket")
STORE_OPERATIONS = (
    "accept", "commit", "renew", "release", "reclaim", "expired_leases", "receipt", "load", "delete",
    "append_events", "read_events", "backlog", "register_instance", "deregister_instance", "instances", "ping",
)


class FastCounter:
    """A counter child's increments, kept in a plain int until ``flush``."""

    __slots__ = ("_child", "_flushed", "value")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.value = 0
        self._flushed = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def flush(self) -> None:
        delta = self.value - self._flushed
        if delta:
            self._child.inc(delta)
            self._flushed += delta


class FastHistogram:
    """A histogram child's observations, kept as plain bucket counts until ``flush``."""

    __slots__ = ("_bounds", "_child", "_counts", "_flushed", "_flushed_sum", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        # prometheus_client keeps one value per bucket (not cumulative) and the sum: ``_buckets``, ``_sum``.
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._flushed = [0] * len(self._bounds)
        self._sum = 0.0
        self._flushed_sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts, flushed = self._counts, self._flushed
        changed = False
        for i, count in enumerate(counts):
            if count != flushed[i]:
                self._child._buckets[i].inc(count - flushed[i])
                flushed[i] = count
                changed = True
        if changed:
            total = self._sum
            self._child._sum.inc(total - self._flushed_sum)
            self._flushed_sum = total


def multiprocess_enabled() -> bool:
    """True when prometheus_client writes values to files shared by several processes."""
    return bool(os.environ.get(MULTIPROC_ENV))


class EngineGauges(Protocol):
    """What the sampler reads from an engine (``statefleet.Engine`` has it)."""

    @property
    def in_flight(self) -> int: ...

    @property
    def waiting_callers(self) -> int: ...


class FleetCollector(Collector):
    """Fleet-wide gauges read from the store (cheap counters, never a scan), cached for ``max_age`` seconds."""

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self._read_at = -1e9
        self._backlog: int | None = None
        self._instances: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def refresh(self, store: Store) -> None:
        """Read the store unless the cached values are fresher than ``max_age``."""
        if time.monotonic() - self._read_at < self.max_age:
            return
        async with self._lock:
            if time.monotonic() - self._read_at < self.max_age:
                return
            try:
                self._backlog = await store.backlog()
                counts: dict[str, int] = {}
                for info in await store.instances():
                    version = str(info.get("version", ""))
                    counts[version] = counts.get(version, 0) + 1
                self._instances = counts
            except Exception:  # a scrape must not fail with the store; the values go stale, then missing
                self._backlog = None
                self._instances = {}
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        if self._backlog is not None:
            backlog = GaugeMetricFamily(
                "statefleet_inbox_backlog",
                "Messages accepted fleet-wide and not yet committed (the same value from every instance: use max).",
            )
            backlog.add_metric([], float(self._backlog))
            yield backlog
        instances = GaugeMetricFamily(
            "statefleet_fleet_instances", "Live instances in the fleet registry, by version.", labels=["version"]
        )
        for version, count in sorted(self._instances.items()):
            instances.add_metric([version], float(count))
        yield instances


class Metrics:
    """Every metric one server process exports. Build one per process (per app in tests)."""

    def __init__(self, agent: str, version: str) -> None:
        self.multiprocess = multiprocess_enabled()
        #: Single-process mode: the registry /metrics renders. Multi-process: only the fleet collector.
        self.registry = CollectorRegistry(auto_describe=True)
        self.fleet = FleetCollector()
        self.registry.register(self.fleet)
        reg = None if self.multiprocess else self.registry
        av = ("agent", "version")
        self._av = (agent, version)
        self.turns = Counter("statefleet_turns", "Turns by final outcome on this instance.", [*av, "outcome"],
                             registry=reg)
        self.accepted = Counter("statefleet_messages_accepted", "Answers of the store to messages sent here.",
                                [*av, "kind"], registry=reg)
        self.turn_seconds = Histogram(
            "statefleet_turn_duration_seconds",
            "Turn latency: phase=handler is the agent's handler; phase=end_to_end runs from acceptance to commit.",
            [*av, "phase"], buckets=TURN_BUCKETS, registry=reg)
        self.ttft = Histogram("statefleet_time_to_first_token_seconds",
                              "From a message's acceptance to the first token its handler emitted.", av,
                              buckets=TTFT_BUCKETS, registry=reg)
        self.in_flight = Gauge("statefleet_turns_in_flight", "Turns running on this instance now.", av,
                               multiprocess_mode="livesum", registry=reg)
        self.waiting = Gauge("statefleet_callers_waiting", "Requests waiting for their reply on this instance.",
                             av, multiprocess_mode="livesum", registry=reg)
        self.streams = Gauge("statefleet_open_streams", "Open SSE and WebSocket streams.", [*av, "kind"],
                             multiprocess_mode="livesum", registry=reg)
        self.takeovers = Counter("statefleet_lease_takeovers",
                                 "Conversations this instance took over from an instance that stopped renewing.",
                                 av, registry=reg)
        self.fencing = Counter("statefleet_fencing_rejections",
                               "Turns whose lease token went stale (commit refused, or renewal found it lost).",
                               av, registry=reg)
        self.abandoned = Counter("statefleet_turns_abandoned",
                                 "Started turns that will commit elsewhere: lost, fenced or drain.",
                                 [*av, "reason"], registry=reg)
        self.store_seconds = Histogram("statefleet_store_operation_duration_seconds",
                                       "Latency of store operations.", ["operation"], buckets=STORE_BUCKETS,
                                       registry=reg)
        self.store_errors = Counter("statefleet_store_operation_errors", "Store operations that raised.",
                                    ["operation"], registry=reg)
        self.store_resets = Counter("statefleet_store_resets",
                                    "Times this instance saw the store's epoch change: the store lost its data.",
                                    av, registry=reg)
        self.http_requests = Counter("statefleet_http_requests", "HTTP requests by templated route and status.",
                                     ["route", "method", "status"], registry=reg)
        self.http_seconds = Histogram("statefleet_http_request_duration_seconds",
                                      "HTTP request latency (until the response ended) by templated route.",
                                      ["route", "method"], buckets=HTTP_BUCKETS, registry=reg)
        self.backend_calls = Counter("statefleet_backend_calls", "Calls handlers made to LLMs and tools.",
                                     [*av, "backend", "outcome"], registry=reg)
        self.backend_seconds = Histogram("statefleet_backend_call_duration_seconds",
                                         "Latency of calls handlers made to LLMs and tools.", [*av, "backend"],
                                         buckets=BACKEND_BUCKETS, registry=reg)
        self.forwards = Counter("statefleet_forwarded_messages",
                                "Messages of another version's conversations passed on (target: that version; "
                                "outcome: forwarded, unavailable, unknown).", [*av, "target", "outcome"],
                                registry=reg)
        info = Gauge("statefleet_build_info", "The agent and version this instance serves.",
                     [*av, "statefleet"], multiprocess_mode="livemax", registry=reg)
        from .._version import __version__

        info.labels(agent, version, __version__).set(1)
        # Children bound once: the hot path does no label lookups, and writes plain numbers (see the top).
        self._fast: list[FastCounter | FastHistogram] = []
        self.outcome = {o: self._counter(self.turns.labels(agent, version, o)) for o in OUTCOMES}
        self.accept_kind = {k: self._counter(self.accepted.labels(agent, version, k)) for k in ACCEPT_KINDS}
        self.handler_seconds = self._histogram(self.turn_seconds.labels(agent, version, "handler"))
        self.end_to_end_seconds = self._histogram(self.turn_seconds.labels(agent, version, "end_to_end"))
        self.ttft_child = self._histogram(self.ttft.labels(agent, version))
        self.in_flight_child = self.in_flight.labels(agent, version)
        self.waiting_child = self.waiting.labels(agent, version)
        self.stream = {k: self.streams.labels(agent, version, k) for k in STREAM_KINDS}
        self.takeovers_child = self.takeovers.labels(agent, version)
        self.store_resets_child = self.store_resets.labels(agent, version)
        self.fencing_child = self.fencing.labels(agent, version)
        self.abandon_reason = {r: self.abandoned.labels(agent, version, r) for r in ABANDON_REASONS}
        self.store_op = {op: self._histogram(self.store_seconds.labels(op)) for op in STORE_OPERATIONS}
        self._http: dict[tuple[str, str, int], tuple[FastCounter, FastHistogram]] = {}

    def _counter(self, child: Any) -> FastCounter:
        fast = FastCounter(child)
        self._fast.append(fast)
        return fast

    def _histogram(self, child: Any) -> FastHistogram:
        fast = FastHistogram(child)
        self._fast.append(fast)
        return fast

    def flush(self) -> None:
        """Add what the hot path counted since the last flush to the exported metrics."""
        for fast in self._fast:
            fast.flush()

    # -- recording -----------------------------------------------------------------------------------------

    def sample(self, engine: EngineGauges) -> None:
        """Set the gauges an engine knows (in-flight turns, waiting callers)."""
        self.in_flight_child.set(engine.in_flight)
        self.waiting_child.set(engine.waiting_callers)

    async def sample_forever(self, engine: EngineGauges, interval: float = 1.0) -> None:
        """Flush the hot path's counts and keep the engine gauges current (read, not counted: they cannot drift)."""
        while True:
            self.sample(engine)
            self.flush()
            await asyncio.sleep(interval)

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._http.get((route, method, status))
        if children is None:
            children = (self._counter(self.http_requests.labels(route, method, str(status))),
                        self._histogram(self.http_seconds.labels(route, method)))
            self._http[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    @contextlib.contextmanager
    def open_stream(self, kind: str) -> Iterator[None]:
        """Count a stream as open for the duration of the block."""
        gauge = self.stream[kind]
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def forwarded(self, target: str, outcome: str) -> None:
        """A message was passed on to version ``target`` (or could not be: ``unavailable``, ``unknown``)."""
        self.forwards.labels(*self._av, target, outcome).inc()

    def backend_child(self, backend: str, outcome: str) -> Any:
        return self.backend_calls.labels(*self._av, backend, outcome)

    # -- exposition ----------------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition of every metric (all workers' in multi-process mode)."""
        self.flush()
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self.fleet)
        return generate_latest(registry)


class _BackendTimer:
    __slots__ = ("_call", "_metrics", "_start")

    def __init__(self, metrics: Metrics, call: BackendCall) -> None:
        self._metrics = metrics
        self._call = call
        self._start = time.perf_counter()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        call = self._call
        metrics = self._metrics
        metrics.backend_child(call.backend, call.outcome).inc()
        metrics.backend_seconds.labels(*metrics._av, call.backend).observe(time.perf_counter() - self._start)


class MetricsObserver:
    """The engine's hooks, recorded as Prometheus metrics (see ``Metrics``)."""

    __slots__ = ("_abandon", "_accept", "_committed", "_e2e", "_failed", "_fencing", "_handler", "_interrupted",
                 "_rejected", "_retried", "_store_accept", "_store_commit", "_takeovers", "_ttft", "metrics")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._accept = metrics.accept_kind
        self._rejected = metrics.outcome["rejected"]
        self._committed = metrics.outcome["committed"]
        self._retried = metrics.outcome["retried-after-takeover"]
        self._failed = metrics.outcome["failed"]
        self._interrupted = metrics.outcome["interrupted"]
        self._handler = metrics.handler_seconds
        self._e2e = metrics.end_to_end_seconds
        self._ttft = metrics.ttft_child
        self._takeovers = metrics.takeovers_child
        self._fencing = metrics.fencing_child
        self._abandon = metrics.abandon_reason
        self._store_accept = metrics.store_op["accept"]
        self._store_commit = metrics.store_op["commit"]

    def message_received(self, key: ConversationKey, message_id: str) -> MessageSpan | None:
        return None

    def message_accepted(self, kind: str, seconds: float) -> None:
        self._store_accept.observe(seconds)
        child = self._accept.get(kind)
        if child is not None:
            child.inc()
        if kind == "rejected":
            self._rejected.inc()

    def turn_started(self, key: ConversationKey, message_id: str, attempt: int, trace: str | None) -> None:
        pass  # in-flight turns are sampled from the engine, so no start/finish pair can drift

    def handler_finished(self, key: ConversationKey, seconds: float, error: BaseException | None) -> None:
        self._handler.observe(seconds)

    def turn_finished(
        self, key: ConversationKey, *, outcome: str, attempt: int, handler_seconds: float, total_seconds: float,
        commit_seconds: float,
    ) -> None:
        self._store_commit.observe(commit_seconds)
        if outcome == "committed":
            (self._committed if attempt <= 1 else self._retried).inc()
        elif outcome == "failed":
            self._failed.inc()
        else:
            self._interrupted.inc()
        self._e2e.observe(total_seconds)

    def turn_abandoned(self, key: ConversationKey, reason: str) -> None:
        child = self._abandon.get(reason)
        if child is not None:
            child.inc()
        if reason in ("lost", "fenced"):
            self._fencing.inc()

    def first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)

    def takeover(self, key: ConversationKey, previous_owner: str | None, attempt: int) -> None:
        self._takeovers.inc()

    def store_reset(self, previous_epoch: str, epoch: str) -> None:
        self.metrics.store_resets_child.inc()

    def backend_call(self, call: BackendCall) -> AbstractContextManager[object]:
        return _BackendTimer(self.metrics, call)
