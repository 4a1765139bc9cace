"""Per-turn costs behind the capacity model in docs/scaling.md: ``python -m benchmarks.costs [--quick] [--no-http]``.

Each section runs against its own fresh local redis-server (``statefleet.testing.LocalRedisServer``, a free
port, never the machine's 6379), so nothing of one section is charged to another. The agent echoes the message
(a ~100-byte text, so the reply is ~100 bytes too) and keeps a small state, with history window 5 and 20:

- **turns**, at concurrency 1 (one turn at a time: uncontended, nothing to batch) and at concurrency 50 (the
  engine saturated, as in ``benchmarks/engine.py``; each of the 50 callers owns its own conversations, so no
  message ever queues behind another). Per turn: the EVALSHA calls Redis received, split by script from the
  store's own count (accept, commit, and the lease-hint updates, which batch across turns under load), the
  commands Redis ran (those inside scripts included, INFO commandstats), Redis CPU (INFO cpu ``used_cpu_user +
  used_cpu_sys``) and time inside scripts (commandstats ``usec``), network bytes (INFO stats
  ``total_net_input_bytes`` / ``total_net_output_bytes``) and the engine process's CPU (``time.process_time``;
  the callers driving it run in the same process and are counted with it);
- **memory** per idle conversation: MEMORY USAGE over its keys once its window is full, and ``used_memory``
  grown per conversation over 20,000 server-side copies (key-table overhead included); an idempotency receipt,
  an outcome receipt, the event log;
- **upkeep**: Redis CPU and calls per second per idle instance (20 engines doing nothing but their sweeper,
  registry and epoch loops), and the Redis CPU of one hint audit (a SCAN of the keyspace) per key stored;
- **heartbeats**: 3,000 turns held open (lease_ttl 3 s, so 3,000 renewals/s, as the engine's own heartbeat
  sends them), Redis and engine CPU per renewal and the memory of a running lease (hint member + inbox); then
  renewals one at a time and single hint updates (nothing to batch: Redis CPU per call);
- **streamed turns**: a paced agent (30 tokens over ~1 s, each written to the event log as by default), 100
  turns at once: Redis calls, CPU and bytes per streamed turn, and an event log at its cap (``events_max``);
- **HTTP** (skipped with ``--no-http``): one ``statefleet serve`` worker (``benchmarks/apps/echo_agent.py:agent``,
  window 5) driven by 32 keep-alive connections from this process; the server's CPU per turn.

Every delta has subtracted from it what the same measurement reads with nothing running: Redis and the engine
idle over the same time (the sweeper's and registry's own calls, Redis's cron) and the INFO calls themselves.
Results: ``benchmarks/results/costs.json`` (``costs-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from statefleet import Agent, Engine, EngineSettings, Turn, open_store
from statefleet.testing import ServeProcess

from ._client import Connection
from ._machine import cpu_seconds, machine
from ._servers import redis_server
from .engine import clone_conversations

RESULTS = Path(__file__).with_name("results")
ROOT = Path(__file__).resolve().parent.parent
#: A typical user message: 100 bytes (the echo agent's reply is the same 100 bytes).
TEXT = "Hi, I ordered running shoes last week and the tracking page has not moved since Monday. Any news yet"
assert len(TEXT.encode()) == 100
CONCURRENCY = 50
HELD_TURNS = 3000


def echo_agent(window: int) -> Agent:
    agent = Agent(f"costs-w{window}", history_window=window)

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.state["name"] = "Alice"
        turn.state["turns"] = int(turn.state.get("turns", 0)) + 1
        turn.reply(turn.text)

    return agent


# --- measuring ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Sample:
    """Counters at one moment (or, after ``minus``, their change over an interval)."""

    wall: float
    engine_cpu: float
    redis_cpu: float
    redis_sys: float
    net_in: float
    net_out: float
    #: INFO commandstats: calls and usec per command (scripts' inner commands included).
    calls: dict[str, float]
    usec: dict[str, float]
    #: The store's own count of script calls, by script (hints: lease-hint batches).
    ops: dict[str, float]

    def minus(self, other: Sample) -> Sample:
        return Sample(
            self.wall - other.wall, self.engine_cpu - other.engine_cpu, self.redis_cpu - other.redis_cpu,
            self.redis_sys - other.redis_sys,
            self.net_in - other.net_in, self.net_out - other.net_out,
            _sub(self.calls, other.calls), _sub(self.usec, other.usec), _sub(self.ops, other.ops),
        )

    def less(self, fixed: Sample, idle: Sample) -> Sample:
        """This interval less one pair of INFO calls (``fixed``) and ``idle``'s rate over this interval's length."""
        k = self.wall / idle.wall if idle.wall > 0 else 0.0

        def num(name: str) -> float:
            return float(getattr(self, name) - getattr(fixed, name) - k * (getattr(idle, name) - getattr(fixed, name)))

        def table(name: str) -> dict[str, float]:
            mine, f, i = getattr(self, name), getattr(fixed, name), getattr(idle, name)
            return {c: v - f.get(c, 0.0) - k * (i.get(c, 0.0) - f.get(c, 0.0)) for c, v in mine.items()}

        return Sample(self.wall, num("engine_cpu"), num("redis_cpu"), num("redis_sys"), num("net_in"), num("net_out"),
                      table("calls"), table("usec"), dict(self.ops))


def _sub(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: v - b.get(k, 0.0) for k, v in a.items() if v - b.get(k, 0.0)}


class Meter:
    """Reads Redis's counters (one ``INFO all``) and this process's (or a server process's) CPU."""

    def __init__(self, client: aioredis.Redis, store: Any = None, pid: int | None = None) -> None:
        self.client = client
        self.store = store
        self.pid = pid
        self.fixed: Sample | None = None
        self.idle: Sample | None = None

    async def read(self) -> Sample:
        info = await self.client.info("all")
        calls = {k[8:]: float(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
        usec = {k[8:]: float(v["usec"]) for k, v in info.items() if k.startswith("cmdstat_")}
        ops = {k: float(v) for k, v in self.store.stats.ops.items()} if self.store is not None else {}
        cpu = cpu_seconds(self.pid) if self.pid is not None else time.process_time()
        return Sample(time.perf_counter(), cpu, float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
                      float(info["used_cpu_sys"]),
                      float(info["total_net_input_bytes"]), float(info["total_net_output_bytes"]), calls, usec, ops)

    async def calibrate(self, idle_seconds: float) -> None:
        """What a measurement reads with nothing happening: one pair of INFO calls, and idle time."""
        a = await self.read()
        b = await self.read()
        self.fixed = b.minus(a)
        a = await self.read()
        await asyncio.sleep(idle_seconds)
        self.idle = (await self.read()).minus(a)

    def net(self, start: Sample, end: Sample) -> Sample:
        assert self.fixed is not None and self.idle is not None
        return end.minus(start).less(self.fixed, self.idle)


def per_unit(d: Sample, units: float, scripts: tuple[str, ...]) -> dict[str, Any]:
    """A measured interval per turn (or per renewal): the figures the model uses."""
    commands = {c: n for c, n in d.calls.items() if c not in ("info",)}
    inner = {c: round(n / units, 2) for c, n in sorted(commands.items(), key=lambda kv: -kv[1])
             if c not in ("evalsha", "eval") and n / units >= 0.05}
    return {
        "count": int(units),
        "per_s": round(units / d.wall, 1),
        "evalsha_calls": round(commands.get("evalsha", 0.0) / units, 3),
        "script_calls_by_store": {s: round(d.ops.get(s, 0.0) / units, 3) for s in scripts},
        "commands_inside_redis": round(sum(n for c, n in commands.items() if c not in ("evalsha", "eval")) / units, 1),
        "commands_inside_redis_by_name": inner,
        "redis_cpu_us": round(d.redis_cpu / units * 1e6, 1),
        "redis_cpu_sys_us": round(d.redis_sys / units * 1e6, 1),
        # wall time inside scripts as Redis clocks it: on a shared VM it includes time the CPU was taken away
        # (it read higher than the whole process's CPU time here), so the model uses redis_cpu_us
        "redis_script_wall_us": round(d.usec.get("evalsha", 0.0) / units, 1),
        "net_in_bytes": round(d.net_in / units),
        "net_out_bytes": round(d.net_out / units),
        "instance_cpu_us": round(d.engine_cpu / units * 1e6, 1),
        "redis_cpu_share": round(d.redis_cpu / d.wall, 3),
        "instance_cpu_share": round(d.engine_cpu / d.wall, 3),
    }


# --- turns -------------------------------------------------------------------------------------------------------

async def drive(engine: Engine, convs: list[str], concurrency: int, *, turns: int = 0, seconds: float = 0.0) -> int:
    """``concurrency`` callers, caller i cycling over its own share ``convs[i::concurrency]``; stops after
    ``turns`` turns in all, or after ``seconds``. Returns the turns done."""
    done = 0
    stop = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        nonlocal done
        mine = convs[i::concurrency]
        n = 0
        while (done < turns) if turns else (time.perf_counter() < stop):
            done += 1
            await engine.send(mine[n % len(mine)], TEXT)
            n += 1

    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return done


async def keys_of(client: aioredis.Redis, conv: str) -> dict[str, int]:
    keys = [k.decode() async for k in client.scan_iter(match=f"sf:{{default:{conv}}}:*", count=1000)]
    return {k: int(await client.memory_usage(k, samples=0) or 0) for k in keys}


async def idle_memory(client: aioredis.Redis, url: str, engine: Engine, window: int, prefix: str) -> dict[str, Any]:
    conv = f"{prefix}-idle"
    for _ in range(window // 2 + 1):  # window full: 2 utterances a turn
        await engine.send(conv, TEXT)
    usage = await keys_of(client, conv)
    kinds: dict[str, list[int]] = {}
    for key, size in usage.items():
        kind = key.rsplit("}:", 1)[1]
        kind = "r:m" if kind.startswith("r:m:") else "r:k" if kind.startswith("r:k:") else kind
        kinds.setdefault(kind, []).append(size)
    idle = sum(sum(kinds.get(k, [])) for k in ("m", "h", "s"))
    stream = f"sf:{{default:{conv}}}:e"
    keyed = f"{prefix}-keyed"
    await engine.send(keyed, TEXT, idempotency_key="k-0123456789abcdef")  # a 22-byte key, as a UUID-ish client's
    keyed_usage = await keys_of(client, keyed)
    # used_memory per conversation: 20,000 server-side copies of this one (meta, history, state; not its event
    # log and receipts, which expire on their own), key-table growth included.
    before = int((await client.info("memory"))["used_memory"])
    copies = 20_000
    await clone_conversations(url, conv, copies + 1)
    after = int((await client.info("memory"))["used_memory"])
    return {
        "window": window,
        "utterance_bytes": len(TEXT),
        "bytes_idle_conversation": idle,
        "bytes_by_key": {k: sum(v) for k, v in kinds.items() if k in ("m", "h", "s")},
        "used_memory_per_copy": round((after - before) / copies),
        "event_log_bytes": usage.get(stream, 0),
        "event_log_entries": int(await client.xlen(stream)),
        "outcome_receipt_bytes": round(sum(kinds.get("r:m", [0])) / max(1, len(kinds.get("r:m", [])))),
        "idempotency_receipt_bytes": sum(v for k, v in keyed_usage.items() if ":r:k:" in k),
    }


async def turn_costs(window: int, quick: bool) -> dict[str, Any]:
    pool = 200 if quick else 1000
    uncontended_turns = 300 if quick else 3000
    seconds = 1.5 if quick else 6.0
    out: dict[str, Any] = {"window": window}
    with redis_server() as url:
        store = await open_store(url)
        client = aioredis.Redis.from_url(url)
        out["redis_version"] = (await client.info("server"))["redis_version"]
        async with Engine(echo_agent(window), store, EngineSettings()) as engine:
            convs = [f"w{window}-c{i}" for i in range(pool)]
            for _ in range(window // 2 + 1):  # every window full before measuring
                await drive(engine, convs, CONCURRENCY, turns=pool)
            meter = Meter(client, store)
            await meter.calibrate(1.0 if quick else 3.0)
            scripts = ("accept", "commit", "hints", "append_events")
            start = await meter.read()
            n = await drive(engine, convs, 1, turns=uncontended_turns)
            out["concurrency_1"] = per_unit(meter.net(start, await meter.read()), n, scripts)
            start = await meter.read()
            n = await drive(engine, convs, CONCURRENCY, seconds=seconds)
            out[f"concurrency_{CONCURRENCY}"] = per_unit(meter.net(start, await meter.read()), n, scripts)
            out["idle_redis_cpu_share"] = round(meter.idle.redis_cpu / meter.idle.wall, 4)  # type: ignore[union-attr]
            out["memory"] = await idle_memory(client, url, engine, window, f"w{window}")
            out["audit"] = await audit_cost(client, store)
        await client.aclose()
        await store.close()
    return out


async def audit_cost(client: aioredis.Redis, store: Any) -> dict[str, Any]:
    """Redis CPU of one hint audit (``RedisStore.repair_hints``: SCAN of every key for inboxes) per key stored."""
    keys = int(await client.dbsize())
    await client.delete("sf:audit")
    before = await client.info("cpu")
    started = time.perf_counter()
    await store.repair_hints("costs-audit")
    wall = time.perf_counter() - started
    after = await client.info("cpu")
    cpu = sum(float(after[k]) - float(before[k]) for k in ("used_cpu_user", "used_cpu_sys"))
    return {"keys": keys, "seconds": round(wall, 3), "redis_cpu_us_per_key": round(cpu / keys * 1e6, 3)}


# --- upkeep: what an idle instance costs Redis -------------------------------------------------------------------

async def upkeep_costs(quick: bool) -> dict[str, Any]:
    """Redis CPU, commands and bytes per second with no instance, then with ``n`` idle engines (sweeper every
    1 s on 16 hint shards, registry and epoch every 2 s): the per-instance share of a fleet's fixed load."""
    n = 5 if quick else 20
    seconds = 3.0 if quick else 8.0
    with redis_server() as url:
        client = aioredis.Redis.from_url(url)
        meter = Meter(client)

        async def rate() -> Sample:
            start = await meter.read()
            await asyncio.sleep(seconds)
            return (await meter.read()).minus(start)

        alone = await rate()
        stores = [await open_store(url) for _ in range(n)]
        engines = [Engine(echo_agent(5), store, EngineSettings()) for store in stores]
        for engine in engines:
            await engine.start()
        await asyncio.sleep(2.5)  # every loop past its first round
        busy = await rate()
        for engine in engines:
            await engine.stop()
        for store in stores:
            await store.close()
        await client.aclose()
    per = 1 / (n * seconds)
    calls = {c: round((v - alone.calls.get(c, 0.0)) * per, 2) for c, v in busy.calls.items() if c != "info"}
    return {
        "idle_instances": n,
        "redis_cpu_share_alone": round(alone.redis_cpu / alone.wall, 4),
        "redis_cpu_us_per_s_per_instance": round((busy.redis_cpu - alone.redis_cpu) * per * 1e6),
        "evalsha_per_s_per_instance": calls.get("evalsha", 0.0),
        "commands_per_s_per_instance": {c: v for c, v in calls.items() if v >= 0.05},
        "net_bytes_per_s_per_instance": round((busy.net_in + busy.net_out - alone.net_in - alone.net_out) * per),
    }


# --- heartbeats --------------------------------------------------------------------------------------------------

async def heartbeat_costs(quick: bool) -> dict[str, Any]:
    held = 500 if quick else HELD_TURNS
    seconds = 3.0 if quick else 10.0
    gate = asyncio.Event()
    gate.set()
    all_in = asyncio.Event()
    started = {"count": 0, "want": 0}
    agent = Agent("costs-hold", history_window=5)

    @agent.handler
    async def hold(turn: Turn) -> None:
        started["count"] += 1
        if started["count"] >= started["want"]:
            all_in.set()
        await gate.wait()
        turn.reply(turn.text)

    async def hold_open(convs: list[str]) -> list[asyncio.Task[Any]]:
        """Start one turn on each conversation and return once every handler is waiting on the gate."""
        gate.clear()
        all_in.clear()
        started.update(count=0, want=len(convs))
        replies = [task for _, task in await asyncio.gather(*(engine.submit(c, TEXT) for c in convs))]
        await all_in.wait()
        return replies

    out: dict[str, Any] = {"held_turns": held, "lease_ttl_s": EngineSettings().lease_ttl,
                           "heartbeat_s": EngineSettings().heartbeat}
    with redis_server() as url:
        store = await open_store(url)
        client = aioredis.Redis.from_url(url)
        async with Engine(agent, store, EngineSettings(max_in_flight=held + 100)) as engine:
            convs = [f"hb-{i}" for i in range(held)]
            await drive(engine, convs, CONCURRENCY, turns=held)  # the conversations exist, idle
            meter = Meter(client, store)
            await meter.calibrate(1.0 if quick else 3.0)
            used_before = int((await client.info("memory"))["used_memory"])
            replies = await hold_open(convs)
            await asyncio.sleep(0.5)  # the hints of the grants are written
            hint_keys = [k async for k in client.scan_iter(match="sf:leases:*")]
            hint_bytes = sum([int(await client.memory_usage(k, samples=0) or 0) for k in hint_keys])
            members = sum([int(await client.zcard(k)) for k in hint_keys])
            used_during = int((await client.info("memory"))["used_memory"])
            await asyncio.sleep(EngineSettings().heartbeat * 1.5)  # renewals in their steady rhythm
            start = await meter.read()
            await asyncio.sleep(seconds)
            d = meter.net(start, await meter.read())
            renews = d.ops.get("renew", 0.0)
            out["renew"] = per_unit(d, renews, ("renew", "hints"))
            out["expected_renews_per_s"] = round(held / EngineSettings().heartbeat)
            out["hint_members"] = members
            out["bytes_per_hint_member"] = round(hint_bytes / max(1, members))
            out["used_memory_per_running_turn"] = round((used_during - used_before) / held)
            gate.set()
            await asyncio.gather(*replies)
            # one at a time, with only 20 turns held (their own heartbeat costs next to nothing)
            replies = await hold_open(convs[:20])
            out["one_at_a_time"] = await unbatched(client, store, engine, 300 if quick else 2000)
            gate.set()
            await asyncio.gather(*replies)
        await client.aclose()
        await store.close()
    return out


async def unbatched(client: aioredis.Redis, store: Any, engine: Engine, count: int) -> dict[str, Any]:
    """Redis CPU per call with nothing to batch: renewals one at a time (each followed by its own hint update,
    as at a shard that gets one renewal per instance connection per iteration), and single hint updates."""
    held = [running.lease for running in engine._running.values()]  # private: the benchmark needs the leases
    leases = [held[i % len(held)] for i in range(count)]

    async def redis_cpu() -> float:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    out: dict[str, Any] = {}
    a = await redis_cpu()
    t = time.perf_counter()
    await asyncio.sleep(2.0)
    idle_rate = (await redis_cpu() - a) / (time.perf_counter() - t)
    a, t = await redis_cpu(), time.perf_counter()
    for lease in leases:
        await store.renew(lease, limits=engine.limits)
        await asyncio.sleep(0)  # its hint update goes out alone
    cpu = await redis_cpu() - a - idle_rate * (time.perf_counter() - t)
    out["renew_with_its_hint_redis_cpu_us"] = round(cpu / len(leases) * 1e6, 1)
    shard = "sf:leases:" + "{" + "bench}"  # a hint-shard-like sorted set of the same size as a real one
    await client.zadd(shard, {f"default:fill-{i}": 1 for i in range(200)})
    a, t = await redis_cpu(), time.perf_counter()
    for i in range(count // 2):
        member = f"default:hint-cost-{i}"
        await store.send_hints(shard, ["a", member, "9999999999999"])
        await store.send_hints(shard, ["d", member, "9999999999999"])
    cpu = await redis_cpu() - a - idle_rate * (time.perf_counter() - t)
    out["single_hint_update_redis_cpu_us"] = round(cpu / (2 * (count // 2)) * 1e6, 1)
    out["calls"] = len(leases)
    return out


# --- streamed turns ---------------------------------------------------------------------------------------------

async def streaming_costs(quick: bool) -> dict[str, Any]:
    """``benchmarks/apps/echo_agent.py:paced_agent`` (a model's timing without a model: first token after 100 ms,
    30 tokens over ~1 s, every token written to the event log as the engine does by default), 100 callers each
    with its own conversation, turns back to back."""
    from .apps.echo_agent import paced_agent

    callers = 30 if quick else 100
    seconds = 3.0 if quick else 8.0
    out: dict[str, Any] = {"agent": "benchmarks/apps/echo_agent.py:paced_agent", "tokens_per_turn": 30,
                           "callers": callers}
    with redis_server() as url:
        store = await open_store(url)
        client = aioredis.Redis.from_url(url)
        async with Engine(paced_agent, store, EngineSettings(max_in_flight=callers + 100)) as engine:
            convs = [f"st-{i}" for i in range(callers)]
            meter = Meter(client, store)
            await meter.calibrate(1.0 if quick else 3.0)
            await drive(engine, convs, callers, seconds=2.0 if quick else 4.0)  # warm up, event logs filling
            start = await meter.read()
            n = await drive(engine, convs, callers, seconds=seconds)
            out["turns"] = per_unit(meter.net(start, await meter.read()), n,
                                    ("accept", "commit", "hints", "append_events", "renew"))
            usage = await keys_of(client, convs[0])
            stream = f"sf:{{default:{convs[0]}}}:e"
            out["event_log_bytes"] = usage.get(stream, 0)
            out["event_log_entries"] = int(await client.xlen(stream))
            out["events_max"] = EngineSettings().events_max
        await client.aclose()
        await store.close()
    return out


# --- over HTTP ---------------------------------------------------------------------------------------------------

async def http_costs(quick: bool) -> dict[str, Any]:
    connections = 32
    seconds = 2.0 if quick else 8.0
    out: dict[str, Any] = {"workers": 1, "connections": connections, "agent": "benchmarks/apps/echo_agent.py:agent"}
    body = json.dumps({"text": TEXT}).encode()
    with redis_server() as url:
        server = ServeProcess("benchmarks/apps/echo_agent.py:agent", url, "--workers", "1")
        try:
            server.wait_ready()
            client = aioredis.Redis.from_url(url)
            conns = [await Connection.open("127.0.0.1", server.port) for _ in range(connections)]
            failed = 0

            async def post_for(i: int, stop: float, count: list[int]) -> None:
                nonlocal failed
                n = 0
                while time.perf_counter() < stop:
                    reply = await conns[i].post(f"/v1/conversations/h{i}-{n % 20}/messages", body)
                    n += 1
                    if reply.status == 200:
                        count[0] += 1
                    else:
                        failed += 1

            async def load(secs: float) -> int:
                count = [0]
                stop = time.perf_counter() + secs
                await asyncio.gather(*(post_for(i, stop, count) for i in range(connections)))
                return count[0]

            await load(2.0 if quick else 4.0)  # warm up: windows full, code paths hot
            meter = Meter(client, pid=server.proc.pid)
            await meter.calibrate(1.0 if quick else 3.0)
            start = await meter.read()
            n = await load(seconds)
            out["turns"] = per_unit(meter.net(start, await meter.read()), n, ())
            out["non_200"] = failed
            for conn in conns:
                conn.close()
            await client.aclose()
        finally:
            server.stop()
    return out


# --- the run -----------------------------------------------------------------------------------------------------

async def run(quick: bool, http: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"text_bytes": len(TEXT), "concurrency": CONCURRENCY}
    for window in (5, 20):
        results[f"window_{window}"] = await turn_costs(window, quick)
    results["upkeep"] = await upkeep_costs(quick)
    results["heartbeat"] = await heartbeat_costs(quick)
    results["streaming"] = await streaming_costs(quick)
    if http:
        results["http"] = await http_costs(quick)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.costs")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke check, not for figures)")
    parser.add_argument("--no-http", action="store_true", help="skip the statefleet serve section")
    args = parser.parse_args()
    meta = {"quick": args.quick, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(), **machine()}
    result = {**meta, **asyncio.run(run(args.quick, not args.no_http))}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("costs-quick.json" if args.quick else "costs.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"== {path}")


if __name__ == "__main__":
    main()
