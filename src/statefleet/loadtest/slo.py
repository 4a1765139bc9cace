"""``--slo``: service-level objectives a run must meet, for CI gates (the exit code is 1 when one fails).

``--slo "p99<200ms,errors<0.1%,continuity=100%"`` — comma-separated ``METRIC OP VALUE``:

- latency ``p50``, ``p90``, ``p99``, ``p99.9``, ``max`` and ``ttft_p50`` … ``ttft_max``: a duration (ms, s);
- ``errors``: failed user-visible turns, in % of turns; ``retries``: retried requests, in % of turns;
- ``continuity``: turns without any continuity violation, in %;
- ``lost``, ``duplicated``, ``reordered``, ``stale``: counts; ``throughput``: turns per second;
- ``recovery``: the longest recovery time after an injected failure (a duration).

OP is one of ``<``, ``<=``, ``>``, ``>=``, ``=``.

>>> [c.metric for c in parse_slo("p99<200ms,errors<0.1%,continuity=100%")]
['p99', 'errors', 'continuity']
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .units import parse_duration, parse_number

_LATENCY = ("p50", "p90", "p99", "p99.9", "max")
_DURATIONS = {*_LATENCY, *(f"ttft_{p}" for p in _LATENCY), "recovery"}
_PERCENTS = {"errors", "retries", "continuity"}
_COUNTS = {"lost", "duplicated", "reordered", "stale", "throughput"}
METRICS = (*_LATENCY, *(f"ttft_{p}" for p in _LATENCY), "recovery", *sorted(_PERCENTS), *sorted(_COUNTS))
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "=": lambda a, b: abs(a - b) < 1e-9,
}
_CLAUSE = re.compile(r"^\s*([a-z_.0-9]+)\s*(<=|>=|<|>|=)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Objective:
    """One clause: ``metric op value`` (durations in seconds, percentages in %)."""

    metric: str
    op: str
    value: float
    text: str

    def check(self, actual: float) -> bool:
        return _OPS[self.op](actual, self.value)


def parse_slo(text: str) -> list[Objective]:
    out: list[Objective] = []
    for clause in text.split(","):
        match = _CLAUSE.match(clause)
        if match is None:
            raise ConfigError(f"--slo clause {clause.strip()!r} is not METRIC OP VALUE (for example p99<200ms, "
                              "errors<0.1%, continuity=100%)")
        metric, op, raw = match.groups()
        if metric not in METRICS:
            raise ConfigError(f"--slo clause {clause.strip()!r}: unknown metric {metric!r}; use one of "
                              + ", ".join(METRICS))
        if metric in _DURATIONS:
            value = parse_duration(raw, f"--slo {metric}")
        elif metric in _PERCENTS:
            if not raw.endswith("%"):
                raise ConfigError(f"--slo clause {clause.strip()!r}: {metric} is a percentage, like {metric}<0.1%")
            value = parse_number(raw[:-1], f"--slo {metric}")
            if value > 100:
                raise ConfigError(f"--slo clause {clause.strip()!r}: a percentage is at most 100%")
        else:
            value = parse_number(raw, f"--slo {metric}")
        out.append(Objective(metric, op, value, clause.strip()))
    return out


def actual_value(metric: str, result: dict[str, Any]) -> float:
    """The value of ``metric`` in a run's result (seconds for durations, % for percentages)."""
    totals = result["totals"]
    if metric in _LATENCY:
        return float(result["latency_ms"][metric]) / 1000
    if metric.startswith("ttft_"):
        return float(result["ttft_ms"][metric[5:]]) / 1000
    if metric == "recovery":
        times = [e["recovery_s"] for e in result["timeline"] if e.get("recovery_s") is not None]
        unrecovered = any(e.get("recovery_s") is None and e.get("ok") for e in result["timeline"])
        return float("inf") if unrecovered else max(times, default=0.0)
    attempted = max(1, int(totals["turns"]) + int(totals["failed_turns"]))
    if metric == "errors":
        return 100.0 * float(totals["failed_turns"]) / attempted
    if metric == "retries":
        return 100.0 * float(totals["retries"]) / attempted
    if metric == "continuity":
        bad = sum(int(totals[k]) for k in ("lost", "duplicated", "reordered", "stale"))
        return max(0.0, 100.0 * (1 - bad / attempted))
    if metric == "throughput":
        return float(totals["turns_per_s"])
    return float(totals[metric])


def evaluate(objectives: list[Objective], result: dict[str, Any]) -> dict[str, Any]:
    """Each objective with its actual value and whether it held, and ``passed`` for all of them."""
    checks = []
    for objective in objectives:
        actual = actual_value(objective.metric, result)
        checks.append({"objective": objective.text, "metric": objective.metric, "actual": actual,
                       "passed": objective.check(actual)})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}
