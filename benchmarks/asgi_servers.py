"""Which ASGI server runs statefleet fastest: uvicorn (uvloop + httptools) or granian.

The same app object (``benchmarks/apps/statefleet_asgi.py``, echo agent, window 5) under each server with 2
worker processes, against one fresh redis-server, ``wrk -t1 -c64`` posting to 10,000 random conversations;
servers alternate for ``rounds`` rounds and the medians are compared.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from statefleet.testing.serve_process import wait_until_ready

from ._servers import free_port, redis_server
from .http import ROOT, WORKERS, App, run_wrk

SERVERS = {
    "uvicorn": ("-m", "uvicorn", "benchmarks.apps.statefleet_asgi:app", "--workers", str(WORKERS), "--loop",
                "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning", "--host", "127.0.0.1",
                "--port"),
    "granian": ("-m", "granian", "--interface", "asgi", "--workers", str(WORKERS), "--loop", "uvloop",
                "--no-access-log", "--log-level", "warning", "--host", "127.0.0.1",
                "benchmarks.apps.statefleet_asgi:app", "--port"),
}


def _serve(name: str, redis_url: str) -> tuple[subprocess.Popen[bytes], App]:
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, *SERVERS[name], str(port)], cwd=ROOT, stdout=log, stderr=log,
                            env={**os.environ, "BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)},
                            start_new_session=True)
    if not wait_until_ready(f"http://127.0.0.1:{port}", proc):
        log.seek(0)
        raise SystemExit(f"{name} did not start: {log.read()[-2000:]!r}")
    time.sleep(1.0)  # every worker up, not just the first
    return proc, App(name, (), port)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def run(quick: bool) -> dict[str, Any]:
    seconds, rounds = (3.0, 1) if quick else (10.0, 3)
    rates: dict[str, list[float]] = {name: [] for name in SERVERS}
    errors: dict[str, int] = {name: 0 for name in SERVERS}
    with redis_server() as redis_url:
        for r in range(rounds):
            for name in list(SERVERS)[r % 2:] + list(SERVERS)[: r % 2]:
                proc, app = _serve(name, redis_url)
                try:
                    run_wrk(app, 1.0)  # warm up
                    result = run_wrk(app, seconds)
                finally:
                    _stop(proc)
                rates[name].append(round(result["ok_per_s"]))
                errors[name] += result["errors"]
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {"seconds": seconds, "rounds": rounds, "workers": WORKERS, "turns_per_s": medians,
            "turns_per_s_by_round": rates, "errors": errors,
            "granian_vs_uvicorn": round(medians["granian"] / medians["uvicorn"], 3)}
