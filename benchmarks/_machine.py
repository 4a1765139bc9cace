"""How fast this machine runs Python and system calls right now, so figures from different runs compare.

The machine is shared: the same benchmark has measured a 3x different floor on different days. Each run
records ``machine()`` next to its figures: ``python_speed()`` (a fixed CPU-bound workload of the kind a server
does: JSON, dicts, calls) and ``loopback_round_trips()`` (local socket round trips); the llm benchmark also
records the CPU seconds of the instance it measures (``cpu_seconds``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time


def python_speed(seconds: float = 1.0) -> float:
    """Thousands of work units per second on one core (higher is faster), best of a few short rounds."""
    payload = {"type": "token", "message_id": "m-0001", "text": "hello ", "turn": 3, "data": [1, 2, 3]}
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for i in range(2000):
            event = json.loads(json.dumps(payload))
            event["turn"] = i
            _ = sorted(event.items())
        best = max(best, 2000 / (time.perf_counter() - started))
    return round(best / 1000, 1)


def loopback_round_trips(count: int = 20_000) -> int:
    """One-byte round trips per second over a local socket pair between two threads: what the kernel and the
    hypervisor charge for the system calls every request makes (this figure has moved 3x between days)."""
    ours, theirs = socket.socketpair()

    def echo() -> None:
        while data := theirs.recv(64):
            theirs.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        started = time.perf_counter()
        for _ in range(count):
            ours.sendall(b"x")
            ours.recv(64)
        return round(count / (time.perf_counter() - started))
    finally:
        ours.close()
        thread.join(5)
        theirs.close()


def machine() -> dict[str, float]:
    """The two calibration figures recorded next to every benchmark's results."""
    return {"python_speed": python_speed(), "loopback_round_trips_per_s": loopback_round_trips()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads); 0.0 where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
