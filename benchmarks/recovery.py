"""Recovery benchmark (issue 12): an instance holding N leases is killed -9; how fast do two survivors take
all its conversations over?

``python -m benchmarks recovery [--quick] [--conversations N]`` (N 10,000 by default, 1,000 with --quick).

One fresh local redis-server; three engine processes (``benchmarks/_recovery_worker.py``, each an ``Engine``
with the default settings: lease TTL 3 s, sweep every 1 s, ``sweep_batch`` 1,000, ``sweep_parallelism`` 64;
JSON logs at level info to a file, as ``statefleet serve`` writes them). The victim's handler never returns and
its ``max_in_flight`` is above N; the survivors' handler replies at once.

1. N messages to N distinct conversations through the victim, 1,000 at a time (each chunk once the store counts
   the previous ones pending; ``python -m benchmarks.recovery --burst`` sends all at once), then one lease TTL
   of renewals (steady state). The conversations the victim holds at the kill (leased to it, one message
   pending) are the ones measured; leases a live victim lost to the survivors are counted apart.
2. ``kill -9`` the victim (wall time t0) and read each lease's expiry from the store (server clock, ms).
3. Wait until every conversation has committed its message (``turns == 1``, nothing pending, lease free).

Times are wall-clock on this one machine (Redis' ``TIME``, the survivors' ``time.time()`` and t0 share the
clock): the survivors note each takeover, the start of its turn and its commit; the store's ``active_at`` of
each conversation is its commit, as Redis timed it. Reported: time from the kill to the last lease expiry, the
last takeover and the last commit; takeover delay after the lease expired (p50/p99/max); takeovers per
survivor; whether all N committed within lease TTL + 5 s of the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from statefleet import EngineSettings, open_store
from statefleet.store import ConversationKey
from statefleet.store.base import Store
from statefleet.testing.engine_process import EngineProcess

from ._servers import redis_server

WORKER = Path(__file__).with_name("_recovery_worker.py")
TENANT = "default"


def pct(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def _spawn(url: str, workdir: Path, name: str, *argv: str) -> EngineProcess:
    return await EngineProcess.spawn(WORKER, ["--store", url, *argv], log=workdir / f"{name}.log")


async def _load_all(store: Store, convs: list[str]) -> dict[str, Any]:
    views = await asyncio.gather(*[store.load(ConversationKey(TENANT, c)) for c in convs])
    return dict(zip(convs, views, strict=True))


async def _lease_expiries(url: str, convs: list[str]) -> dict[str, tuple[str | None, float]]:
    """Each conversation's lease owner and expiry (wall seconds), read straight from its meta hash."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        pipe = client.pipeline(transaction=False)
        for c in convs:
            pipe.hmget(f"sf:{{{TENANT}:{c}}}:m", "o", "x")
        rows = await pipe.execute()
    finally:
        await client.aclose()
    return {c: (owner, int(expiry or 0) / 1000) for c, (owner, expiry) in zip(convs, rows, strict=True)}


async def _wait_committed(store: Store, convs: list[str], timeout: float) -> tuple[dict[str, Any], float]:
    """Poll until every conversation committed its message; the views, and the wall time it was seen.

    The figures do not depend on this loop's cadence: they come from the store's and the survivors' times. It
    polls the cheap backlog (16 ZCARDs) and loads only the conversations not yet seen done, when the backlog
    reads 0 and at least every 5 s."""
    done: dict[str, Any] = {}
    remaining = list(convs)
    deadline = time.monotonic() + timeout
    next_scan = time.monotonic() + 5.0
    while remaining:
        if time.monotonic() > deadline:
            break
        backlog = await store.backlog()
        if backlog == 0 or time.monotonic() >= next_scan:
            views = await _load_all(store, remaining)
            for c, v in views.items():
                if v is not None and v.turns >= 1 and v.pending == 0 and v.lease_owner is None:
                    done[c] = v
            remaining = [c for c in remaining if c not in done]
            next_scan = time.monotonic() + 5.0
        if remaining:
            await asyncio.sleep(0.1)
    return done, time.time()


def _read_records(path: Path) -> dict[str, dict[str, float]]:
    """kind -> conversation -> wall time (the first of each kind)."""
    out: dict[str, dict[str, float]] = {"takeover": {}, "start": {}, "commit": {}}
    if path.exists():
        for line in path.read_text().splitlines():
            if line:
                kind, conv, when = json.loads(line)
                out[kind].setdefault(conv, when)
    return out


def _store_ops(lines: list[str]) -> dict[str, int]:
    for line in reversed(lines):
        if line.startswith('{"store_ops"'):
            return dict(json.loads(line)["store_ops"] or {})
    return {}


def _other_warnings(lines: list[str]) -> list[str]:
    return [line[:300] for line in lines
            if '"level": "' in line and '"level": "info"' not in line and "took over conversation" not in line]


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": round(min(values), 3), "p50": round(pct(values, 0.5), 3), "p99": round(pct(values, 0.99), 3),
            "max": round(max(values), 3)}


def _code_measured() -> dict[str, str]:
    """Where the engines' ``statefleet`` comes from (they inherit this process's ``PYTHONPATH``), and its commit."""
    import statefleet

    src = Path(statefleet.__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
    return {"statefleet_src": str(src), "commit": head}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def _send(victim: EngineProcess, store: Store, convs: list[str], chunk: int, timeout: float,
                ) -> list[asyncio.Future[Any]]:
    """Send one message to each conversation through the victim, ``chunk`` at a time: the next chunk goes once
    the store counts the previous ones pending (or after ``timeout``)."""
    sends: list[asyncio.Future[Any]] = []
    deadline = time.monotonic() + timeout
    for first in range(0, len(convs), chunk):
        part = convs[first:first + chunk]
        sends += [asyncio.ensure_future(victim.request("send", timeout=3600.0, conv=c, text=f"hello {c}"))
                  for c in part]
        while await store.backlog() < first + len(part):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    return sends


async def run(conversations: int = 10_000, *, chunk: int = 1000, timeout: float = 300.0) -> dict[str, Any]:
    """The benchmark; ``chunk``: messages sent to the victim at once (``conversations`` for one burst)."""
    settings = EngineSettings()
    ttl = settings.lease_ttl
    convs = [f"r{i}" for i in range(conversations)]
    results: dict[str, Any] = {
        "conversations": conversations, "sent_in_chunks_of": chunk, "lease_ttl": ttl,
        "heartbeat": settings.heartbeat, "sweep_interval": settings.sweep_interval,
        "sweep_batch": settings.sweep_batch, "sweep_parallelism": settings.sweep_parallelism,
        "target_seconds": ttl + 5.0, "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    results.update(_code_measured())
    workdir = Path(tempfile.mkdtemp(prefix="statefleet-recovery-"))  # kept when the run fails: the logs
    try:
        return await _run(conversations, convs, chunk, timeout, settings, results, workdir)
    except BaseException:
        print(f"recovery: the engines' logs are kept in {workdir}", file=sys.stderr)
        raise


async def _run(conversations: int, convs: list[str], chunk: int, timeout: float, settings: EngineSettings,
               results: dict[str, Any], workdir: Path) -> dict[str, Any]:
    ttl = settings.lease_ttl
    with redis_server() as url:
        store = await open_store(url)
        victim = await _spawn(url, workdir, "victim", "--block", "--max-in-flight", str(conversations + 100))
        records = [workdir / "survivor-a.jsonl", workdir / "survivor-b.jsonl"]
        survivors = list(await asyncio.gather(
            _spawn(url, workdir, "survivor-a", "--record", str(records[0])),
            _spawn(url, workdir, "survivor-b", "--record", str(records[1])),
        ))
        sends: list[asyncio.Future[Any]] = []
        try:
            started = time.monotonic()
            sends = await _send(victim, store, convs, chunk, 120.0)
            results["seconds_to_send"] = round(time.monotonic() - started, 2)
            # the victim renews them all for a while (steady state): one lease TTL
            cpu_before, hold_started = _cpu_seconds(victim.pid), time.monotonic()
            await asyncio.sleep(ttl)
            results["victim_cpu_holding_leases"] = round(
                (_cpu_seconds(victim.pid) - cpu_before) / (time.monotonic() - hold_started), 3)
            before = await _load_all(store, convs)
            held = [c for c, v in before.items() if v is not None and v.lease_owner == victim.instance
                    and v.pending == 1]

            # kill -9, then read where each lease stands (the earliest expires ~lease_ttl - heartbeat later)
            t0 = time.time()
            victim.signal(signal.SIGKILL)
            cpu_survivors = [_cpu_seconds(s.pid) for s in survivors]
            leases = await _lease_expiries(url, held)
            read_leases = time.time() - t0
            expiries = {c: x for c, (owner, x) in leases.items() if owner == victim.instance}

            done, seen_done = await _wait_committed(store, convs, timeout)
            cpu_survivors = [_cpu_seconds(s.pid) - cpu for s, cpu in zip(survivors, cpu_survivors, strict=True)]
            stats = [(await s.request("stats"))["result"] for s in survivors]
        finally:
            for s in [victim, *survivors]:
                await s.close()
            await asyncio.gather(*sends, return_exceptions=True)
        await store.close()
        times = [_read_records(path) for path in records]
        logs = {name: (workdir / f"{name}.log").read_text().splitlines()
                for name in ("victim", "survivor-a", "survivor-b")}
    shutil.rmtree(workdir, ignore_errors=True)

    takeover = {c: when for rec in times for c, when in rec["takeover"].items() if c in expiries}
    start = {c: when for rec in times for c, when in rec["start"].items() if c in expiries}
    commit = {c: v.active_at for c, v in done.items() if c in expiries}
    committed_by: dict[str, int] = {}
    for c in expiries:
        v = done.get(c)
        text = v.history[-1]["text"] if v is not None and v.history else "?"
        committed_by[text] = committed_by.get(text, 0) + 1
    expired = list(expiries.values())
    delays = [takeover[c] - expiries[c] for c in expiries if c in takeover]
    last_commit = max(commit.values()) - t0 if commit else float("nan")
    results.update(
        held_by_victim_at_kill=len(held),
        lost_by_live_victim_before_kill=conversations - len(held),
        victim_lost_lease_log_lines=sum("lost the lease" in line for line in logs["victim"]),
        read_lease_expiries_seconds=round(read_leases, 3),
        first_lease_expiry_after_kill=round(min(expired) - t0, 3) if expired else None,
        last_lease_expiry_after_kill=round(max(expired) - t0, 3) if expired else None,
        first_takeover_after_kill=round(min(takeover.values()) - t0, 3) if takeover else None,
        last_takeover_after_kill=round(max(takeover.values()) - t0, 3) if takeover else None,
        last_turn_start_after_kill=round(max(start.values()) - t0, 3) if start else None,
        last_commit_after_kill=round(last_commit, 3),
        takeover_delay_after_expiry=_summary(delays),
        commit_delay_after_expiry=_summary([commit[c] - expiries[c] for c in expiries if c in commit]),
        takeover_to_commit=_summary([commit[c] - takeover[c] for c in takeover if c in commit]),
        takeovers_per_second=round(len(takeover) / (max(takeover.values()) - min(takeover.values())), 1)
        if len(takeover) > 1 else None,
        taken_over=len(takeover),
        committed=len(commit),
        all_committed=len(done) == conversations,
        all_turns_one=all(v.turns == 1 for v in done.values()),
        # of the conversations the victim held at the kill
        takeovers_per_survivor=[sum(c in expiries for c in rec["takeover"]) for rec in times],
        commits_per_survivor=[committed_by.get(s["instance"], 0) for s in stats],
        # all, including leases taken from the victim while it lived
        takeovers_per_survivor_in_all=[s["takeovers"] for s in stats],
        survivor_cpu_seconds_during_recovery=[round(x, 2) for x in cpu_survivors],
        takeover_log_lines_per_survivor=[sum("took over conversation" in line for line in logs[name])
                                         for name in ("survivor-a", "survivor-b")],
        store_calls_per_survivor=[_store_ops(logs[name]) for name in ("survivor-a", "survivor-b")],
        other_warnings_per_survivor=[len(_other_warnings(logs[name])) for name in ("survivor-a", "survivor-b")],
        other_warnings_sample=[w for name in ("survivor-a", "survivor-b") for w in _other_warnings(logs[name])[:3]],
        seen_done_after_kill=round(seen_done - t0, 3),
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        within_target=len(held) == conversations and len(commit) == conversations and last_commit <= ttl + 5.0,
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recovery", description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=1000, help="messages sent to the victim at once")
    parser.add_argument("--burst", action="store_true", help="send all messages at once (--chunk N)")
    args = parser.parse_args()
    chunk = args.conversations if args.burst else args.chunk
    result = asyncio.run(run(args.conversations, chunk=chunk))
    from .__main__ import report

    report(f"recovery-{args.conversations}" + ("-burst" if args.burst else f"-chunk{chunk}"), result)


if __name__ == "__main__":
    main()
