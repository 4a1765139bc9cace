"""Helpers of the load-test tests: ``statefleet serve`` subprocesses, the tester as a subprocess, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from statefleet.loadtest import processes
from statefleet.testing import ServeProcess

AGENTS = Path(__file__).with_name("agents.py")


class Instance(ServeProcess):
    """One ``statefleet serve`` process on a free port (call ``wait_ready``)."""

    def __init__(self, store: str, logdir: Path, agent: str = f"{AGENTS}:agent", *extra: str) -> None:
        super().__init__(agent, store, "--lease-ttl", "1", "--drain-timeout", "5", "--log-level", "warning", *extra,
                         log=logdir / f"instance-{id(self)}.log")
        self.log = self.log_path

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            super().wait_ready(timeout)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None

    def stop(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Stop this instance and whatever the tester restarted on its port."""
        for pid in {self.proc.pid, *processes.find_listening(self.port)}:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout)


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
