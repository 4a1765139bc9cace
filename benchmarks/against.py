"""``python -m benchmarks engine --against REF``: the engine's throughput on today's code against another commit,
measured alternately in the same run.

The other commit is checked out with ``git worktree add --detach`` in a temporary directory (removed at the
end). Each run is one child process (``python -m benchmarks.against --child``) that imports ``statefleet``
from ``PYTHONPATH`` — the worktree's ``src`` or this checkout's ``src`` — and runs the workload
of ``benchmarks/engine.py`` (``engine_rate``: a no-op handler, window 5, 50 concurrent senders over 1,000
conversations, no token publishing) against its own fresh redis-server (the same binary and options as the
engine benchmark's), started for that run alone. A round is one run of each, back to back, the order
alternating from round to round; the figure is the median of the per-round ratios current / baseline (10 rounds
of 5 s by default). Each run also reports the CPU its engine process and its redis-server spent per turn: on a
shared machine the rate moves with the neighbours' load far more than the cost per turn does.

Only the ``statefleet`` package comes from the two trees: the benchmark code itself (this module and
``engine_rate``) is this checkout's, so both sides run the same workload. The current side is the ``src`` the
benchmark itself imports ``statefleet`` from: this checkout's (the editable install), uncommitted edits
included, unless ``PYTHONPATH`` names another (e.g. a worktree of HEAD while others edit this checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def current_src() -> Path:
    """The ``src`` directory this process imports ``statefleet`` from."""
    import statefleet

    return Path(statefleet.__file__).resolve().parent.parent


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A detached checkout of ``ref`` in a temporary directory, removed (and pruned) afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="statefleet-against-"))
    path = parent / "tree"
    _git("worktree", "add", "--detach", str(path), ref)
    try:
        yield path
    finally:
        try:
            _git("worktree", "remove", "--force", str(path))
        except subprocess.CalledProcessError:
            shutil.rmtree(path, ignore_errors=True)
            _git("worktree", "prune")
        shutil.rmtree(parent, ignore_errors=True)


def measure(src: Path, seconds: float, warmup: float) -> dict[str, Any]:
    """One run of the engine workload in a child process with ``statefleet`` imported from ``src``, against a
    fresh redis-server (the same options as ``benchmarks._servers.redis_server``)."""
    from ._servers import redis_server

    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    with redis_server() as url:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.against", "--child", url, str(seconds), str(warmup)],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + warmup + 60,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"engine run with PYTHONPATH={src} hung; its stderr:\n{exc.stderr!r}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"engine run with PYTHONPATH={src} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    loaded = Path(result["statefleet"]).resolve()
    if not loaded.is_relative_to(src.resolve()):
        raise RuntimeError(f"the child imported statefleet from {loaded}, not from {src}")
    return result


def run(ref: str, *, seconds: float = 5.0, rounds: int = 10, warmup: float = 1.0) -> dict[str, Any]:
    """``rounds`` pairs of runs, baseline and current back to back, the order alternating."""
    baseline_commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    current = current_src()
    dirty = [line[3:] for line in _git("status", "--porcelain", "--", ".", cwd=current).splitlines()]
    results: dict[str, Any] = {
        "against": ref, "baseline_commit": baseline_commit, "current_src": str(current),
        "current_commit": _git("rev-parse", "HEAD", cwd=current),
        # the current side is that src as it is, uncommitted edits included
        "current_uncommitted_src": dirty, "seconds": seconds, "rounds": rounds, "warmup": warmup,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    got: dict[str, dict[str, list[float]]] = {
        side: {"rate": [], "engine": [], "redis": []} for side in ("baseline", "current")}
    with worktree(baseline_commit) as tree:
        sides = {"baseline": tree / "src", "current": current}
        for i in range(rounds):
            order = ("baseline", "current") if i % 2 == 0 else ("current", "baseline")
            for name in order:
                try:
                    one = measure(sides[name], seconds, warmup)
                except RuntimeError as exc:  # a child that hung (seen once in a while on 251bfc4's side)
                    print(f"  {name} run failed, measured again: {str(exc).splitlines()[0]}", flush=True)
                    one = measure(sides[name], seconds, warmup)
                got[name]["rate"].append(one["turns_per_s"])
                got[name]["engine"].append(one["engine_cpu_us_per_turn"])
                got[name]["redis"].append(one["redis_cpu_us_per_turn"])
            b, c = got["baseline"], got["current"]
            print(f"  round {i + 1}/{rounds} ({order[0]} first): baseline {b['rate'][-1]:,.0f} turns/s, "
                  f"current {c['rate'][-1]:,.0f} turns/s, ratio {c['rate'][-1] / b['rate'][-1]:.3f}; engine CPU "
                  f"{b['engine'][-1]:.0f} / {c['engine'][-1]:.0f} us per turn, redis "
                  f"{b['redis'][-1]:.0f} / {c['redis'][-1]:.0f}", flush=True)
    baselines, currents = got["baseline"]["rate"], got["current"]["rate"]
    ratios = [c / b for c, b in zip(currents, baselines, strict=True)]
    results.update(
        baseline_turns_per_s=round(statistics.median(baselines), 1),
        current_turns_per_s=round(statistics.median(currents), 1),
        ratio_current_over_baseline=round(statistics.median(ratios), 4),
        # the middle half of the per-round ratios: how far the neighbours' load moved them
        ratio_quartiles=[round(q, 4) for q in statistics.quantiles(ratios, n=4)] if len(ratios) > 1 else ratios,
        ratio_min=round(min(ratios), 4),
        ratio_max=round(max(ratios), 4),
        ratio_floor=0.95,
        within_5_percent=statistics.median(ratios) >= 0.95,
        baseline_rounds=[round(x, 1) for x in baselines],
        current_rounds=[round(x, 1) for x in currents],
        ratios=[round(x, 4) for x in ratios],
        # medians over the rounds: CPU microseconds per turn, of the engine process and of redis-server
        engine_cpu_us_per_turn={side: round(statistics.median(v["engine"]), 1) for side, v in got.items()},
        redis_cpu_us_per_turn={side: round(statistics.median(v["redis"]), 1) for side, v in got.items()},
        engine_cpu_ratio_current_over_baseline=_median_ratio(got["current"]["engine"], got["baseline"]["engine"]),
        redis_cpu_ratio_current_over_baseline=_median_ratio(got["current"]["redis"], got["baseline"]["redis"]),
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    return results


def _median_ratio(current: list[float], baseline: list[float]) -> float:
    return round(statistics.median(c / b for c, b in zip(current, baseline, strict=True)), 4)


async def _redis_cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _child(url: str, seconds: float, warmup: float) -> dict[str, Any]:
    import redis.asyncio as aioredis

    import statefleet
    from statefleet import Engine, EngineSettings, open_store

    from .engine import CONCURRENCY, engine_rate, noop_agent

    store = await open_store(url)
    client = aioredis.Redis.from_url(url)
    async with Engine(noop_agent(), store, EngineSettings(publish_tokens=False)) as engine:
        convs = [f"c{i}" for i in range(1000)]
        await engine_rate(engine, warmup, convs)  # scripts loaded, conversations exist
        cpu, redis_cpu = time.process_time(), await _redis_cpu(client)
        rate = await engine_rate(engine, seconds, convs)
        cpu, redis_cpu = time.process_time() - cpu, await _redis_cpu(client) - redis_cpu
    await client.aclose()
    await store.close()
    turns = rate * seconds
    # CPU per turn moves less than turns/s when other work shares the machine (it is the cost, not the rate)
    return {"turns_per_s": rate, "engine_cpu_us_per_turn": cpu / turns * 1e6,
            "redis_cpu_us_per_turn": redis_cpu / turns * 1e6, "concurrency": CONCURRENCY,
            "statefleet": str(Path(statefleet.__file__).parent)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.against")
    parser.add_argument("--child", nargs=3, metavar=("URL", "SECONDS", "WARMUP"), required=True)
    args = parser.parse_args()
    url, seconds, warmup = args.child
    print(json.dumps(asyncio.run(_child(url, float(seconds), float(warmup)))))


if __name__ == "__main__":
    main()
