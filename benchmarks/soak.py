"""Soak: the fault suite's random schedules (tests/faults) for a given time, on Redis and on SQLite.

``python -m benchmarks.soak [--seconds 600] [--seed 1] [--backend redis|sqlite|both] [--quick]``

The same machinery as ``tests/faults`` (three engine processes on a persistent, restartable redis-server or on
one SQLite file; kill -9, SIGSTOP, store pause and restart; the checker), with more faults per schedule, run
until the time is up. Schedule ``i`` of a seed is always the same: ``--seed S --backend B --only i`` runs it
again, and ``--replay '<schedule JSON>'`` runs a schedule a failure report printed. ``--break-fencing`` runs
the deliberately broken build (Redis commits skip the fencing check), to show the random schedules catch it.

Prints a summary (schedules, messages, faults injected, violations with their schedules) and writes
benchmarks/results/soak.json (soak-quick.json with ``--quick``: a one-minute smoke run). Exits 1 when a
violation was found.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.faults.fleet import Fleet
from tests.faults.schedule import SOAK_MIX, RandomChooser, Schedule, build_schedule
from tests.faults.suite import Explorer, Report

from statefleet.testing import LocalRedisServer

from ._machine import machine

RESULTS = Path(__file__).with_name("results")
#: Share of the time spent on Redis (the production store, with the store faults); SQLite gets the rest.
REDIS_SHARE = 0.65


def seeded_schedules(seed: int, backend: str, start: int = 0) -> Iterator[Schedule]:
    """Schedule ``i`` of ``seed`` on ``backend``, for i = start, start + 1, …"""
    for i in itertools.count(start):
        yield build_schedule(RandomChooser(f"{seed}:{backend}:{i}"), store_faults=backend == "redis", mix=SOAK_MIX)


async def soak(backend: str, schedules: Iterator[Schedule], seconds: float, workdir: Path,
               break_fencing: bool = False) -> Report:
    """Run ``schedules`` on a fresh fleet on ``backend`` until ``seconds`` have passed (or they run out)."""
    server = LocalRedisServer(persistent=True) if backend == "redis" else None
    try:
        url = server.url if server is not None else f"sqlite:///{workdir / 'state.db'}"
        fleet = Fleet(url, workdir / "handler.log", redis=server, break_fencing=break_fencing)
        await fleet.start()
        try:
            explorer = Explorer(fleet, Report(backend), backend[0])
            return await explorer.run_all(schedules, until=time.monotonic() + seconds)
        finally:
            await fleet.close()
    finally:
        if server is not None:
            server.stop()


async def run(seconds: float, seed: int, backends: list[str], only: int | None = None,
              replay: Schedule | None = None, break_fencing: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"seconds": seconds, "seed": seed, "mix": SOAK_MIX.__dict__, "code": _code_version(),
                               "break_fencing": break_fencing}
    workdir = Path(tempfile.mkdtemp(prefix="statefleet-soak-"))
    reports = []
    for backend in backends:
        if replay is not None or only is not None:
            chosen = [replay] if replay is not None else [next(seeded_schedules(seed, backend, only or 0))]
            budget = float("inf")
            schedules: Iterator[Schedule] = iter(chosen)
        else:
            share = REDIS_SHARE if backend == "redis" and len(backends) > 1 else 1 - REDIS_SHARE
            budget = seconds * (share if len(backends) > 1 else 1.0)
            schedules = seeded_schedules(seed, backend)
        (workdir / backend).mkdir()
        report = await soak(backend, schedules, budget, workdir / backend, break_fencing)
        print(report.summary(), flush=True)
        reports.append(report)
        results[backend] = report.to_json()
    results["schedules"] = sum(r.schedules for r in reports)
    results["messages"] = sum(r.messages for r in reports)
    results["faults_injected"] = sum(sum(r.faults.values()) for r in reports)
    results["violations"] = sum(len(r.violations) for r in reports)
    if results["violations"]:
        results["engine_logs"] = str(workdir)  # kept for the post-mortem
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _code_version() -> str:
    """The commit the soak ran on, marked when the working tree had changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--seconds", type=float, default=600.0, help="total time, shared by the backends")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=["redis", "sqlite", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="one minute (smoke check, not for figures)")
    parser.add_argument("--only", type=int, default=None, help="run schedule number ONLY of the seed, once")
    parser.add_argument("--replay", default=None, help="run one schedule given as the JSON a report printed")
    parser.add_argument("--break-fencing", action="store_true",
                        help="run a deliberately broken build (Redis commits skip the fencing check): must fail")
    args = parser.parse_args()
    backends = ["redis", "sqlite"] if args.backend == "both" else [args.backend]
    seconds = 60.0 if args.quick else args.seconds
    replay = Schedule.from_json(args.replay) if args.replay else None
    if args.break_fencing:
        backends = ["redis"]  # the broken check is the Redis commit script's
    results = asyncio.run(run(seconds, args.seed, backends, args.only, replay, args.break_fencing))
    meta = {"quick": args.quick, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "cpus": os.cpu_count(), **machine()}
    if replay is None and args.only is None and not args.break_fencing:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / ("soak-quick.json" if args.quick else "soak.json")
        path.write_text(json.dumps({**meta, **results}, indent=2) + "\n")
        print(f"== soak ({path})")
    print(f"  schedules {results['schedules']}, messages {results['messages']}, faults injected "
          f"{results['faults_injected']}, violations {results['violations']}")
    sys.exit(1 if results["violations"] else 0)


if __name__ == "__main__":
    main()
