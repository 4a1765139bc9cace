"""Engine benchmark (issue: turn engine and state stores).

In one run, against one fresh local redis-server:
- floor: one raw EVALSHA round trip per "turn" from redis-py (the same client library), 50 concurrent tasks;
- engine: ``Engine.send`` with a no-op handler, window 5, 50 concurrent conversations;
  floor and engine alternate ``--rounds`` times; the ratio is the median of the per-round ratios;
- round trips per uncontended turn, counted by the server (INFO commandstats);
- turns/s with 1,000 and with 1,000,000 stored conversations (cloned server-side), same workload;
- Redis memory per idle conversation with 5 utterances of 100 bytes (MEMORY USAGE over its keys).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

import redis.asyncio as aioredis

from statefleet import Agent, Engine, EngineSettings, Turn, open_store

from ._servers import redis_server

CONCURRENCY = 50


def noop_agent(window: int = 5) -> Agent:
    agent = Agent("noop", history_window=window)

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.reply("ok")

    return agent


async def floor_rate(url: str, seconds: float) -> float:
    client = aioredis.Redis.from_url(url)
    sha = await client.script_load("return redis.call('HINCRBY', KEYS[1], 'n', 1)")
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        key = f"floor:{{{i}}}"
        while time.perf_counter() < stop:
            await client.evalsha(sha, 1, key)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    rate = done / (time.perf_counter() - start)
    await client.aclose()
    return rate


async def engine_rate(engine: Engine, seconds: float, conversations: list[str]) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        rng = random.Random(i)
        while time.perf_counter() < stop:
            await engine.send(rng.choice(conversations), "hello")
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    return done / (time.perf_counter() - start)


async def round_trips_per_turn(url: str, engine: Engine, turns: int = 500) -> dict[str, float]:
    """Commands the client sent per uncontended turn, as Redis counts them (scripts count once: EVALSHA;
    the commands a script runs inside Redis are not round trips), and as the store counts them."""
    client = aioredis.Redis.from_url(url)
    store_stats = engine.store.stats  # type: ignore[attr-defined]
    before = store_stats.round_trips
    await client.config_resetstat()
    for i in range(turns):
        await engine.send(f"rt-{i}", "hello")
    stats = await client.info("commandstats")
    await client.aclose()
    scripts = sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    return {"server_counted": scripts / turns, "store_counted": (store_stats.round_trips - before) / turns}


async def clone_conversations(url: str, template: str, count: int) -> None:
    """Store ``count`` copies of a real conversation server-side (COPY), in chunks."""
    client = aioredis.Redis.from_url(url)
    keys = sorted(k.decode() for k in await client.keys(f"*{{default:{template}}}*"))
    script = client.register_script(
        """
        local n0, n1 = tonumber(ARGV[1]), tonumber(ARGV[2])
        for i = n0, n1 do
          for j = 1, #KEYS do
            local dst = string.gsub(KEYS[j], "{default:[^}]*}", "{default:s" .. i .. "}")
            redis.call('COPY', KEYS[j], dst, 'REPLACE')
          end
        end
        return n1
        """
    )
    # Not part of idle state: events expire on their own (1 h), and so do the outcome receipts every commit
    # writes (one per message, outcome_ttl 60 s; a busy template has hundreds).
    keys = [k for k in keys if not k.endswith(":e") and ":r:" not in k]
    chunk = 20_000
    for start in range(1, count, chunk):
        await script(keys=keys, args=[start, min(start + chunk, count) - 1])
    await client.aclose()


async def wait_for_rehash(client: aioredis.Redis, timeout: float = 120.0) -> None:
    """Wait until Redis is not rehashing its key or expiry table (``DEBUG HTSTATS`` shows no second table)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await client.execute_command("DEBUG", "HTSTATS", "0")
        text = stats.decode() if isinstance(stats, bytes) else str(stats)
        if "Hash table 1" not in text:  # the second table exists only while a table (keys or expires) rehashes
            return
        await asyncio.sleep(0.5)


async def idle_memory(url: str, engine: Engine) -> dict[str, Any]:
    text = "x" * 100
    for _ in range(3):
        await engine.send("idle-mem", text)
    client = aioredis.Redis.from_url(url)
    keys = [k.decode() for k in await client.keys("*{default:idle-mem}*")]
    usage = {k: int(await client.memory_usage(k, samples=0) or 0) for k in keys}
    await client.aclose()
    without_events = sum(v for k, v in usage.items() if not k.endswith(":e"))
    # Idle = after the outcome receipts (outcome_ttl, 60 s) expired: what stays for the conversation's life.
    idle = sum(v for k, v in usage.items() if not k.endswith(":e") and ":m:" not in k)
    return {"keys": usage, "bytes_without_event_log": without_events, "bytes_idle": idle,
            "bytes_total": sum(usage.values())}


async def run(seconds: float = 3.0, rounds: int = 3, big: int = 1_000_000) -> dict[str, Any]:
    results: dict[str, Any] = {"concurrency": CONCURRENCY, "seconds": seconds, "rounds": rounds}
    with redis_server() as url:
        store = await open_store(url)
        settings = EngineSettings(publish_tokens=False)
        async with Engine(noop_agent(), store, settings) as engine:
            convs = [f"c{i}" for i in range(1000)]
            await engine_rate(engine, 0.5, convs)  # warm up (scripts loaded, conversations exist)
            floors, engines = [], []
            for _ in range(rounds):
                floors.append(await floor_rate(url, seconds))
                engines.append(await engine_rate(engine, seconds, convs))
            ratios = [e / f for e, f in zip(engines, floors, strict=True)]
            results.update(
                floor_evalsha_per_s=statistics.median(floors),
                engine_turns_per_s=statistics.median(engines),
                ratio=statistics.median(ratios),
                ratio_target=0.4,
            )
            results["round_trips_per_uncontended_turn"] = await round_trips_per_turn(url, engine)
            results["idle_memory"] = await idle_memory(url, engine)
            # scaling: the same workload on 1,000 conversations when 1,000 are stored, and on 1,000 sampled from
            # `big` stored ones; measured alternately after the clone (and after Redis finished rehashing its
            # grown key table, which it does incrementally and would otherwise be charged to the big case)
            await clone_conversations(url, "c0", big)
            client = aioredis.Redis.from_url(url)
            results["stored_keys"] = int(await client.dbsize())
            results["used_memory_mb"] = round(int((await client.info("memory"))["used_memory"]) / 2**20, 1)
            await wait_for_rehash(client)
            await client.aclose()
            sample = [f"s{random.randrange(1, big)}" for _ in range(1000)]
            await engine_rate(engine, seconds, sample)  # warm up the sampled conversations
            smalls, larges = [], []
            for _ in range(rounds):
                smalls.append(await engine_rate(engine, seconds, convs))
                larges.append(await engine_rate(engine, seconds, sample))
            results.update(
                turns_per_s_1k_stored=statistics.median(smalls),
                turns_per_s_1m_stored=statistics.median(larges),
                scaling_ratio=statistics.median([b / a for a, b in zip(smalls, larges, strict=True)]),
                scaling_target=0.9,
            )
        await store.close()
    return results
