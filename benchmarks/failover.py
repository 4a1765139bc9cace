"""Failover and resharding under load: ``python -m benchmarks failover [--quick]`` (issue 12).

Each scenario starts a fresh Redis topology, two ``statefleet serve`` instances of the no-op agent
(tests/loadtest/agents.py, ``--max-in-flight 10000``, lease TTL 1 s as the soak uses) and the load tester
(closed model, 150 conversations of 20 turns, every turn verified, a 30 s retry budget with the same
Idempotency-Key). First a 20 s run without any fault (the baseline), then a 60 s run with the fault at 20 s:

1. ``cluster-primary-kill``: Redis Cluster (3 primaries + 3 replicas, node timeout 1 s); SIGKILL of the primary
   holding the most keys; its replica is promoted. Once every node agrees on the new map, the killed node is
   started again (as a supervisor would) and rejoins as the new primary's replica.
2. ``cluster-primary-kill-wait1``: the same with ``wait_replicas=1`` in the store URL.
3. ``cluster-primary-kill-wait1-late-restart``: the same, the killed node started again only 15 s after the
   promotion (no baseline run): meanwhile the promoted primary has no replica to acknowledge its writes.
4. ``cluster-reshard``: ``reshard(1/3)`` (a third of the slots moved with MIGRATE) from 20 s, in a 90 s run so
   that all of it happens under load (it is slowed down by the load: ~40 s here).
5. ``sentinel-primary-kill``: a primary with 2 replicas and 3 sentinels (down after 1 s); SIGKILL of the primary.
6. ``sentinel-primary-kill-wait1``: the same with ``wait_replicas=1``.
7. ``wait-cost``: no fault; on one cluster, then one Sentinel deployment, two instances without WAIT and two
   with ``wait_replicas=1``, the load tester on each pair in turn, 3 interleaved rounds of 8 s, with 150
   conversations (saturated) and with 4 (light): turns/s, p50 and p99 and their ratios (the per-scenario
   baselines above come from different deployments minutes apart on a noisy machine).

The fault is timed on the load tester's own clock: its ``--chaos`` kills a marker process (``sleep``) at 20 s,
and the moment the marker dies this process injects the fault, so the kill, the promotion (the first replica to
answer ``ROLE`` as a master, polled every 20 ms), the moment the topology settled (every node or sentinel
agrees: the fixtures' ``wait_for_failover``) and the reshard's end are placed on the tester's per-second series.
Figures per scenario: those times, the time from the promotion until throughput is back to 50 % and 90 % of its
pre-fault mean, failed turns (after retries), and what the continuity checker saw (lost, duplicated, reordered,
stale, with its examples), and the instances' warnings. How the checker would show a turn the failover took
back: the view read after the reply has one turn fewer (``stale``), and the next message is answered with the
lost turn's number (``duplicated``: "turn N given to two messages"); the result classifies each example.
Results go to benchmarks/results/failover.json (failover-quick.json with ``--quick``); the instances' logs stay
in the temporary directory the result names. ``SF_BENCH_FAILOVER_ONLY=name,name`` runs a subset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from statefleet.loadtest import processes
from statefleet.testing.redis_cluster import LocalRedisCluster
from statefleet.testing.redis_sentinel import LocalRedisSentinel
from statefleet.testing.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
NOOP = ROOT / "tests" / "loadtest" / "agents.py"
RESULTS = Path(__file__).with_name("results")
CONVERSATIONS = 150
TURNS = 20


@dataclass(frozen=True)
class Timing:
    baseline_s: float
    duration_s: float
    fault_at_s: float
    #: How long the killed cluster node stays down after the promotion, in the late-restart scenario.
    late_restart_s: float
    #: The reshard scenario's run: long enough for the whole reshard to happen under load (~40 s here).
    reshard_duration_s: float


FULL = Timing(baseline_s=20.0, duration_s=60.0, fault_at_s=20.0, late_restart_s=15.0, reshard_duration_s=90.0)
QUICK = Timing(baseline_s=6.0, duration_s=20.0, fault_at_s=7.0, late_restart_s=5.0, reshard_duration_s=35.0)


@dataclass
class Fault:
    """What the fault thread did, in this process's ``time.monotonic()``; ``error`` if it failed."""

    marker_died: float | None = None
    events: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# -- processes ------------------------------------------------------------------------------------------------


@contextmanager
def _serve_pair(store: str, logdir: Path, prefix: str = "serve") -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two instances of the no-op agent on ``store``, logging to ``<prefix>-a.log`` and ``-b.log`` in ``logdir``;
    killed (SIGKILL) on exit."""
    instances: list[ServeProcess] = []
    try:
        for name in (f"{prefix}-a", f"{prefix}-b"):
            instances.append(ServeProcess(f"{NOOP}:agent", store, "--lease-ttl", "1", "--max-in-flight", "10000",
                                          "--log-level", "warning", log=logdir / f"{name}.log"))
        for instance in instances:
            instance.wait_ready(60)
        yield instances[0], instances[1]
    finally:
        for instance in instances:
            for pid in {instance.proc.pid, *processes.find_listening(instance.port)}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                instance.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


def _loadtest(targets: list[str], seconds: float, out: Path, *extra: str,
              conversations: int = CONVERSATIONS) -> dict[str, Any]:
    command = [sys.executable, "-m", "statefleet", "loadtest", *targets, "--conversations", str(conversations),
               "--turns", str(TURNS), "--duration", f"{seconds:g}s", "--verify-every", "1", "--retry-budget", "30s",
               "--timeout", "30s", "--json", str(out), "--quiet", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if not out.exists():
        raise RuntimeError(f"the load tester wrote no result: {(done.stdout + done.stderr)[-3000:]}")
    print(done.stdout.strip())
    return dict(json.loads(out.read_text()))


def _faulted_run(targets: list[str], timing: Timing, workdir: Path,
                 inject: Callable[[Fault], None]) -> tuple[dict[str, Any], Fault, float]:
    """The load test with ``inject`` run in a thread at ``timing.fault_at_s`` of the tester's clock; the result,
    what the fault did, and the tester's start on this process's clock."""
    marker = subprocess.Popen(["sleep", str(int(timing.duration_s + 600))])
    fault = Fault()

    def run_fault() -> None:
        try:
            marker.wait(timing.duration_s + 120)
        except subprocess.TimeoutExpired:
            fault.error = "the load tester never killed the marker"
            return
        fault.marker_died = time.monotonic()
        try:
            inject(fault)
        except Exception as exc:  # reported in the result, not lost in a thread
            fault.error = repr(exc)

    thread = threading.Thread(target=run_fault, name="fault", daemon=True)
    thread.start()
    try:
        result = _loadtest(targets, timing.duration_s, workdir / "faulted.json", "--chaos",
                           f"kill:{marker.pid}@after={timing.fault_at_s:g}s")
    finally:
        if marker.poll() is None:
            marker.kill()
            marker.wait()
        thread.join(180)
    if thread.is_alive():
        raise RuntimeError("the fault thread did not finish within 180 s")
    events = [e for e in result["timeline"] if e["ok"]]
    if fault.marker_died is None or not events:
        raise RuntimeError(f"the fault did not run: {fault.error or result['timeline']}")
    start = fault.marker_died - events[0]["t"]
    return result, fault, start


# -- figures --------------------------------------------------------------------------------------------------


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    totals = result["totals"]
    return {
        "turns": totals["turns"], "turns_per_s": totals["turns_per_s"], "failed_turns": totals["failed_turns"],
        "retries": totals["retries"], "errors": totals["errors"],
        "latency_ms": {k: result["latency_ms"][k] for k in ("p50", "p90", "p99", "p99.9", "max")},
        "continuity": {k: result["continuity"][k] for k in ("lost", "duplicated", "reordered", "stale")},
        "tester_cpu_percent": result["tester"]["cpu_percent"],
    }


#: How each checker message reads (statefleet/loadtest/continuity.py), and what it means after a failover.
_SIGNATURES = (
    ("turn_taken_back", re.compile(r"turn \d+ given to two messages")),
    ("view_behind_reply", re.compile(r"server has \d+ turns, the user was answered for \d+")),
    ("extra_turns", re.compile(r"committed that were not sent|the user sent")),
    ("message_twice_in_history", re.compile(r"is twice in the history")),
    ("reordered", re.compile(r"after turn|sent as turn")),
    ("missing_from_history",
     re.compile(r"missing from the history|history window shrank|history is empty|the user had")),
)


def _classify(examples: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for example in examples:
        name = next((n for n, pattern in _SIGNATURES if pattern.search(example)), "other")
        counts[name] = counts.get(name, 0) + 1
    return counts


def _recovery(result: dict[str, Any], fault_t: float, promoted_t: float | None) -> dict[str, Any]:
    """Throughput around the fault from the per-second series (``t`` = the second starting at t)."""
    series = result["series"]
    turns = series["turns"]
    before = turns[3:int(fault_t)]
    mean = sum(before) / len(before) if before else 0.0
    out: dict[str, Any] = {"pre_fault_turns_per_s": round(mean, 1)}
    after = list(range(int(fault_t), len(turns)))
    if after:
        low = min(after, key=lambda k: turns[k])
        out["lowest_second"] = {"t": low, "turns": turns[low], "percent_of_pre_fault": round(
            100 * turns[low] / mean, 1) if mean else None}
        out["seconds_below_50pct"] = sum(1 for k in after if turns[k] < 0.5 * mean)
        out["seconds_below_90pct"] = sum(1 for k in after if turns[k] < 0.9 * mean)
    if promoted_t is not None:
        for percent in (50, 90):
            back = next((k for k in range(int(promoted_t), len(turns)) if turns[k] >= percent / 100 * mean), None)
            # The end of the first whole second (the one holding the promotion counts) at that level.
            out[f"back_to_{percent}pct_after_promotion_s"] = (None if back is None
                                                              else round(back + 1 - promoted_t, 2))
    window = range(max(0, int(fault_t) - 3), min(len(turns), int(fault_t) + 20))
    out["around_fault"] = {name: [series[name][k] for k in window]
                           for name in ("t", "turns", "errors", "retries", "p50_ms", "p99_ms", "max_ms")}
    return out


def _log_lines(logdir: Path) -> dict[str, Any]:
    """What the instances logged (warnings and errors at ``--log-level warning``): counts of each message
    (numbers and ids masked) and the first lines, for the result."""
    counts: dict[str, int] = {}
    first: list[str] = []
    for path in sorted(logdir.glob("serve-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = f"{record.get('level')} {record.get('logger')}: {record.get('msg')}"
            except (ValueError, AttributeError):
                text = line
            shape = re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", text))[:200]
            counts[shape] = counts.get(shape, 0) + 1
            if len(first) < 30:
                first.append(f"{path.name}: {line[:400]}")
    top = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:20])
    return {"lines": sum(counts.values()), "most_common": top, "first": first, "dir": str(logdir)}


def _report(name: str, topology: str, store_url: str, baseline: dict[str, Any] | None, result: dict[str, Any],
            fault: Fault, start: float, logdir: Path) -> dict[str, Any]:
    rel = {k: round(v - start, 3) for k, v in fault.events.items()}
    fault_t = rel.get("killed", rel.get("reshard_started", 0.0))
    promoted_t = rel.get("promoted")
    out: dict[str, Any] = {
        "topology": topology,
        "store_options": store_url.partition("?")[2] or "(none)",
        "baseline_no_fault": None if baseline is None else _summary(baseline),
        "fault": {**fault.facts, **{f"{k}_at_s": v for k, v in rel.items()}},
        "run": _summary(result),
        "errors_by_kind": result["errors_by_kind"],
        "recovery": _recovery(result, fault_t, promoted_t),
        "tester_recovery_s": next((e.get("recovery_s") for e in result["timeline"] if e["ok"]), None),
        "checker_examples": result["continuity"]["examples"],
        "checker_examples_by_signature": _classify(result["continuity"]["examples"]),
        "serve_logs": _log_lines(logdir),
    }
    if fault.error:
        out["fault"]["error"] = fault.error
    if "promoted" in rel and "settled" in rel:
        out["fault"]["settled_after_promotion_s"] = round(rel["settled"] - rel["promoted"], 3)
    if "promoted" in rel and "restarted_and_in_sync" in rel:
        out["fault"]["no_replica_s"] = round(rel["restarted_and_in_sync"] - rel["promoted"], 3)
    if "killed" in rel and "promoted" in rel:
        out["fault"]["failover_s"] = round(rel["promoted"] - rel["killed"], 3)
    print(f"== {name}: {json.dumps({k: out[k] for k in ('fault', 'run')})}")
    return out


# -- scenarios ------------------------------------------------------------------------------------------------


def _keys(port: int) -> int:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def _first_master(ports: list[int], timeout: float) -> int:
    """Poll ``ROLE`` on ``ports`` (every 20 ms) until one of them says it is a master; its port."""
    clients = {port: redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
               for port in ports}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for port, client in clients.items():
                try:
                    if client.execute_command("ROLE")[0] in (b"master", "master"):  # type: ignore[no-untyped-call]
                        return port
                except redis.RedisError:
                    pass
            time.sleep(0.02)
    finally:
        for client in clients.values():
            client.close()
    raise RuntimeError(f"no replica on {ports} became a master within {timeout} s")


def _with_options(url: str, options: str) -> str:
    return url + ("&" if "?" in url else "?") + options if options else url


def cluster_kill(timing: Timing, workdir: Path, options: str, restart_after_s: float = 0.0,
                 name: str = "cluster-primary-kill", baseline_run: bool = True) -> dict[str, Any]:
    """``restart_after_s``: how long after the promotion the killed node is started again."""
    with LocalRedisCluster() as cluster, ExitStack() as stack:
        store = _with_options(cluster.url, options)
        a, b = stack.enter_context(_serve_pair(store, workdir))
        baseline = (_loadtest([a.url, b.url], timing.baseline_s, workdir / "baseline.json") if baseline_run
                    else None)

        def inject(fault: Fault) -> None:
            keys = {port: _keys(port) for port in cluster.primary_ports()}
            victim = max(keys, key=lambda port: keys[port])
            replicas = [node.port for node in cluster.nodes if node.role == "replica"]
            fault.facts.update({"keys_per_primary": keys, "victim_port": victim})
            cluster.kill(victim)
            fault.events["killed"] = time.monotonic()
            fault.facts["promoted_port"] = _first_master(replicas, timeout=30)
            fault.events["promoted"] = time.monotonic()
            # Every node agrees on the new slot map (LocalRedisCluster.wait_for_failover).
            fault.facts["new_primary_port"] = cluster.wait_for_failover(victim, timeout=30)
            fault.events["settled"] = time.monotonic()
            # As a supervisor would: the dead node starts again and rejoins as the new primary's replica.
            time.sleep(restart_after_s)
            cluster.restart(victim, timeout=30)
            fault.events["restarted_and_in_sync"] = time.monotonic()

        result, fault, start = _faulted_run([a.url, b.url], timing, workdir, inject)
        return _report(name,
                       "Redis Cluster, 3 primaries + 3 replicas, node timeout 1 s", store, baseline, result, fault,
                       start, workdir)


def cluster_reshard(timing: Timing, workdir: Path) -> dict[str, Any]:
    with LocalRedisCluster() as cluster, ExitStack() as stack:
        a, b = stack.enter_context(_serve_pair(cluster.url, workdir))
        baseline = _loadtest([a.url, b.url], timing.baseline_s, workdir / "baseline.json")

        def inject(fault: Fault) -> None:
            fault.facts["keys_per_primary_before"] = {port: _keys(port) for port in cluster.primary_ports()}
            fault.events["reshard_started"] = time.monotonic()
            fault.facts["target_port"] = cluster.reshard(1 / 3, timeout=150)
            fault.events["reshard_done"] = time.monotonic()
            fault.facts["keys_per_primary_after"] = {port: _keys(port) for port in cluster.primary_ports()}

        longer = dataclasses.replace(timing, duration_s=timing.reshard_duration_s)
        result, fault, start = _faulted_run([a.url, b.url], longer, workdir, inject)
        out = _report("cluster-reshard", "Redis Cluster, 3 primaries + 3 replicas; reshard 1/3 of the slots",
                      cluster.url, baseline, result, fault, start, workdir)
        if "reshard_done" in fault.events and "reshard_started" in fault.events:
            out["fault"]["reshard_s"] = round(fault.events["reshard_done"] - fault.events["reshard_started"], 3)
            out["fault"]["reshard_ended_under_load"] = fault.events["reshard_done"] - start < longer.duration_s
        return out


def sentinel_kill(timing: Timing, workdir: Path, options: str) -> dict[str, Any]:
    with LocalRedisSentinel() as deployment, ExitStack() as stack:
        store = _with_options(deployment.url, options)
        a, b = stack.enter_context(_serve_pair(store, workdir))
        baseline = _loadtest([a.url, b.url], timing.baseline_s, workdir / "baseline.json")

        def inject(fault: Fault) -> None:
            old = deployment.primary_port()
            replicas = [server.port for server in deployment.servers if server.port != old]
            deployment.kill_primary()
            fault.events["killed"] = time.monotonic()
            fault.facts["victim_port"] = old
            fault.facts["promoted_port"] = _first_master(replicas, timeout=60)
            fault.events["promoted"] = time.monotonic()
            # Every sentinel names it and none is still failing over (LocalRedisSentinel.wait_for_failover).
            fault.facts["new_primary_port"] = deployment.wait_for_failover(old, timeout=60)
            fault.events["settled"] = time.monotonic()

        result, fault, start = _faulted_run([a.url, b.url], timing, workdir, inject)
        return _report("sentinel-primary-kill" + ("-wait1" if options else ""),
                       "Sentinel: a primary, 2 replicas, 3 sentinels (down after 1 s)", store, baseline, result,
                       fault, start, workdir)


WAIT1 = "wait_replicas=1&wait_timeout=1000"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


#: The wait-cost levels: saturated (what it costs in throughput) and light (what it adds to a turn's latency).
WAIT_COST_LEVELS = {"saturated": CONVERSATIONS, "light": 4}


def wait_cost(quick: bool, workdir: Path) -> dict[str, Any]:
    """What ``wait_replicas=1`` costs without any fault, on each topology: one deployment, two instances on it
    without WAIT and two with, the load tester on one pair then the other, alternately (the machine is shared and
    noisy: a ratio of interleaved rounds, not of runs minutes apart), at two levels: 150 conversations (the
    instances saturated: the throughput cost) and 4 (latency close to the service time: the latency cost).
    Medians of the rounds, after a warm-up run on each pair."""
    rounds, seconds = (1, 4.0) if quick else (3, 8.0)
    out: dict[str, Any] = {"rounds": rounds, "round_s": seconds, "levels": WAIT_COST_LEVELS}
    deployments: dict[str, Callable[[], LocalRedisCluster | LocalRedisSentinel]] = {
        "cluster": LocalRedisCluster, "sentinel": LocalRedisSentinel}
    for topology, deploy in deployments.items():
        with deploy() as deployment, ExitStack() as stack:
            pairs = {label: stack.enter_context(_serve_pair(_with_options(deployment.url, options), workdir,
                                                            f"{topology}-{label}"))
                     for label, options in (("wait0", ""), ("wait1", WAIT1))}
            for label, (a, b) in pairs.items():  # connections, scripts and the first conversations: not measured
                _loadtest([a.url, b.url], seconds / 2, workdir / f"{topology}-{label}-warmup.json")
            out[topology] = {}
            for level, conversations in WAIT_COST_LEVELS.items():
                measured: dict[str, list[dict[str, Any]]] = {label: [] for label in pairs}
                for n in range(rounds):
                    for label in (("wait0", "wait1") if n % 2 == 0 else ("wait1", "wait0")):
                        a, b = pairs[label]
                        result = _loadtest([a.url, b.url], seconds, workdir / f"{topology}-{level}-{label}-{n}.json",
                                           conversations=conversations)
                        measured[label].append(_summary(result))
                out[topology][level] = _wait_figures(measured)
    return out


def _wait_figures(measured: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for label, summaries in measured.items():
        figures[label] = {
            "turns_per_s": _median([float(m["turns_per_s"]) for m in summaries]),
            "p50_ms": _median([float(m["latency_ms"]["p50"]) for m in summaries]),
            "p99_ms": _median([float(m["latency_ms"]["p99"]) for m in summaries]),
            "rounds": [{"turns_per_s": m["turns_per_s"], "p50_ms": m["latency_ms"]["p50"],
                        "p99_ms": m["latency_ms"]["p99"], "failed_turns": m["failed_turns"],
                        "continuity": m["continuity"]} for m in summaries],
        }
    zero, one = figures["wait0"], figures["wait1"]
    figures["wait1_over_wait0"] = {name: round(one[name] / zero[name], 3) if zero[name] else None
                                   for name in ("turns_per_s", "p50_ms", "p99_ms")}
    return figures


def run(quick: bool) -> dict[str, Any]:
    timing = QUICK if quick else FULL
    logroot = Path(tempfile.mkdtemp(prefix="statefleet-failover-"))
    wait1 = WAIT1
    scenarios: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
        ("cluster-primary-kill", lambda d: cluster_kill(timing, d, "")),
        ("cluster-primary-kill-wait1", lambda d: cluster_kill(timing, d, wait1, name="cluster-primary-kill-wait1")),
        # The killed node back only some time after the promotion: until then the shard has no replica to ack.
        ("cluster-primary-kill-wait1-late-restart", lambda d: cluster_kill(
            timing, d, wait1, restart_after_s=timing.late_restart_s, name="cluster-primary-kill-wait1-late-restart",
            baseline_run=False)),
        ("cluster-reshard", lambda d: cluster_reshard(timing, d)),
        ("sentinel-primary-kill", lambda d: sentinel_kill(timing, d, "")),
        ("sentinel-primary-kill-wait1", lambda d: sentinel_kill(timing, d, wait1)),
        ("wait-cost", lambda d: wait_cost(quick, d)),
    ]
    # A comma-separated subset, for reruns: the other scenarios' figures already in the results file are kept.
    only = os.environ.get("SF_BENCH_FAILOVER_ONLY")
    kept: dict[str, Any] = {}
    previous = RESULTS / ("failover-quick.json" if quick else "failover.json")
    if only and previous.exists():
        kept = {name: value for name, value in json.loads(previous.read_text()).items()
                if name in dict(scenarios) and name not in only.split(",")}
    out: dict[str, Any] = {**kept,
        "workload": {"conversations": CONVERSATIONS, "turns_per_conversation": TURNS, "model": "closed",
                     "verify_every": 1, "retry_budget_s": 30, "instances": 2, "lease_ttl_s": 1,
                     "agent": "tests/loadtest/agents.py:agent (no-op)", "baseline_s": timing.baseline_s,
                     "duration_s": timing.duration_s, "fault_at_s": timing.fault_at_s},
        "logs": str(logroot),
        "reshard_duration_s": timing.reshard_duration_s,
    }
    for name, scenario in scenarios:
        if only and name not in only.split(","):
            continue
        workdir = logroot / name
        workdir.mkdir()
        started = time.monotonic()
        try:
            out[name] = scenario(workdir)
        except Exception as exc:  # one scenario failing does not lose the others' figures
            out[name] = {"error": repr(exc)}
            print(f"== {name} failed: {exc!r}")
        out[name]["scenario_wall_s"] = round(time.monotonic() - started, 1)
        out[name]["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
        out[name]["logs"] = str(workdir)
    return out
