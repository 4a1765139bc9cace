"""A ``statefleet serve`` child process on a free loopback port: what the demo, the tests and the benchmarks
start when they need real instances."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from signal import SIGTERM, Signals

import httpx

from .redis_server import free_port


def wait_until_ready(
    url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0, path: str = "/readyz"
) -> bool:
    """Poll ``url + path`` until it answers 200; False if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


class ServeProcess:
    """``statefleet serve APP --store STORE --port <free> *args``; output to ``log`` (or discarded)."""

    def __init__(self, app: str, store: str, *args: str, log: Path | None = None,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        output = subprocess.DEVNULL if log is None else open(log, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "statefleet", "serve", app, "--store", store, "--port", str(self.port), *args],
                stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()  # type: ignore[union-attr]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once ``/readyz`` answers 200; ``RuntimeError`` with the log's tail otherwise."""
        if not wait_until_ready(self.url, self.proc, timeout):
            state = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "not ready"
            raise RuntimeError(f"statefleet serve on port {self.port} {state} within {timeout} s: {self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def signal(self, sig: Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: Signals = SIGTERM, timeout: float = 30.0) -> None:
        """Send ``sig`` (drain by default) and wait; kill it if it does not exit in ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
