"""Honest overload (issue 11): ``python -m benchmarks overload [--quick]``.

One ``statefleet serve`` worker, pinned to one CPU (the client and a fresh local redis-server on the other),
serving an agent of ``benchmarks/apps/timed_agent.py`` with a known service time. Per variant:

1. **Capacity**: an open-loop client (each request due at a fixed time, its latency measured from then, so a
   stalled server cannot hide) at rates rising by 1.3x, each for max(4 s, 3 service times); capacity is the
   highest rate whose requests all got 200 with a median latency within 1.5x (or 5 ms) of the lightest rate's. The
   in-flight count at capacity follows by Little's law (rate x mean latency).
2. **Overload**: the same client offers 20x that capacity for 10 s, with at most 1,000 requests outstanding
   (the issue's 1,000 concurrent clients; more wait for a connection, and that wait counts from the due time),
   then waits up to 20 s for the answers still due. Each request has its own conversation and
   Idempotency-Key. Runs, in the same run: ``baseline_old_limits`` (serve as issue 11 measured it: the
   library's limit of 10,000 and asyncio's default of 6 handler threads on 2 CPUs), ``serve_default`` (no
   flag), and where it tells something, the default limit with 6 threads, and ``sized``: the limit Little's law
   gives for 0.5 s (capacity x 0.5 s). Reported: the share answered 503, whether every 503 carried
   ``Retry-After`` and the ``overloaded`` code, p50/p99 of the 503 answers (from the request's send) and of the
   accepted ones (from its due time), anything else that came back, requests unanswered at the bound, and
   the 503 p99 as a ratio of the same instance's unloaded p99 (500 ``GET /healthz`` one at a time just before).
3. **Read-back**: every conversation answered is read back: each 200 must be one committed turn, each 503 a
   conversation that does not exist — nothing accepted was dropped, nothing refused was run.

Variants: ``cpu`` (a ``def`` handler computing 20 ms of CPU per turn: the kind of load issue 11 measured),
``sleeping`` (awaits 5 s, like a model call, almost no CPU: the limit binds before the CPU), ``no_op``
(capacity only: what the server itself carries) and ``cpu_in_async_handler`` (the same 20 ms computed inside
an ``async def`` handler, blocking the event loop: measured so its cost is known; not judged).
The must-show (issue 11): on the judged variants' ``serve_default`` run, the excess answered 503 with
``Retry-After`` in ≤ 50 ms at p99, and every accepted turn committed. Results: benchmarks/results/overload.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statefleet.testing import ServeProcess

from ._client import Connection
from ._servers import redis_server
from .openloop import summary_ms

AGENTS = Path(__file__).with_name("apps") / "timed_agent.py"
#: Requests outstanding at once at most: the issue's 1,000 concurrent clients.
CONNECTIONS = 1000
OVERLOAD_FACTOR = 20
#: What the issue measured with: the library's default before ``--max-in-flight`` existed.
OLD_DEFAULT = 10_000
#: The must-show: excess answered 503 in at most this, p99.
TARGET_503_P99_MS = 50.0


@dataclass(frozen=True)
class Variant:
    agent: str
    service_ms: float
    #: Where the capacity search starts (turns/s); rates rise by ``STEP`` from there.
    start_rate: float
    #: ``statefleet serve`` flags of the capacity search.
    capacity_flags: tuple[str, ...]
    #: The overload runs, in order: label -> flags; "sized" gets ``--max-in-flight`` from Little's law.
    runs: dict[str, tuple[str, ...]]
    #: Whether the must-show's verdict is taken on this variant's ``serve_default`` run.
    judged: bool = True


#: ``statefleet serve`` before issue 11: the library's limit, asyncio's default thread count on a 2-CPU machine.
BASELINE = ("--max-in-flight", str(OLD_DEFAULT), "--handler-threads", "6")
VARIANTS = {
    # The case: turns that cost the instance CPU. Capacity is the CPU's (limit off).
    "cpu": Variant("cpu_bound", 20.0, 10.0, ("--max-in-flight", "1000000"), {
        "baseline_old_limits": BASELINE,
        "default_limit_six_threads": ("--handler-threads", "6"),
        "serve_default": (),
        "sized": (),
    }),
    # A turn that waits 5 s on a model and costs almost no CPU: capacity is the default limit's (256 / 5 s).
    "sleeping": Variant("sleeping", 5000.0, 30.0, (), {
        "baseline_old_limits": BASELINE,
        "serve_default": (),
    }),
    # Quick turns (no service time): what the server itself carries, and how much is in flight meanwhile.
    "no_op": Variant("sleeping", 0.0, 500.0, ("--max-in-flight", "1000000"), {}, judged=False),
    # The mistake: computing inside an async handler blocks the loop, and no limit can answer meanwhile.
    "cpu_in_async_handler": Variant("cpu_bound_async", 20.0, 10.0, ("--max-in-flight", "1000000"), {
        "serve_default": (),
        "sized": (),
    }, judged=False),
}
STEP = 1.3
#: The latency "sized" runs size the limit for: --max-in-flight = capacity x this (Little's law).
ACCEPTABLE_LATENCY_S = 0.5


# --- the instance -----------------------------------------------------------------------------------------------

def _cpus() -> tuple[int | None, int | None]:
    """(the server's CPU, the client's and Redis's CPU), when the machine has two or more."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (usable[0], usable[1]) if len(usable) >= 2 else (None, None)


@contextmanager
def serving(variant: Variant, store: str, *flags: str) -> Iterator[ServeProcess]:
    server_cpu, _ = _cpus()
    with tempfile.NamedTemporaryFile(prefix="sf-bench-overload-", suffix=".log") as log:
        options = ("--log-level", "warning", "--drain-timeout", "5", *flags)
        instance = ServeProcess(f"{AGENTS}:{variant.agent}", store, *options, log=Path(log.name),
                                env={"SF_BENCH_SERVICE_MS": f"{variant.service_ms:g}"})
        if server_cpu is not None:
            os.sched_setaffinity(instance.proc.pid, {server_cpu})
        try:
            instance.wait_ready()
            yield instance
        finally:
            instance.stop(timeout=30)


# --- the client ---------------------------------------------------------------------------------------------------

@dataclass
class Offered:
    """What an open-loop run got back."""

    rate: float
    seconds: float
    #: (conversation id, status, error code or "", has Retry-After, seconds from send, seconds from due time)
    answers: list[tuple[str, int, str, bool, float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: Requests still unanswered when the run's bound passed (cancelled).
    unanswered: int = 0
    send_lag: list[float] = field(default_factory=list)
    elapsed: float = 0.0


async def offer(port: int, rate: float, seconds: float, prefix: str, connections: int = CONNECTIONS,
                patience: float = 30.0) -> Offered:
    """Requests due every ``1/rate`` s for ``seconds``, each to conversation ``{prefix}-{i}`` with its own
    Idempotency-Key; at most ``connections`` outstanding. Waits ``patience`` s for the last answers."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    opened: list[Connection] = []
    result = Offered(rate, seconds)
    body = b'{"text":"hello"}'

    async def connection() -> Connection:
        if pool.empty() and len(opened) < connections:
            opened.append(await Connection.open("127.0.0.1", port))
            return opened[-1]
        return await pool.get()

    async def one(i: int, due: float) -> None:
        conversation = f"{prefix}-{i}"
        conn = await connection()
        sent = time.perf_counter()
        result.send_lag.append(sent - due)
        try:
            response = await conn.post(f"/v1/conversations/{conversation}/messages", body,
                                       extra_headers=f"Idempotency-Key: {conversation}\r\n")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.failures.append(repr(exc))
            conn.close()
            conn = await Connection.open("127.0.0.1", port)
            opened.append(conn)
        else:
            done = time.perf_counter()
            code = ""
            if response.status != 200:
                code = response.body.split(b'"code":"', 1)[-1].split(b'"', 1)[0].decode(errors="replace")
            result.answers.append((conversation, response.status, code, b"retry-after" in response.headers,
                                   done - sent, done - due))
        pool.put_nowait(conn)

    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=patience)
    result.elapsed = time.perf_counter() - start
    result.unanswered = len(tasks)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in opened:
        conn.close()
    return result


def _summary(run: Offered) -> dict[str, Any]:
    ok = [a for a in run.answers if a[1] == 200]
    refused = [a for a in run.answers if a[1] == 503]
    others: dict[str, int] = {}
    for a in run.answers:
        if a[1] not in (200, 503):
            others[f"{a[1]} {a[2]}"] = others.get(f"{a[1]} {a[2]}", 0) + 1
    offered = int(run.rate * run.seconds)
    return {
        "offered_rate": round(run.rate, 1),
        "offered": offered,
        "accepted": len(ok),
        "accepted_per_s": round(len(ok) / run.elapsed, 1) if run.elapsed else 0.0,
        "refused_503": len(refused),
        "share_503": round(len(refused) / offered, 4) if offered else 0.0,
        "503_with_retry_after": sum(1 for a in refused if a[3]),
        "503_codes": sorted({a[2] for a in refused}),
        "other_answers": others,
        "transport_failures": len(run.failures),
        "failure_examples": run.failures[:3],
        "unanswered_at_the_bound": run.unanswered,
        "latency_503_from_send": summary_ms([a[4] for a in refused], (50, 99)),
        "latency_503_from_due": summary_ms([a[5] for a in refused], (50, 99)),
        "latency_accepted_from_send": summary_ms([a[4] for a in ok], (50, 99)),
        "latency_accepted_from_due": summary_ms([a[5] for a in ok], (50, 99)),
        "client_send_lag": summary_ms(run.send_lag, (50, 99)),
    }


# --- capacity -------------------------------------------------------------------------------------------------------

async def find_capacity(port: int, variant: Variant, seconds: float, prefix: str) -> dict[str, Any]:
    """Rising open-loop rates until a request fails or the median latency rises (1.5x, or 5 ms, of the first's)."""
    steps: list[dict[str, Any]] = []
    rate = variant.start_rate
    floor_p50: float | None = None
    capacity = 0.0
    in_flight = 0.0
    n = 0
    while True:
        run = await offer(port, rate, seconds, f"{prefix}-capacity{n}")
        n += 1
        ok = [a[5] for a in run.answers if a[1] == 200]
        p50 = statistics.median(ok) if ok else float("inf")
        floor_p50 = p50 if floor_p50 is None else floor_p50
        # Every turn a 200, and the median not risen: by half, or by 5 ms (below that a 1 ms median is noise)
        flat = len(ok) == int(rate * seconds) and p50 <= max(1.5 * floor_p50, floor_p50 + 0.005)
        mean = statistics.fmean(ok) if ok else float("inf")
        steps.append({"rate": round(rate, 1), "ok": len(ok), "p50_ms": round(p50 * 1000, 1),
                      "mean_ms": round(mean * 1000, 1), "p99_ms": summary_ms(ok, (99,))["p99_ms"], "flat": flat})
        print(f"  capacity step {rate:7.1f}/s: p50 {p50 * 1000:8.1f} ms, ok {len(ok)}, flat {flat}", flush=True)
        if not flat:
            break
        capacity, in_flight = rate, rate * mean  # Little's law: in flight = throughput x time in the system
        rate *= STEP
    return {"turns_per_s": round(capacity, 1), "in_flight_at_capacity": round(in_flight, 1), "steps": steps}


# --- read-back ------------------------------------------------------------------------------------------------------

async def read_back(port: int, run: Offered) -> dict[str, Any]:
    """Every 200 must be one committed turn; every 503 a conversation that does not exist."""
    expected = {a[0]: a[1] for a in run.answers if a[1] in (200, 503)}
    found = {200: 0, 503: 0}  # answers whose read-back is as it must be
    problems: list[str] = []
    conns = [await Connection.open("127.0.0.1", port) for _ in range(16)]

    async def check(conn: Connection, ids: list[str]) -> None:
        for conversation in ids:
            response = await conn.get(f"/v1/conversations/{conversation}")
            if expected[conversation] == 200:
                good = response.status == 200 and json.loads(response.body)["turns"] == 1
            else:
                good = response.status == 404
            if good:
                found[expected[conversation]] += 1
            else:
                problems.append(f"{conversation}: answered {expected[conversation]}, read back {response.status} "
                                f"{response.body[:80]!r}")

    ids = list(expected)
    await asyncio.gather(*(check(c, ids[i::len(conns)]) for i, c in enumerate(conns)))
    for conn in conns:
        conn.close()
    accepted = sum(1 for status in expected.values() if status == 200)
    return {"accepted": accepted, "accepted_committed": found[200], "refused": len(expected) - accepted,
            "refused_absent": found[503], "problems": problems[:5], "all_good": not problems}


# --- the run ----------------------------------------------------------------------------------------------------------

async def unloaded(port: int, samples: int = 500) -> dict[str, float]:
    """The floor a 503 is held to, on the same instance just before: ``GET /healthz``, one at a time, idle."""
    conn = await Connection.open("127.0.0.1", port)
    times: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        await conn.get("/healthz")
        times.append(time.perf_counter() - started)
    conn.close()
    return summary_ms(times, (50, 99))


async def overload(port: int, capacity: float, seconds: float, label: str, patience: float) -> dict[str, Any]:
    floor = await unloaded(port)
    run = await offer(port, OVERLOAD_FACTOR * capacity, seconds, label, patience=patience)
    summary = _summary(run)
    return {**summary, "unloaded_healthz": floor,
            "503_p99_vs_unloaded_p99": _ratio(summary["latency_503_from_send"]["p99_ms"], floor["p99_ms"]),
            "read_back": await read_back(port, run)}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b and a == a else None  # a != a: NaN, no 503 to measure


def run_variant(name: str, variant: Variant, store: str, quick: bool) -> dict[str, Any]:
    step_seconds, overload_seconds, patience = (2.0, 4.0, 15.0) if quick else (4.0, 10.0, 20.0)
    # A step shorter than a few service times would end before the in-flight count reaches its steady state.
    step_seconds = max(step_seconds, 3 * variant.service_ms / 1000)
    print(f"== overload: {name} ({variant.agent}, {variant.service_ms:g} ms)", flush=True)
    with serving(variant, store, *variant.capacity_flags) as instance:
        capacity = _loop(find_capacity(instance.port, variant, step_seconds, name))
    rate = capacity["turns_per_s"]
    result: dict[str, Any] = {"agent": variant.agent, "service_ms": variant.service_ms, "capacity": capacity,
                              "runs": {}}
    for label, flags in variant.runs.items():
        if label == "sized":
            flags = ("--max-in-flight", str(max(1, round(rate * ACCEPTABLE_LATENCY_S))))
        with serving(variant, store, *flags) as instance:
            summary = _loop(overload(instance.port, rate, overload_seconds, f"{name}-{label}", patience))
        result["runs"][label] = {"flags": " ".join(flags) or "(none: the defaults)", **summary}
        print(f"  {label}: {_line(summary)}", flush=True)
    if variant.judged:
        default = result["runs"]["serve_default"]
        result["verdict"] = {
            "excess_answered_503": default["share_503"] > 0 and not default["other_answers"],
            "503_p99_from_send_ms": default["latency_503_from_send"]["p99_ms"],
            "503_p99_vs_unloaded_p99": default["503_p99_vs_unloaded_p99"],
            "503_p99_within_target": default["latency_503_from_send"]["p99_ms"] <= TARGET_503_P99_MS,
            "every_503_has_retry_after": default["503_with_retry_after"] == default["refused_503"],
            "accepted_all_committed": default["read_back"]["all_good"],
        }
    return result


def _line(summary: dict[str, Any]) -> str:
    return (f"{summary['accepted']} accepted, {summary['refused_503']} x 503 ({summary['share_503']:.1%}), "
            f"503 p50/p99 {summary['latency_503_from_send']['p50_ms']}/{summary['latency_503_from_send']['p99_ms']}"
            f" ms, accepted p99 {summary['latency_accepted_from_due']['p99_ms']} ms, other {summary['other_answers']},"
            f" unanswered {summary['unanswered_at_the_bound']}, read-back ok {summary['read_back']['all_good']}")


def _loop(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run(quick: bool = False, variants: tuple[str, ...] = tuple(VARIANTS)) -> dict[str, Any]:
    _, client_cpu = _cpus()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # the client and the redis-server it starts: not the server's CPU
    results: dict[str, Any] = {"overload_factor": OVERLOAD_FACTOR, "connections": CONNECTIONS,
                               "target_503_p99_ms": TARGET_503_P99_MS, "acceptable_latency_s": ACCEPTABLE_LATENCY_S}
    with redis_server() as store:
        for name in variants:
            results[name] = run_variant(name, VARIANTS[name], store, quick)
    judged = [results[name]["verdict"] for name in variants if "verdict" in results[name]]
    results["must_show_met"] = bool(judged) and all(
        v["excess_answered_503"] and v["503_p99_within_target"] and v["every_503_has_retry_after"]
        and v["accepted_all_committed"] for v in judged)
    return results
