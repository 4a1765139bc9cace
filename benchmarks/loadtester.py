"""Benchmarks of the load tester itself: ``python -m benchmarks.loadtester [capacity|soak|llm|all] [--quick]``.

- **capacity**: one tester process against one ``statefleet serve`` of a no-op agent (memory store), with
  the history check after every turn (2 requests per turn) and with only the final check. Floor: 3,000 turns/s
  from one process; the tester's own CPU use is reported (on a 2-core machine the server shares the CPUs).
- **soak**: the issue's schedule — two instances on Redis, one SIGKILLed every 15 s (and restarted) for
  2 minutes: 0 lost, 0 duplicated, 0 reordered; recovery time per kill. (The suite runs a shorter version.)
- **llm**: 5,000 concurrent streaming conversations through the streaming LLM agent on one instance with the
  mock LLM (1 s replies, 30 tokens); TTFT p99 seen by the users against the mock's configured 100 ms and against
  the TTFT the mock itself measured delivering (its ``/healthz``). The instance runs on one CPU, the mock and
  the tester on another. The same workload first runs against its floor, ``benchmarks/apps/bare_llm_proxy.py``
  (no guarantees at all), on the same CPU: ~5 minutes in all. ``SF_BENCH_LLM_STORE=redis`` runs statefleet on
  a throwaway Redis (on the instance's CPU); ``SF_BENCH_LLM_USERS`` sets another number of users (the figure
  to reach is at 5,000).

Results go to benchmarks/results/loadtester.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from statefleet.loadtest import processes
from statefleet.testing.serve_process import ServeProcess, wait_until_ready

from ._machine import cpu_seconds, machine
from ._servers import free_port, redis_server

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
NOOP = ROOT / "tests" / "loadtest" / "agents.py"
FLOOR_TURNS_PER_S = 3000


@contextmanager
def serve(agent: str, store: str, env: dict[str, str] | None = None, lease_ttl: str | None = "1",
          cpu: int | None = None) -> Iterator[str]:
    """An instance of ``agent`` (on ``cpu`` when given; ``lease_ttl`` None: the default); on exit it is killed,
    with anything the chaos restarted on its port."""
    options = ("--lease-ttl", lease_ttl) if lease_ttl is not None else ()
    # These runs measure the tester and the streaming path, not admission: the limit stays out of the way (the
    # 5,000-user hold keeps ~200-250 streams in flight, at serve's default of 256).
    instance = ServeProcess(agent, store, *options, "--max-in-flight", "10000", "--log-level", "warning", env=env)
    _pin(instance.proc.pid, cpu)
    try:
        if not wait_until_ready(instance.url, instance.proc):
            raise SystemExit(f"{instance.url} did not come up")
        yield instance.url
    finally:
        for pid in {instance.proc.pid, *processes.find_listening(instance.port)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        instance.proc.wait(10)


def loadtest(*args: str, cpu: int | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        command = [sys.executable, "-m", "statefleet", "loadtest", *args, "--json", str(out), "--quiet"]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        done = subprocess.run(command, capture_output=True, text=True)
        if not out.exists():
            raise SystemExit(done.stdout + done.stderr)
        print(done.stdout)
        return dict(json.loads(out.read_text()))


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {"turns": result["totals"]["turns"], "turns_per_s": result["totals"]["turns_per_s"],
            "failed_turns": result["totals"]["failed_turns"], "retries": result["totals"]["retries"],
            "latency_ms": result["latency_ms"], "ttft_ms": result["ttft_ms"], "continuity": {
                k: result["continuity"][k] for k in ("lost", "duplicated", "reordered", "stale")},
            "tester_cpu_percent": result["tester"]["cpu_percent"], "tester_saturated": result["tester"]["saturated"]}


def capacity(quick: bool) -> dict[str, Any]:
    seconds = "5s" if quick else "15s"
    out: dict[str, Any] = {}
    with serve(f"{NOOP}:agent", "memory://") as url:
        for label, verify in (("verify_every_turn", "1"), ("final_check_only", "0")):
            result = loadtest(url, "--conversations", "100", "--turns", "20", "--duration", seconds,
                              "--verify-every", verify)
            out[label] = _summary(result)
    best = max(v["turns_per_s"] for v in out.values())
    out["floor_turns_per_s"] = FLOOR_TURNS_PER_S
    out["ratio_to_floor"] = round(best / FLOOR_TURNS_PER_S, 2)
    return out


def soak(quick: bool) -> dict[str, Any]:
    agent = f"{NOOP}:agent"
    with redis_server() as redis, serve(agent, redis) as a, serve(agent, redis) as b:
        duration, every = ("40s", "10s") if quick else ("120s", "15s")
        result = loadtest(a, b, "--conversations", "50", "--turns", "10", "--think", "100ms", "--stream-ratio",
                          "0.3", "--duration", duration, "--chaos", f"kill:{redis}@every={every},restart=0.3s",
                          "--report", str(RESULTS / "loadtester-soak.html"))
    kills = [{"t": e["t"], "recovery_s": e["recovery_s"]} for e in result["timeline"]]
    return {**_summary(result), "errors_by_kind": result["errors_by_kind"], "kills": kills}


def _pin(pid: int, cpu: int | None) -> None:
    """Keep ``pid`` on one CPU (when the machine has two or more)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


def _cpus() -> tuple[int | None, int | None]:
    """(the instance's CPU, the mock's and the tester's CPU), or (None, None) on a one-CPU machine."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (usable[0], usable[1]) if len(usable) >= 2 else (None, None)


@contextmanager
def _store_for_llm(cpu: int | None) -> Iterator[str]:
    """``memory://``, or with SF_BENCH_LLM_STORE=redis a throwaway redis-server on the instance's CPU."""
    choice = os.environ.get("SF_BENCH_LLM_STORE", "memory")
    if choice not in ("memory", "redis"):
        raise SystemExit(f"SF_BENCH_LLM_STORE={choice!r}: use memory or redis")
    if choice == "memory":
        yield "memory://"
        return
    with redis_server() as url:
        for pid in processes.find_listening(urllib.parse.urlsplit(url).port or 6379):
            _pin(pid, cpu)
        yield url


def llm(quick: bool) -> dict[str, Any]:
    users, ramp, duration = ("1000", "20s", "40s") if quick else ("5000", "60s", "120s")
    users = os.environ.get("SF_BENCH_LLM_USERS", users)  # fewer on a machine that cannot carry 5,000 (see docs)
    if not users.isdigit() or int(users) < 1:
        raise SystemExit(f"SF_BENCH_LLM_USERS={users!r}: a positive number of users")
    server_cpu, client_cpu = _cpus()
    # 5,000 people in conversation at once, each reading and typing ~20 s between messages (exponential):
    # ~250-300 turns/s, ~9,000 streamed tokens/s through one instance. They arrive over 60 s (each sends its
    # first message on arrival), then stay. The instance has one CPU to itself; the mock and the tester share
    # the other, so the figure is the instance's, not the CPUs' contention.
    workload = ("--conversations", users, "--turns", "5", "--think", "20s", "--stream-ratio", "1",
                "--profile", f"ramp:0..{users}/{ramp}", "--duration", duration, "--timeout", "60s")
    agent = os.environ.get("SF_BENCH_LLM_AGENT", f"{ROOT / 'benchmarks' / 'apps' / 'lean_llm_agent.py'}:agent")
    machine_before = machine()
    # The floor first, in the same run: the same workload through a bare proxy with no guarantees at all
    # (benchmarks/apps/bare_llm_proxy.py), so the figure reads against what one Python process does here.
    floor = _llm_run(lambda env: _bare_proxy(env, server_cpu), workload, client_cpu)

    @contextmanager
    def statefleet_instance(env: dict[str, str]) -> Iterator[str]:
        # The default lease TTL (3 s), as deployed: the kill tests' 1 s triples the lease renewals.
        with _store_for_llm(server_cpu) as store, serve(agent, store, env, None, server_cpu) as url:
            yield url

    summary = _llm_run(statefleet_instance, workload, client_cpu)
    machine_after = machine()
    summary["users"] = int(users)
    summary["agent"] = agent.rsplit("/", 1)[-1]
    summary["store"] = os.environ.get("SF_BENCH_LLM_STORE", "memory")
    summary["cpus"] = {"instance": server_cpu, "mock_and_tester": client_cpu}
    summary["mock_configured_ttft_ms"] = 100.0
    summary["floor"] = floor
    summary["ttft_p99_over_floor_ms"] = round(summary["ttft_ms"]["p99"] - floor["ttft_ms"]["p99"], 1)
    summary["instance_cpu_ms_per_turn_over_floor"] = round(
        summary["instance_cpu_ms_per_turn"] / floor["instance_cpu_ms_per_turn"], 2)
    summary["machine_before_after"] = [machine_before, machine_after]  # benchmarks/_machine.py
    return summary


def _llm_run(target: Callable[[dict[str, str]], AbstractContextManager[str]], workload: tuple[str, ...],
             client_cpu: int | None) -> dict[str, Any]:
    """One llm run against a fresh mock LLM: the users' figures, the mock's own TTFT, the instance's CPU."""
    mock_port = free_port()
    mock = subprocess.Popen([sys.executable, "-m", "statefleet", "mock-llm", "--port", str(mock_port), "--ttft",
                             "100ms", "--tokens-per-s", str(29 / 0.9), "--reply-tokens", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pin(mock.pid, client_cpu)
    mock_url = f"http://127.0.0.1:{mock_port}"
    try:
        if not wait_until_ready(mock_url, mock, path="/healthz"):
            raise SystemExit("the mock LLM did not come up")
        with target({"OPENAI_BASE_URL": f"{mock_url}/v1"}) as url:
            instance_pid = processes.find_listening(urllib.parse.urlsplit(url).port or 80)[0]
            cpu_before, started = cpu_seconds(instance_pid), time.monotonic()
            result = loadtest(url, *workload, cpu=client_cpu)
            instance_cpu = (cpu_seconds(instance_pid) - cpu_before) / (time.monotonic() - started)
        mock_own = json.loads(urllib.request.urlopen(mock_url + "/healthz", timeout=10).read())["ttft_ms"]
    finally:
        mock.kill()
        mock.wait()
    summary = _summary(result)
    summary["errors_by_kind"] = result["errors_by_kind"]
    summary["mock_own_ttft_ms"] = mock_own
    summary["ttft_p99_over_configured_ms"] = round(result["ttft_ms"]["p99"] - 100.0, 1)
    summary["ttft_p99_over_mock_own_p99_ms"] = round(result["ttft_ms"]["p99"] - mock_own["p99"], 1)
    # Over the whole run, ramp included: near 100 means the instance was saturated and the figure measures that.
    summary["instance_cpu_percent"] = round(100 * instance_cpu, 1)
    turns_per_s = result["totals"]["turns_per_s"]
    summary["instance_cpu_ms_per_turn"] = round(1000 * instance_cpu / turns_per_s, 2) if turns_per_s else None
    return summary


@contextmanager
def _bare_proxy(env: dict[str, str], cpu: int | None) -> Iterator[str]:
    """benchmarks/apps/bare_llm_proxy.py under uvicorn as ``statefleet serve`` runs (uvloop, httptools)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.apps.bare_llm_proxy:app", "--host", "127.0.0.1", "--port",
         str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
         "--timeout-keep-alive", "30"], cwd=ROOT, env={**os.environ, **env})
    _pin(proc.pid, cpu)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_ready(url, proc):
            raise SystemExit("the bare proxy did not come up")
        yield url
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadtester")
    parser.add_argument("which", nargs="?", default="capacity", choices=["capacity", "soak", "llm", "all"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("loadtester-quick.json" if args.quick else "loadtester.json")  # smoke runs never replace figures
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results.update({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
                    "cpus": os.cpu_count()})
    for name, fn in (("capacity", capacity), ("soak", soak), ("llm", llm)):
        if args.which in (name, "all"):
            figures = fn(args.quick)
            if name == "llm" and "SF_BENCH_LLM_USERS" in os.environ:
                name = f"llm_{figures['users']}_users"  # the figure stays under "llm"
            results[name] = figures
            print(f"== {name}\n{json.dumps(figures, indent=2)}")
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
