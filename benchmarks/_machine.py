"""How fast this machine runs Python right now, so figures from different runs can be compared.

The machine is shared: the same benchmark has measured a 3x different floor on different days. Each run
records ``python_speed()`` (a fixed CPU-bound workload of the kind a server does: JSON, dicts, calls) next to
its figures, and the CPU seconds the measured processes used.
"""

from __future__ import annotations

import json
import os
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads); 0.0 where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
