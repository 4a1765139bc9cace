"""Helpers of the load-test tests: ``statefleet serve`` subprocesses, the tester as a subprocess, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from statefleet._redis_server import free_port
from statefleet.loadtest import _procs

AGENTS = Path(__file__).with_name("agents.py")


class Instance:
    """One ``statefleet serve`` process on a free port."""

    def __init__(self, store: str, logdir: Path, agent: str = f"{AGENTS}:agent", *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = logdir / f"instance-{self.port}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "statefleet", "serve", agent, "--store", store, "--port", str(self.port),
                 "--lease-ttl", "1", "--drain-timeout", "5", "--log-level", "warning", *extra],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"instance on {self.port} not ready; log:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop this instance and whatever the tester restarted on its port."""
        pids = {self.proc.pid, *_procs.find_listening(self.port)}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


def run_loadtest(args: list[str], workdir: Path, timeout: float = 150) -> tuple[int, dict[str, Any], str]:
    """Run ``statefleet loadtest`` as a subprocess; returns the exit code, the JSON result and the output."""
    result_path = workdir / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "statefleet", "loadtest", *args, "--json", str(result_path), "--quiet"],
        capture_output=True, text=True, timeout=timeout, cwd=workdir,
    )
    output = done.stdout + done.stderr
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    return done.returncode, result, output
