"""Observability overhead (issue: metrics, traces and logs).

In one run, against one fresh local redis-server, ``Engine.send`` with a no-op handler, 50 concurrent
conversations (the engine benchmark's workload), three ways, interleaved round by round:

- ``off``: no observer, the plain store;
- ``metrics``: what ``statefleet serve`` runs by default — the Prometheus observer and the metering store
  proxy (single-process registry: one worker), tracing off;
- ``metrics_multiprocess`` (a subprocess with ``PROMETHEUS_MULTIPROC_DIR`` set, as ``--workers N`` runs):
  reported as its own ratio against an ``off`` engine measured in that subprocess.

The figure is the median over rounds of metrics/off; the target is ≥ 0.95 (within 5 %).

And as served: ``statefleet serve --workers 2`` (echo agent) with metrics on (the default) and with
``--no-metrics``, under the HTTP benchmark's wrk load (``-t1 -c64``, 10,000 random conversations), alternating
round by round — the overhead a user of the server sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from statefleet import Engine, EngineSettings, open_store
from statefleet.observability.metrics import Metrics, MetricsObserver
from statefleet.observability.store_metrics import MeteredStore

from ._servers import redis_server
from .engine import engine_rate, noop_agent


async def compare(url: str, seconds: float, rounds: int) -> dict[str, Any]:
    store = await open_store(url)
    settings = EngineSettings(publish_tokens=False)
    agent = noop_agent()
    metrics = Metrics(agent.name, agent.version)
    plain = Engine(agent, store, settings)
    metered = Engine(agent, MeteredStore(store, metrics), settings, observer=MetricsObserver(metrics))
    convs = [f"c{i}" for i in range(1000)]
    offs, ons = [], []
    async with plain, metered:
        await engine_rate(plain, 0.5, convs)  # warm up: scripts loaded, conversations exist
        await engine_rate(metered, 0.5, convs)
        for i in range(rounds):
            # alternate which goes first, so drift in the machine's load favours neither
            first, second = (plain, metered) if i % 2 == 0 else (metered, plain)
            a = await engine_rate(first, seconds, convs)
            b = await engine_rate(second, seconds, convs)
            off, on = (a, b) if first is plain else (b, a)
            offs.append(off)
            ons.append(on)
    await store.close()
    ratios = [on / off for on, off in zip(ons, offs, strict=True)]
    return {"off_turns_per_s": round(statistics.median(offs)), "metrics_turns_per_s": round(statistics.median(ons)),
            "ratio": round(statistics.median(ratios), 4), "ratios": [round(r, 4) for r in ratios]}


def run(quick: bool = False) -> dict[str, Any]:
    seconds, rounds = (0.5, 2) if quick else (2.0, 7)
    results: dict[str, Any] = {"concurrency": 50, "seconds": seconds, "rounds": rounds, "target": 0.95}
    with redis_server() as url:
        results["metrics"] = asyncio.run(compare(url, seconds, rounds))
        with tempfile.TemporaryDirectory(prefix="sf-bench-metrics-") as directory:
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.observability", url, str(seconds), str(rounds)],
                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}, capture_output=True, text=True,
                check=True,
            )
        results["metrics_multiprocess"] = json.loads(child.stdout.splitlines()[-1])
        results["served"] = served(url, 3.0 if quick else 10.0, 1 if quick else 3)
    results["ratio"] = results["metrics"]["ratio"]
    results["within_target"] = results["ratio"] >= results["target"]
    results["served_within_target"] = results["served"]["ratio"] >= results["target"]
    return results


def served(redis_url: str, seconds: float, rounds: int) -> dict[str, Any]:
    """wrk against ``statefleet serve --workers 2``, metrics on and off, alternating; median ratio."""
    from .http import App, apps, run_wrk, serving

    base = apps(redis_url)["statefleet"]
    variants = {"on": base, "off": App("statefleet-no-metrics", (*base.argv, "--no-metrics"), base.port)}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for name in (("on", "off") if r % 2 == 0 else ("off", "on")):
            with serving(variants[name], redis_url) as app:
                run_wrk(app, 1.0)
                rates[name].append(run_wrk(app, seconds)["ok_per_s"])
    ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    return {"on_turns_per_s": round(statistics.median(rates["on"])),
            "off_turns_per_s": round(statistics.median(rates["off"])),
            "ratio": round(statistics.median(ratios), 4), "ratios": [round(x, 4) for x in ratios]}


if __name__ == "__main__":  # the multi-process variant, in a process whose prometheus_client saw the variable
    print(json.dumps(asyncio.run(compare(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))))
