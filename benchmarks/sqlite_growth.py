"""SQLite file size under sustained keyed traffic (issue 11): does the file stop growing once TTLs pass?

``python -m benchmarks.sqlite_growth [--minutes 10] [--rate 100] [--quick]``

One engine on a fresh SQLite file in a temporary directory. An agent that keeps a small state and replies with
~200 bytes gets ``rate`` messages a second, paced on a fixed schedule (open loop, at most ``--concurrency`` in
flight), each with a fresh Idempotency-Key. Messages go to ``--active`` conversations at a time; each
conversation gets ``--turns`` of them and is then left idle for good, so new conversations start all the time
and old ones expire. Every ``--every`` seconds a separate read-only connection samples the file (the .db plus
its -wal), the pages SQLite uses and keeps free (it reuses free pages, so a bounded store plateaus rather than
shrinks) and the rows of each table.

The TTLs are short, so that steady state comes within the run: idempotency 60 s, receipts 60 s, outcomes 30 s,
conversations 90 s, event logs 60 s (the defaults are 24 h / 600 s / 60 s / 7 days / 1 h). Expiry and cleanup
are the same whatever the TTLs; only the time to reach steady state and the rows held there change.

The verdict compares the file's growth over the last third of the run with the middle third (and the first),
and the most receipt rows seen with the steady state the TTLs imply. Writes
benchmarks/results/sqlite_growth.json (sqlite_growth-quick.json with ``--quick``: 2 minutes, TTLs of 10-20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import resource
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from statefleet import Agent, Engine, EngineSettings, Turn, open_store
from statefleet.errors import StatefleetError
from statefleet.store import sqlite as sqlite_store

from ._machine import machine
from .openloop import summary_ms

RESULTS = Path(__file__).with_name("results")
TABLES = ("conversations", "inbox", "receipts", "events", "event_logs")
#: ~200 bytes of reply text per turn.
REPLY = ("Your order is being prepared and should ship within two business days. You will get a tracking "
         "link by email as soon as the carrier picks it up; reply here if anything about it looks wrong.")


@dataclass(frozen=True)
class Ttls:
    """The engine's TTLs for the run (s): short, so that steady state comes within minutes."""

    idempotency: float = 60.0
    receipt: float = 60.0
    outcome: float = 30.0
    conversation: float = 90.0
    events: float = 60.0


QUICK_TTLS = Ttls(idempotency=15.0, receipt=15.0, outcome=10.0, conversation=20.0, events=15.0)


def growth_agent() -> Agent:
    """Counts its turns and remembers the last message's length in ``state``; replies with ~200 bytes."""
    agent = Agent("growth", version="v1", history_window=6)

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.state["turns"] = turn.state.get("turns", 0) + 1
        turn.state["last_length"] = len(turn.text)
        turn.reply(REPLY, data={"turn": turn.turn})

    return agent


def sample_file(path: Path) -> dict[str, int]:
    """Sizes, pages and row counts of the store at ``path``, read through a connection of its own.

    The read transaction lasts a few milliseconds: a reader that stayed would keep checkpoints from
    restarting the WAL, and the WAL would grow because of the benchmark.
    """
    wal = Path(f"{path}-wal")
    sample = {"db_bytes": os.path.getsize(path), "wal_bytes": os.path.getsize(wal) if wal.exists() else 0}
    sample["file_bytes"] = sample["db_bytes"] + sample["wal_bytes"]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        sample.update(page_size=page_size, page_count=page_count, freelist_count=free,
                      pages_bytes=page_count * page_size, used_bytes=(page_count - free) * page_size)
        conn.execute("BEGIN")
        for table in TABLES:
            sample[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        conn.execute("COMMIT")
    finally:
        conn.close()
    return sample


class Traffic:
    """Keyed messages at a fixed rate over rotating conversations, and what came of them."""

    def __init__(self, engine: Engine, rate: float, *, active: int, turns: int, concurrency: int) -> None:
        self.engine = engine
        self.rate = rate
        self.active = active
        self.turns = turns
        self.slots = asyncio.Semaphore(concurrency)
        self.run_id = uuid.uuid4().hex[:8]
        self.sent = 0
        self.committed = 0
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.max_lag = 0.0
        self.tasks: set[asyncio.Task[None]] = set()

    def conversation_of(self, i: int) -> str:
        """Message ``i``'s conversation: ``active`` at a time, one message a round each, ``turns`` rounds."""
        slot, round_ = i % self.active, i // self.active
        return f"c{slot}-{round_ // self.turns}"

    async def send_for(self, seconds: float) -> None:
        start = time.perf_counter()
        i = 0
        while (due := start + i / self.rate) < start + seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.slots.acquire()  # when the engine falls behind, the schedule slips: max_lag shows it
            self.max_lag = max(self.max_lag, time.perf_counter() - due)
            task = asyncio.create_task(self.send_one(i, due))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            i += 1
        if self.tasks:
            await asyncio.wait(self.tasks)

    async def send_one(self, i: int, due: float) -> None:
        self.sent += 1
        try:
            await self.engine.send(self.conversation_of(i), f"where is my order? ({i})",
                                   idempotency_key=f"{self.run_id}-{i}", timeout=60.0)
        except StatefleetError as exc:
            self.errors[type(exc).__name__] += 1
        else:
            self.committed += 1
            self.latencies.append(time.perf_counter() - due)
        finally:
            self.slots.release()


async def sample_every(path: Path, traffic: Traffic, every: float, started: float,
                       samples: list[dict[str, Any]]) -> None:
    while True:
        sample = await asyncio.to_thread(sample_file, path)
        samples.append({"t": round(time.perf_counter() - started, 1), "sent": traffic.sent,
                        "committed": traffic.committed, **sample})
        await asyncio.sleep(every - (time.perf_counter() - started) % every)


async def run(minutes: float, rate: float, ttls: Ttls, *, active: int, turns: int, concurrency: int,
              every: float) -> dict[str, Any]:
    seconds = minutes * 60
    settings = EngineSettings(idempotency_ttl=ttls.idempotency, receipt_ttl=ttls.receipt, outcome_ttl=ttls.outcome,
                              conversation_ttl=ttls.conversation, events_ttl=ttls.events)
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sf-sqlite-growth-") as workdir:
        path = Path(workdir) / "state.db"
        store = await open_store(f"sqlite:///{path}")
        try:
            async with Engine(growth_agent(), store, settings) as engine:
                traffic = Traffic(engine, rate, active=active, turns=turns, concurrency=concurrency)
                usage = resource.getrusage(resource.RUSAGE_SELF)
                started = time.perf_counter()
                sampler = asyncio.create_task(sample_every(path, traffic, every, started, samples))
                try:
                    await traffic.send_for(seconds)
                finally:
                    sampler.cancel()
                elapsed = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_SELF)
                final = await asyncio.to_thread(sample_file, path)
                samples.append({"t": round(elapsed, 1), "sent": traffic.sent, "committed": traffic.committed,
                                **final})
        finally:
            await store.close()
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {
        "minutes": minutes, "rate": rate, "ttls_s": asdict(ttls),
        "active_conversations": active, "turns_per_conversation": turns, "concurrency": concurrency,
        "cleanup": {"interval_s": sqlite_store.CLEANUP_INTERVAL, "batch": sqlite_store.CLEANUP_BATCH},
        "sent": traffic.sent, "committed": traffic.committed, "errors": dict(traffic.errors),
        "elapsed_s": round(elapsed, 1), "achieved_rate": round(traffic.committed / elapsed, 1),
        "max_send_lag_ms": round(traffic.max_lag * 1000, 1), "latency": summary_ms(traffic.latencies),
        "cpu_share_of_one_core": round(cpu / elapsed, 2),
        "verdict": verdict(samples, traffic.committed / elapsed, ttls, turns, active),
        "samples": samples,
    }


def _at(samples: list[dict[str, Any]], t: float) -> dict[str, Any]:
    return min(samples, key=lambda s: abs(s["t"] - t))


def verdict(samples: list[dict[str, Any]], rate: float, ttls: Ttls, turns: int, active: int) -> dict[str, Any]:
    """The file's growth per third of the run, and the rows held against the steady state the TTLs imply."""
    # A conversation takes `turns` messages, one every active / rate seconds, then idles until it expires.
    new_conversations, active_span = rate / turns, (turns - 1) * active / rate
    end = samples[-1]["t"]
    marks = [_at(samples, end * k / 3) for k in range(4)]
    per_third: dict[str, Any] = {}
    for name, (a, b) in zip(("first", "middle", "last"), itertools.pairwise(marks), strict=True):
        span = samples[samples.index(a): samples.index(b) + 1]
        per_third[name] = {
            "from_s": a["t"], "to_s": b["t"],
            "file_bytes_per_min": round((b["file_bytes"] - a["file_bytes"]) / max(b["t"] - a["t"], 1) * 60),
            "max_file_bytes": max(s["file_bytes"] for s in span),
            "max_used_bytes": max(s["used_bytes"] for s in span),
        }
    middle, last = per_third["middle"]["max_file_bytes"], per_third["last"]["max_file_bytes"]
    # Steady state: one key receipt per message for idempotency_ttl and one outcome per message for
    # outcome_ttl; cleanup runs every CLEANUP_INTERVAL, so up to that much more of each may wait for it.
    receipts_theory = rate * (ttls.idempotency + ttls.outcome)
    receipts_slack = 2 * rate * sqlite_store.CLEANUP_INTERVAL
    receipts_max = max(s["receipts"] for s in samples)
    longest = max(ttls.idempotency + ttls.outcome, ttls.conversation, ttls.events)
    return {
        "file_growth": per_third,
        "last_vs_middle_max_file": round(last / middle, 3),
        # "stops growing": the last third's high-water mark is within 2% of the middle third's.
        "file_stops_growing": last <= middle * 1.02,
        "receipts_max": receipts_max,
        "receipts_steady_state_theory": round(receipts_theory),
        "receipts_max_vs_theory": round(receipts_max / receipts_theory, 2),
        "receipts_cleanup_slack": round(receipts_slack),
        "receipts_within_theory_plus_cleanup_slack": receipts_max <= receipts_theory + receipts_slack,
        "conversations_steady_state_theory": round(new_conversations * (active_span + ttls.conversation)),
        "conversations_max": max(s["conversations"] for s in samples),
        "steady_state_expected_after_s": longest + 2 * sqlite_store.CLEANUP_INTERVAL,
    }


def print_summary(result: dict[str, Any], path: Path) -> None:
    v = result["verdict"]
    interval = f"{sqlite_store.CLEANUP_INTERVAL:g} s"
    print(f"== sqlite_growth ({path})")
    print(f"  {result['rate']:g} keyed msg/s asked for {result['minutes']:g} min; committed {result['committed']} of "
          f"{result['sent']} sent ({result['achieved_rate']} /s), errors {result['errors'] or 0}, max send lag "
          f"{result['max_send_lag_ms']} ms, latency p50/p99 {result['latency']['p50_ms']}/{result['latency']['p99_ms']}"
          f" ms, engine+client CPU {result['cpu_share_of_one_core']:.0%} of a core")
    print(f"  TTLs (s) {result['ttls_s']} -- short on purpose; defaults 24 h / 600 s / 60 s / 7 d / 1 h")
    print(f"  {'t s':>6} {'file MB':>8} {'db MB':>7} {'wal MB':>7} {'free pg':>8} " +
          " ".join(f"{t:>13}" for t in TABLES))
    for s in result["samples"]:
        print(f"  {s['t']:6.0f} {s['file_bytes'] / 1e6:8.2f} {s['db_bytes'] / 1e6:7.2f} {s['wal_bytes'] / 1e6:7.2f} "
              f"{s['freelist_count']:8} " + " ".join(f"{s[t]:13}" for t in TABLES))
    for name, third in v["file_growth"].items():
        print(f"  {name:6} third {third['from_s']:5.0f}-{third['to_s']:4.0f} s: {third['file_bytes_per_min']:+,} "
              f"bytes/min, max file {third['max_file_bytes'] / 1e6:.2f} MB")
    print(f"  file stops growing: {v['file_stops_growing']} (last third's max / middle third's: "
          f"{v['last_vs_middle_max_file']})")
    print(f"  receipts max {v['receipts_max']} vs steady state ~{v['receipts_steady_state_theory']} "
          f"= rate x (idempotency_ttl + outcome_ttl), {v['receipts_max_vs_theory']}x; within it plus "
          f"{v['receipts_cleanup_slack']} waiting for the next cleanup (2 x rate x {interval}): "
          f"{v['receipts_within_theory_plus_cleanup_slack']}")
    print(f"  conversations max {v['conversations_max']} vs ~{v['conversations_steady_state_theory']} "
          "(new conversations/s x (their active span + conversation_ttl))")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sqlite_growth", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="keyed messages per second")
    parser.add_argument("--active", type=int, default=None, help="conversations in use at once (default: rate)")
    parser.add_argument("--turns", type=int, default=5, help="messages per conversation")
    parser.add_argument("--concurrency", type=int, default=256, help="messages in flight at most")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--quick", action="store_true", help="2 minutes with TTLs of 10-20 s (a smoke run)")
    args = parser.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    ttls = QUICK_TTLS if args.quick else Ttls()
    meta = {"quick": args.quick, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version, **machine()}
    result = asyncio.run(run(minutes, args.rate, ttls, active=args.active or max(1, round(args.rate)),
                             turns=args.turns, concurrency=args.concurrency, every=args.every))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"sqlite_growth{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps({**meta, **result}, indent=2) + "\n")
    print_summary({**meta, **result}, path)


if __name__ == "__main__":
    main()
