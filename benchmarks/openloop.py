"""Open-loop load: requests sent on a fixed schedule whatever the server does, latency from the schedule.

wrk is closed-loop: a slow response delays the next request, so a stalled server is sampled less and its
stall hides (coordinated omission). Here request ``i`` is due at ``start + i / rate`` and its latency is
measured from that due time, so time spent waiting for the server — or for a free connection — counts.
The client's own lateness (``send_lag``) and CPU use are reported, so a saturated client shows up as such.

``python -m benchmarks.openloop --port 8000 --rate 1000 --seconds 10`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from typing import Any

from ._client import Connection

BODY = b'{"text":"hello"}'


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summary_ms(seconds: list[float], quantiles: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[str, float]:
    values = sorted(seconds)
    result = {f"p{q:g}_ms": round(percentile(values, q) * 1000, 3) for q in quantiles}
    result["max_ms"] = round(values[-1] * 1000, 3) if values else float("nan")
    return result


async def open_loop(host: str, port: int, rate: float, seconds: float, connections: int = 64,
                    conversations: int = 10_000) -> dict[str, Any]:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(host, port))
    rng = random.Random(1)
    total = int(rate * seconds)
    interval = 1.0 / rate
    latencies: list[float] = []
    service_times: list[float] = []
    send_lags: list[float] = []
    statuses: dict[int, int] = {}
    failures: list[str] = []
    in_flight = max_in_flight = 0

    async def one(due: float, path: str) -> None:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        conn = await idle.get()
        sent_at = time.perf_counter()
        send_lags.append(sent_at - due)
        try:
            response = await conn.post(path, BODY)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            failures.append(repr(exc))
            conn.close()
            idle.put_nowait(await Connection.open(host, port))
        else:
            done_at = time.perf_counter()
            latencies.append(done_at - due)
            service_times.append(done_at - sent_at)
            statuses[response.status] = statuses.get(response.status, 0) + 1
            idle.put_nowait(conn)
        finally:
            in_flight -= 1

    tasks: set[asyncio.Task[None]] = set()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter() + 0.05
    sent = 0
    while sent < total:
        now = time.perf_counter()
        while sent < total and start + sent * interval <= now:
            path = f"/v1/conversations/c{rng.randrange(conversations)}/messages"
            task = asyncio.get_running_loop().create_task(one(start + sent * interval, path))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent * interval - time.perf_counter()))
    sent_for = time.perf_counter() - start
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    elapsed = time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    while not idle.empty():
        idle.get_nowait().close()
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "target_rate": rate,
        "seconds": seconds,
        "connections": connections,
        "scheduled": total,
        "completed_2xx": ok,
        "non_2xx": {str(s): n for s, n in statuses.items() if not 200 <= s < 300},
        "failures": len(failures) + len(tasks),
        "failure_examples": failures[:3],
        "achieved_rate": round(ok / elapsed, 1),
        "send_rate": round(sent / sent_for, 1),
        "latency_from_schedule": summary_ms(latencies),
        "latency_from_send": summary_ms(service_times),
        "send_lag": summary_ms(send_lags, (50, 99)),
        "max_in_flight": max_in_flight,
        "client_cpu_fraction_of_one_core": round(cpu / elapsed, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.openloop", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--conversations", type=int, default=10_000)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    result = runner(open_loop(args.host, args.port, args.rate, args.seconds, args.connections, args.conversations))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
