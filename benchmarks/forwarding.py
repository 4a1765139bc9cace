"""Forwarding between versions (issue 14): ``python -m benchmarks forwarding [--quick]``.

The must-show: forwarding adds ≤ 1 ms at p50 over a direct turn. One fresh local redis-server and two
``statefleet serve`` processes on it, both running ``tests/canary/agents.py:agent`` (emits one token, then
replies), one with ``CANARY_VERSION=v1`` and one with ``v2``. No routing weights are set, so a new conversation
is pinned to the version of the instance that takes its first message: ``CONVERSATIONS`` conversations are
started on the v2 instance. Then, in the same run, interleaved request by request over ``rounds`` rounds, turns
of those v2 conversations are sent, sequentially (concurrency 1: the latency is the forwarding cost, not
queueing), each path on its own keep-alive connection of one client (``benchmarks/_client.py``):

- ``direct``: to the v2 instance;
- ``forwarded``: to the v1 instance, whose store call refuses the message (``WrongVersion``, one Redis round
  trip), and which passes the request on to the v2 instance found in the fleet registry and relays its answer;
- ``direct_keyed``: to the v2 instance with a fresh ``Idempotency-Key`` — a reference, since the forwarder
  makes one up when the client sent none (so that a retry elsewhere cannot run the turn twice), and a keyed
  turn does more store work than an unkeyed one.

Both as plain JSON (``POST /v1/conversations/{id}/messages``) and as SSE (``Accept: text/event-stream``, read to
the end). Every answer is checked: 200, the reply from v2 (``version`` "v2", the ``v2:`` token for SSE), the
``X-Statefleet-Forwarded-By`` header on exactly the forwarded ones; anything else counts as a failure.

Reported per mode: p50/p90/p99 of each path over all samples, the p50 difference forwarded - direct (ms) and
the ratio forwarded / direct, over all samples and as the median of the per-round figures (the headline: the
machine is shared, and a round's paths saw the same load). The v1 instance does nothing but forward, so its CPU
time per forwarded message is reported too, next to the v2 instance's per turn. Then throughput at concurrency
16 (plain JSON, both paths alternating by round, each connection on its own conversations so that none queues).
Results: benchmarks/results/forwarding.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statefleet.testing import ServeProcess

from ._client import Connection, Response
from ._machine import cpu_seconds
from ._servers import redis_server
from .openloop import summary_ms

AGENT = Path(__file__).resolve().parent.parent / "tests" / "canary" / "agents.py"
CONVERSATIONS = 512
PATHS = ("direct", "forwarded", "direct_keyed")
MODES = ("json", "sse")
CONCURRENCY = 16
BODY = b'{"text":"hello"}'
FORWARDED_BY = b"x-statefleet-forwarded-by"
#: The must-show: forwarding adds at most this at p50 over a direct turn.
TARGET_P50_ADDED_MS = 1.0


@dataclass
class Series:
    """The latencies (s) of one path in one mode, by round, and what went wrong."""

    by_round: list[list[float]] = field(default_factory=list)
    failures: int = 0
    failure_examples: list[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.failures += 1
        if len(self.failure_examples) < 5:
            self.failure_examples.append(why)

    @property
    def all(self) -> list[float]:
        return [x for samples in self.by_round for x in samples]


@dataclass(frozen=True)
class Fleet:
    v1: ServeProcess
    v2: ServeProcess


@contextmanager
def fleet(redis_url: str) -> Iterator[Fleet]:
    """A v1 and a v2 instance of the canary agent on ``redis_url``; stopped (drained, 5 s) after."""
    with tempfile.TemporaryDirectory(prefix="sf-bench-forwarding-") as logs:
        started: list[ServeProcess] = []
        try:
            for version in ("v1", "v2"):
                started.append(ServeProcess(f"{AGENT}:agent", redis_url, "--log-level", "warning",
                                            "--drain-timeout", "2", log=Path(logs) / f"{version}.log",
                                            env={"CANARY_VERSION": version}))
            for instance in started:
                instance.wait_ready()
            yield Fleet(*started)
        finally:
            for instance in started:
                instance.stop(timeout=5)


def check(response: Response, mode: str, forwarded: bool) -> str | None:
    """Why ``response`` is not a v2 reply that came the expected way; None when it is."""
    if response.status != 200:
        return f"status {response.status}: {response.body[:200]!r}"
    if response.headers.get(b"x-statefleet-version") != b"v2":
        return f"x-statefleet-version {response.headers.get(b'x-statefleet-version')!r}"
    if (FORWARDED_BY in response.headers) != forwarded:
        return f"x-statefleet-forwarded-by {'missing' if forwarded else 'present on a direct answer'}"
    if mode == "json":
        if b'"version":"v2"' not in response.body.replace(b" ", b""):
            return f"reply not from v2: {response.body[:200]!r}"
    elif (b'"text":"v2:"' not in response.body.replace(b" ", b"") or b"event: reply" not in response.body
          or b"event: done" not in response.body):
        return f"stream without the v2 token, reply or end: {response.body[:300]!r}"
    return None


async def turn(conn: Connection, conversation: str, mode: str, path: str, series: Series) -> float | None:
    """One turn of ``conversation`` on ``conn``; its latency in seconds (None if it failed, counted)."""
    key = f"Idempotency-Key: bench-{uuid.uuid4().hex}\r\n" if path == "direct_keyed" else ""
    accept = "text/event-stream" if mode == "sse" else "application/json"
    start = time.perf_counter()
    response = await conn.post(f"/v1/conversations/{conversation}/messages", BODY, accept=accept,
                               extra_headers=key)
    elapsed = time.perf_counter() - start
    problem = check(response, mode, forwarded=path == "forwarded")
    if problem is not None:
        series.fail(f"{path} {mode} {conversation}: {problem}")
        return None
    return elapsed


async def start_conversations(fleet: Fleet, count: int) -> list[str]:
    """``count`` new conversations, each started with one message on the v2 instance (so pinned to v2)."""
    conn = await Connection.open("127.0.0.1", fleet.v2.port)
    try:
        ids = [f"pinned-v2-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        for conversation in ids:
            response = await conn.post(f"/v1/conversations/{conversation}/messages", BODY)
            if check(response, "json", forwarded=False) is not None:
                raise SystemExit(f"could not start {conversation} on v2: {response.status} {response.body[:300]!r}")
        return ids
    finally:
        conn.close()


async def wait_for_forwarding(fleet: Fleet, conversation: str, timeout: float = 15.0) -> None:
    """Until the v1 instance forwards (its fleet view lists the v2 instance: refreshed once a second)."""
    conn = await Connection.open("127.0.0.1", fleet.v1.port)
    deadline = time.monotonic() + timeout
    try:
        while True:
            response = await conn.post(f"/v1/conversations/{conversation}/messages", BODY)
            if check(response, "json", forwarded=True) is None:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"v1 did not forward to v2 within {timeout} s: {response.status} {response.body!r}")
            await asyncio.sleep(0.2)
    finally:
        conn.close()


async def latency(fleet: Fleet, conversations: list[str], rounds: int, per_round: int) -> dict[str, Any]:
    """Sequential turns, every path in turn for each sample, in an order rotated from sample to sample."""
    conns = {"direct": await Connection.open("127.0.0.1", fleet.v2.port),
             "forwarded": await Connection.open("127.0.0.1", fleet.v1.port),
             "direct_keyed": await Connection.open("127.0.0.1", fleet.v2.port)}
    series = {mode: {path: Series() for path in PATHS} for mode in MODES}
    next_conversation = 0
    cpu_before = cpu_seconds(fleet.v1.proc.pid), cpu_seconds(fleet.v2.proc.pid)
    try:
        for _ in range(rounds):
            for mode in MODES:
                for path in PATHS:
                    series[mode][path].by_round.append([])
            for i in range(per_round):
                for mode in MODES:
                    order = PATHS[i % len(PATHS):] + PATHS[:i % len(PATHS)]
                    for path in order:
                        conversation = conversations[next_conversation % len(conversations)]
                        next_conversation += 1
                        took = await turn(conns[path], conversation, mode, path, series[mode][path])
                        if took is not None:
                            series[mode][path].by_round[-1].append(took)
    finally:
        for conn in conns.values():
            conn.close()
    results: dict[str, Any] = {mode: summarize(series[mode]) for mode in MODES}
    # The v1 instance does nothing here but forward: its CPU time per forwarded message is what forwarding costs
    # the fleet (the v2 instance's, per turn, is the comparison).
    forwarded = sum(len(series[mode]["forwarded"].all) for mode in MODES)
    turns = sum(len(s.all) for mode in MODES for s in series[mode].values())
    results["cpu_us"] = {
        "v1_per_forwarded_message": round((cpu_seconds(fleet.v1.proc.pid) - cpu_before[0]) / max(1, forwarded) * 1e6),
        "v2_per_turn": round((cpu_seconds(fleet.v2.proc.pid) - cpu_before[1]) / max(1, turns) * 1e6),
    }
    return results


def summarize(series: dict[str, Series]) -> dict[str, Any]:
    direct, forwarded = series["direct"], series["forwarded"]
    p50 = {path: statistics.median(s.all) * 1000 for path, s in series.items()}
    round_p50 = {path: [statistics.median(r) * 1000 for r in s.by_round] for path, s in series.items()}
    round_added = [f - d for f, d in zip(round_p50["forwarded"], round_p50["direct"], strict=True)]
    round_ratio = [f / d for f, d in zip(round_p50["forwarded"], round_p50["direct"], strict=True)]
    return {
        "samples": {path: len(s.all) for path, s in series.items()},
        "latency": {path: summary_ms(s.all, (50, 90, 99)) for path, s in series.items()},
        "p50_added_ms": round(p50["forwarded"] - p50["direct"], 3),
        "ratio_p50": round(p50["forwarded"] / p50["direct"], 3),
        "p50_added_ms_median_of_rounds": round(statistics.median(round_added), 3),
        "ratio_p50_median_of_rounds": round(statistics.median(round_ratio), 3),
        "p50_added_ms_by_round": [round(x, 3) for x in round_added],
        "p50_ms_by_round": {path: [round(x, 3) for x in r] for path, r in round_p50.items()},
        "p50_added_ms_over_direct_keyed": round(p50["forwarded"] - p50["direct_keyed"], 3),
        "direct_keyed_p50_added_ms": round(p50["direct_keyed"] - p50["direct"], 3),
        "failures": {path: s.failures for path, s in series.items()},
        "failure_examples": [x for s in (direct, forwarded, series["direct_keyed"]) for x in s.failure_examples],
    }


async def closed_loop(conn: Connection, own: list[str], path: str, stop: float, series: Series) -> int:
    """Turns of ``own`` conversations, one after another on ``conn``, until ``stop``; how many succeeded."""
    done = n = 0
    while time.perf_counter() < stop:
        if await turn(conn, own[n % len(own)], "json", path, series) is not None:
            done += 1
        n += 1
    return done


async def throughput(fleet: Fleet, conversations: list[str], rounds: int, seconds: float) -> dict[str, Any]:
    """Plain JSON turns/s at ``CONCURRENCY`` connections, direct and forwarded alternating by round."""
    ports = {"direct": fleet.v2.port, "forwarded": fleet.v1.port}
    rates: dict[str, list[float]] = {path: [] for path in ports}
    failures = {path: Series() for path in ports}
    for r in range(rounds):
        for path in (("direct", "forwarded") if r % 2 == 0 else ("forwarded", "direct")):
            conns = [await Connection.open("127.0.0.1", ports[path]) for _ in range(CONCURRENCY)]
            started = time.perf_counter()
            # Each connection on its own conversations: no two requests in flight share one (none queues).
            done = await asyncio.gather(*(closed_loop(conn, conversations[i::CONCURRENCY], path,
                                                      started + seconds, failures[path])
                                          for i, conn in enumerate(conns)))
            rates[path].append(sum(done) / (time.perf_counter() - started))
            for conn in conns:
                conn.close()
    return {
        "concurrency": CONCURRENCY,
        "seconds_per_round": seconds,
        "turns_per_s": {path: round(statistics.median(r)) for path, r in rates.items()},
        "turns_per_s_by_round": {path: [round(x) for x in r] for path, r in rates.items()},
        "ratio_forwarded_to_direct": round(statistics.median(
            f / d for f, d in zip(rates["forwarded"], rates["direct"], strict=True)), 3),
        "failures": {path: s.failures for path, s in failures.items()},
        "failure_examples": [x for s in failures.values() for x in s.failure_examples],
    }


async def measure(fleet: Fleet, quick: bool) -> dict[str, Any]:
    rounds, per_round = (2, 100) if quick else (10, 300)
    conversations = await start_conversations(fleet, CONVERSATIONS // 4 if quick else CONVERSATIONS)
    await wait_for_forwarding(fleet, conversations[0])
    await latency(fleet, conversations, 1, 50)  # warm up: connections, scripts, code paths
    results: dict[str, Any] = {
        "conversations": len(conversations), "rounds": rounds, "samples_per_round_per_path": per_round,
        "measured": ("client-side, sequential on one keep-alive connection per path: from writing the POST to "
                     "reading the whole answer (JSON body, or the SSE stream to its `done` event)"),
        "target_p50_added_ms": TARGET_P50_ADDED_MS,
    }
    results.update(await latency(fleet, conversations, rounds, per_round))
    results["concurrency_16"] = await throughput(fleet, conversations, 2 if quick else 6, 1.0 if quick else 3.0)
    return results


def run(quick: bool) -> dict[str, Any]:
    load_before = os.getloadavg()
    with redis_server() as url, fleet(url) as servers:
        results = asyncio.run(measure(servers, quick))
    results["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    failures = sum(n for mode in MODES for n in results[mode]["failures"].values())
    failures += sum(results["concurrency_16"]["failures"].values())
    results["failures"] = failures
    results["verdict"] = {
        f"{mode}_p50_added_ms": results[mode]["p50_added_ms_median_of_rounds"] <= TARGET_P50_ADDED_MS
        for mode in MODES
    } | {"no_failures": failures == 0}
    print(summary(results))
    return results


def summary(results: dict[str, Any]) -> str:
    lines = ["forwarding: sequential turns (ms), forwarded = to v1, passed on to v2"]
    for mode in MODES:
        r = results[mode]
        for path in PATHS:
            lat = r["latency"][path]
            lines.append(f"  {mode:4} {path:13} p50 {lat['p50_ms']:7.3f}  p90 {lat['p90_ms']:7.3f}  "
                         f"p99 {lat['p99_ms']:7.3f}  ({r['samples'][path]} samples, {r['failures'][path]} failed)")
        lines.append(f"  {mode:4} added at p50: {r['p50_added_ms_median_of_rounds']:.3f} ms (median of rounds; "
                     f"all samples {r['p50_added_ms']:.3f}), ratio {r['ratio_p50_median_of_rounds']:.3f}; "
                     f"over direct_keyed {r['p50_added_ms_over_direct_keyed']:.3f} ms")
    cpu = results["cpu_us"]
    lines.append(f"  CPU per message: v1 (forwarding) {cpu['v1_per_forwarded_message']} µs, v2 (running the turn) "
                 f"{cpu['v2_per_turn']} µs")
    c = results["concurrency_16"]
    lines.append(f"  concurrency {c['concurrency']}: direct {c['turns_per_s']['direct']} turns/s, forwarded "
                 f"{c['turns_per_s']['forwarded']} turns/s, ratio {c['ratio_forwarded_to_direct']}")
    lines.append(f"  verdict (≤ {TARGET_P50_ADDED_MS} ms at p50, 0 failures): {results['verdict']}")
    return "\n".join(lines)
