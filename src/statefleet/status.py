"""``statefleet status URL``: a live terminal view of the fleet, read from ``/v1/fleet`` and ``/metrics``.

Instances, versions, turns in flight, the fleet-wide inbox backlog, turns per second and takeovers come from
the fleet registry (every instance, as ``URL`` sees them); the p99 turn latency per version comes from
``URL``'s own ``/metrics`` (the instances behind that address). Rates are differences between two samples.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

#: Latency histogram the p99 column reads.
LATENCY = "statefleet_turn_duration_seconds"


@dataclass
class Sample:
    """One reading of the fleet."""

    at: float
    instances: list[dict[str, Any]]
    backlog: int
    #: version -> cumulative (upper bound, count) buckets of end-to-end turn latency.
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)


def read(client: httpx.Client, url: str) -> Sample:
    fleet = client.get(f"{url}/v1/fleet").raise_for_status().json()
    sample = Sample(time.monotonic(), list(fleet.get("instances", [])), int(fleet.get("backlog") or 0))
    response = client.get(f"{url}/metrics")
    if response.status_code == 200:
        for family in text_string_to_metric_families(response.text):
            if family.name != LATENCY:
                continue
            for s in family.samples:
                if s.name == LATENCY + "_bucket" and s.labels.get("phase") == "end_to_end":
                    per_version = sample.buckets.setdefault(s.labels.get("version", "?"), {})
                    bound = float(s.labels["le"])
                    per_version[bound] = per_version.get(bound, 0.0) + s.value
    return sample


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative buckets (linear within a bucket)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            width = count - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / width if width else 1.0)
        previous_bound, previous_count = bound, count
    return None


def _stat(instance: dict[str, Any], name: str) -> int:
    return int((instance.get("stats") or {}).get(name, 0))


def view(before: Sample, after: Sample, url: str) -> Group:
    """The fleet as a table per instance and a line per version."""
    elapsed = max(after.at - before.at, 1e-9)
    committed_before = {i.get("id"): _stat(i, "committed") for i in before.instances}
    table = Table(title=f"statefleet fleet via {url}", title_justify="left")
    for column in ("instance", "version", "address", "in flight", "waiting", "turns/s", "committed", "failed",
                   "takeovers", "fenced", "state"):
        table.add_column(column, justify="left" if column in ("instance", "version", "address", "state") else "right")
    per_version: dict[str, dict[str, float]] = {}
    for instance in after.instances:
        version = str(instance.get("version"))
        committed = _stat(instance, "committed")
        rate = max(0, committed - committed_before.get(instance.get("id"), committed)) / elapsed
        totals = per_version.setdefault(version, {"instances": 0, "in_flight": 0, "rate": 0.0, "takeovers": 0})
        totals["instances"] += 1
        totals["in_flight"] += int(instance.get("in_flight") or 0)
        totals["rate"] += rate
        totals["takeovers"] += _stat(instance, "takeovers")
        table.add_row(
            str(instance.get("id")), version, str(instance.get("address") or "-"), str(instance.get("in_flight", 0)),
            str(instance.get("waiting", 0)), f"{rate:.1f}", str(committed), str(_stat(instance, "failed")),
            str(_stat(instance, "takeovers")), str(_stat(instance, "fenced")),
            "draining" if instance.get("draining") else "serving",
        )
    versions = Table(title="by version", title_justify="left")
    for column in ("version", "instances", "in flight", "turns/s", "p99 turn (s)", "takeovers"):
        versions.add_column(column, justify="left" if column == "version" else "right")
    for version, totals in sorted(per_version.items()):
        p99 = quantile(0.99, _delta(before.buckets.get(version, {}), after.buckets.get(version, {})))
        versions.add_row(version, str(int(totals["instances"])), str(int(totals["in_flight"])),
                         f"{totals['rate']:.1f}", "-" if p99 is None else f"{p99:.3f}", str(int(totals["takeovers"])))
    header = Text(f"instances {len(after.instances)}   backlog {after.backlog}   "
                  f"turns/s {sum(t['rate'] for t in per_version.values()):.1f}")
    return Group(header, table, versions)


def _delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """Buckets observed between two samples; all of them when nothing new was observed."""
    delta = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    return delta if delta and max(delta.values()) > 0 else after


def run_status(url: str, *, once: bool, interval: float, console: Console | None = None) -> int:
    """Show the fleet behind ``url``: once (two samples ``interval`` apart), or refreshed until Ctrl-C."""
    from rich.live import Live

    url = url.rstrip("/")
    # Piped (a log, a CI step): wide enough for every column instead of the 80 a non-terminal gets.
    console = console or (Console() if sys.stdout.isatty() else Console(width=160))
    with httpx.Client(timeout=10) as client:
        before = read(client, url)
        time.sleep(interval)
        after = read(client, url)
        if once:
            console.print(view(before, after, url))
            return 0
        with Live(view(before, after, url), console=console, refresh_per_second=4) as live:
            while True:
                before = after
                time.sleep(interval)
                after = read(client, url)
                live.update(view(before, after, url))
