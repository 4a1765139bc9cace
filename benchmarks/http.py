"""HTTP serving benchmark (issue: serve over HTTP/SSE from a fleet of processes).

In one run, against one fresh local redis-server, every app served by uvicorn with 2 worker processes
(uvloop + httptools) on a free port, all answering ``POST /v1/conversations/{id}/messages``:

- ``bare``: a raw ASGI app doing ONE Lua call per message (append + trim + read the window), no guarantees —
  the floor (``benchmarks/apps/bare_lua.py:app``);
- ``bare_two``: the same with the two Lua calls a leased turn needs (lease, commit) — a reference figure;
- ``statefleet``: ``statefleet serve benchmarks/apps/echo_agent.py:agent --workers 2`` (no-op echo, window 5);
- ``recipe``: FastAPI + sync redis-py, LPUSH + LTRIM + LRANGE per utterance (``benchmarks/apps/fastapi_recipe.py``).

Throughput: ``wrk -t1 -c64 --latency`` posting ``{"text":"hello"}`` to 10,000 random conversations
(``benchmarks/wrk/post_random.lua``); wrk shares the machine. The apps take turns, in an order rotated each
round; a ratio is the median of the per-round ratios. A run with non-2xx/3xx answers or socket errors is
reported with them (``wrk_errors``), and its rate counts successful requests only.

Latency: an open-loop client (``benchmarks/openloop.py``) at 1,000 requests/s against statefleet (and bare,
for reference), latency measured from each request's scheduled send time.

SSE: against ``echo_agent.py:streaming_agent`` (emits one token first thing, then replies), sequential
requests with ``Accept: text/event-stream``: time from sending the request to receiving the first ``token``
event, client-side; plain JSON requests to the same agent, interleaved, as a reference.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._client import Connection
from ._servers import free_port, redis_server
from .openloop import summary_ms

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).with_name("wrk") / "post_random.lua"
WORKERS = 2
CONNECTIONS = 64
CONVERSATIONS = 10_000
UVICORN = ["--workers", str(WORKERS), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
           "--log-level", "info"]
TARGETS = {"vs_bare_ratio": 0.4, "vs_recipe_ratio": 3.0, "p99_ms_at_1000": 5.0, "sse_added_ttft_p99_ms": 2.0}


@dataclass(frozen=True)
class App:
    name: str
    argv: tuple[str, ...]
    port: int


def apps(redis_url: str) -> dict[str, App]:
    """The compared apps, each on its own free port; argv uses {port}."""
    statefleet = (sys.executable, "-m", "statefleet", "serve", "benchmarks/apps/echo_agent.py:agent",
                  "--store", redis_url, "--workers", str(WORKERS), "--drain-timeout", "2", "--log-level", "info")
    return {
        "bare": App("bare", (sys.executable, "-m", "uvicorn", "benchmarks.apps.bare_lua:app", *UVICORN), free_port()),
        "bare_two": App("bare_two", (sys.executable, "-m", "uvicorn", "benchmarks.apps.bare_lua:app_two", *UVICORN),
                        free_port()),
        "statefleet": App("statefleet", statefleet, free_port()),
        "recipe": App("recipe", (sys.executable, "-m", "uvicorn", "benchmarks.apps.fastapi_recipe:app", *UVICORN),
                      free_port()),
    }


@contextmanager
def serving(app: App, redis_url: str) -> Iterator[App]:
    """Start ``app`` and wait until all its workers completed startup; stop it (SIGTERM, then SIGKILL) after."""
    log = tempfile.NamedTemporaryFile(prefix=f"sf-bench-{app.name}-", suffix=".log", delete=False)
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*app.argv, "--port", str(app.port)], cwd=ROOT, env=env, stdout=log, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while Path(log.name).read_text(errors="replace").count("Application startup complete") < WORKERS:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = Path(log.name).read_text(errors="replace")[-2000:]
                raise SystemExit(f"{app.name} did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.05)
        yield app
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        os.unlink(log.name)


# --- closed loop: wrk -------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests, rate, latency percentiles and errors from ``wrk --latency`` output."""
    requests, duration = re.search(r"(\d+) requests in ([\d.]+\w+),", output).groups()  # type: ignore[union-attr]
    duration_s = _ms(duration) / 1000
    status_errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    socket = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        socket = dict(zip(socket, map(int, m.groups()), strict=True))
    latency = {f"p{q}_ms": _ms(v) for q, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.M)}
    total = int(requests)
    ok = max(0, total - status_errors - socket["read"] - socket["write"] - socket["timeout"])
    return {
        "requests": total,
        "seconds": duration_s,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "ok_per_s": ok / duration_s,
        "latency": latency,
        "non_2xx_3xx": status_errors,
        "socket_errors": socket,
        "errors": status_errors + sum(socket.values()),
    }


def run_wrk(app: App, seconds: float) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "-s", str(WRK_SCRIPT),
            f"http://127.0.0.1:{app.port}"]
    env = {**os.environ, "SF_BENCH_CONVERSATIONS": str(CONVERSATIONS)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed on {app.name} ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def throughput(servers: dict[str, App], seconds: float, rounds: int) -> dict[str, Any]:
    names = list(servers)
    for name in names:  # warm up: scripts loaded, pools filled, conversations created
        run_wrk(servers[name], min(seconds, 3.0))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(run_wrk(servers[name], seconds))
    rates = {name: [run["ok_per_s"] for run in runs[name]] for name in names}

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True)), 3)

    return {
        "turns_per_s": {name: round(statistics.median(rates[name])) for name in names},
        "turns_per_s_by_round": {name: [round(x) for x in rates[name]] for name in names},
        "wrk_latency_median_run": {name: sorted(runs[name], key=lambda run: run["ok_per_s"])[len(runs[name]) // 2]
                                   ["latency"] for name in names},
        "vs_bare_ratio": ratio("statefleet", "bare"),
        "vs_recipe_ratio": ratio("statefleet", "recipe"),
        "bare_two_vs_bare_ratio": ratio("bare_two", "bare"),
        "statefleet_vs_bare_two_ratio": ratio("statefleet", "bare_two"),
        "wrk_errors": {name: {"runs_with_errors": sum(1 for run in runs[name] if run["errors"]),
                              "non_2xx_3xx": sum(run["non_2xx_3xx"] for run in runs[name]),
                              "socket_errors": sum(sum(run["socket_errors"].values()) for run in runs[name])}
                       for name in names},
    }


# --- open loop ---------------------------------------------------------------------------------------------------

def run_open_loop(app: App, rate: float, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.openloop", "--port", str(app.port), "--rate", f"{rate:g}",
            "--seconds", f"{seconds:g}", "--connections", str(CONNECTIONS), "--conversations", str(CONVERSATIONS)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 90, check=False)
    if done.returncode != 0:
        raise SystemExit(f"open-loop client failed on {app.name}: {done.stderr}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# --- SSE time to first token -------------------------------------------------------------------------------------

async def sse_ttft(app: App, samples: int) -> dict[str, Any]:
    """``samples`` SSE requests and ``samples`` JSON requests, alternating, one at a time."""
    sse_conn = await Connection.open("127.0.0.1", app.port)
    json_conn = await Connection.open("127.0.0.1", app.port)
    rng = random.Random(2)
    ttft: list[float] = []
    sse_total: list[float] = []
    json_total: list[float] = []
    problems = 0
    body = b'{"text":"hello"}'
    for _ in range(samples):
        start = time.perf_counter()
        streamed = await sse_conn.post(f"/v1/conversations/sse-{rng.randrange(CONVERSATIONS)}/messages", body,
                                       accept="text/event-stream", marker=b"event: token")
        end = time.perf_counter()
        if streamed.status != 200 or streamed.marker_at is None or b"event: reply" not in streamed.body:
            problems += 1
        else:
            ttft.append(streamed.marker_at - start)
            sse_total.append(end - start)
        start = time.perf_counter()
        plain = await json_conn.post(f"/v1/conversations/json-{rng.randrange(CONVERSATIONS)}/messages", body)
        if plain.status != 200:
            problems += 1
        else:
            json_total.append(time.perf_counter() - start)
    sse_conn.close()
    json_conn.close()
    ttft_summary = summary_ms(ttft, (50, 99))
    return {
        "measured": ("client-side, sequential on one keep-alive connection: from writing the POST (Accept: "
                     "text/event-stream) to reading the first `token` event, against a handler whose first "
                     "statement is `await turn.emit(...)` (handler-side emit offset ~0, not recorded), so "
                     "added TTFT = TTFT p99 - 0; it includes HTTP, accepting the message (1 Lua call), "
                     "starting the turn and loopback. Reference: total latency of plain JSON requests to the "
                     "same agent (accept + commit), interleaved with the SSE ones."),
        "samples": samples,
        "failed_or_malformed": problems,
        "ttft": ttft_summary,
        "sse_total": summary_ms(sse_total, (50, 99)),
        "json_total": summary_ms(json_total, (50, 99)),
        "handler_emit_offset_ms": 0.0,
        "added_ttft_p99_ms": ttft_summary["p99_ms"],
    }


# --- the run -----------------------------------------------------------------------------------------------------

def run(quick: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; ./dev bench installs it (apt-get install wrk)")
    seconds, rounds = (3.0, 1) if quick else (10.0, 3)
    open_seconds, sse_samples = (2.0, 200) if quick else (10.0, 500)
    results: dict[str, Any] = {
        "workers_per_app": WORKERS, "wrk": f"-t1 -c{CONNECTIONS} -d{seconds:g}s", "conversations": CONVERSATIONS,
        "seconds": seconds, "rounds": rounds, "targets": TARGETS,
    }
    with redis_server() as url:
        with ExitStack() as stack:
            servers = {name: stack.enter_context(serving(app, url)) for name, app in apps(url).items()}
            results.update(throughput(servers, seconds, rounds))
            results["open_loop_1000"] = {name: run_open_loop(servers[name], 1000, open_seconds)
                                         for name in ("statefleet", "bare")}
        streaming = App("statefleet_streaming", (sys.executable, "-m", "statefleet", "serve",
                                                 "benchmarks/apps/echo_agent.py:streaming_agent", "--store", url,
                                                 "--workers", str(WORKERS), "--drain-timeout", "2"), free_port())
        with serving(streaming, url):
            asyncio.run(sse_ttft(streaming, 50))  # warm up
            results["sse"] = asyncio.run(sse_ttft(streaming, sse_samples))
    statefleet_open = results["open_loop_1000"]["statefleet"]
    results["p99_ms_at_1000"] = statefleet_open["latency_from_schedule"]["p99_ms"]
    results["sse_added_ttft_p99_ms"] = results["sse"]["added_ttft_p99_ms"]
    results["verdict"] = {
        "vs_bare_ratio": results["vs_bare_ratio"] >= TARGETS["vs_bare_ratio"],
        "vs_recipe_ratio": results["vs_recipe_ratio"] >= TARGETS["vs_recipe_ratio"],
        "p99_ms_at_1000": results["p99_ms_at_1000"] <= TARGETS["p99_ms_at_1000"]
        and statefleet_open["achieved_rate"] >= 0.98 * 1000 and statefleet_open["failures"] == 0,
        "sse_added_ttft_p99_ms": results["sse_added_ttft_p99_ms"] <= TARGETS["sse_added_ttft_p99_ms"],
        "no_wrk_errors": not any(e["runs_with_errors"] for e in results["wrk_errors"].values()),
    }
    return results
