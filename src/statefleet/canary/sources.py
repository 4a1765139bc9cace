"""Where canary analysis reads each version's turns per interval: the fleet registry or Prometheus.

A source is called once to establish a baseline, then at the end of each interval; every call answers the
counts *since the previous call*, per version. Versions without turns in the span answer zeros.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ..engine.turn_counters import VersionCounters
from ..errors import StatefleetError
from ..store.base import Store


class MetricsQueryFailed(StatefleetError):
    """The metrics backend (Prometheus) did not answer a query, or answered an error."""

    code = "metrics_query_failed"
    status = 502


class MetricsSource(Protocol):
    """Per-version turn counts over consecutive intervals."""

    async def interval(self, versions: Sequence[str]) -> dict[str, VersionCounters]:
        """The counts of each of ``versions`` since the previous call (the first call only sets the baseline)."""
        ...


@dataclass
class _Seen:
    """What the last read saw of one instance."""

    version: str
    started_at: float | None
    counters: VersionCounters


class RegistrySource:
    """Counts from the fleet registry: each instance publishes its cumulative ``TurnCounters`` snapshot.

    The interval's count of a version is the sum over its instances of (this read − the previous read of that
    instance). An instance seen for the first time (or with a new ``started_at``: the same id restarted)
    counts from zero if it started after the previous read, since all its turns then fall in the interval;
    otherwise its first read is only a baseline. An instance gone from the registry contributes nothing
    further. Entries are as fresh as the instances' last heartbeat, and ``started_at`` is compared with this
    machine's clock, so a few seconds of skew or heartbeat lag shift turns between adjacent intervals.
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._seen: dict[str, _Seen] = {}
        self._read_at: float | None = None

    async def interval(self, versions: Sequence[str]) -> dict[str, VersionCounters]:
        """The counts of each of ``versions`` since the previous call (zeros on the first call)."""
        now = self._clock()
        entries = await self._store.instances()
        totals = {version: VersionCounters.zero() for version in versions}
        seen: dict[str, _Seen] = {}
        for entry in entries:
            instance_id = str(entry.get("id", ""))
            counters_field = entry.get("counters")
            if not instance_id or not isinstance(counters_field, dict):
                continue  # an instance of a release without counters: nothing to compare
            started = entry.get("started_at")
            started_at = float(started) if isinstance(started, (int, float)) else None
            current = _Seen(str(entry.get("version", "")), started_at, VersionCounters.from_snapshot(counters_field))
            seen[instance_id] = current
            delta = self._delta(self._seen.get(instance_id), current)
            if delta is not None and current.version in totals:
                totals[current.version] = totals[current.version].plus(delta)
        self._seen = seen
        self._read_at = now
        return totals

    def _delta(self, previous: _Seen | None, current: _Seen) -> VersionCounters | None:
        if self._read_at is None:
            return None
        if previous is not None and previous.started_at == current.started_at:
            return current.counters.minus(previous.counters)
        # New to us, or the same id restarted: all its turns are in this interval only if it started after
        # the previous read; else some predate it and this read can only be the next one's baseline.
        if current.started_at is not None and current.started_at > self._read_at:
            return current.counters
        return None


#: ``statefleet_turns_total`` outcomes that are finished turns (``rejected`` messages never ran one).
TURN_OUTCOMES = ("committed", "retried-after-takeover", "failed", "interrupted")
#: The outcome that counts as an error.
ERROR_OUTCOME = "failed"


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _promql_duration(seconds: float) -> str:
    millis = max(round(seconds * 1000), 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


class PrometheusSource:
    """Counts from Prometheus: ``increase()`` over the time since the previous call, per version.

    Turns are ``statefleet_turns_total`` with a finished outcome (``TURN_OUTCOMES``), errors those with
    ``outcome="failed"``; latencies come from the ``statefleet_turn_duration_seconds`` (``phase="end_to_end"``)
    and ``statefleet_time_to_first_token_seconds`` histograms, with the bucket bounds Prometheus reports.
    ``increase()`` extrapolates to fractions: the counts are rounded to whole turns.

    >>> source = PrometheusSource("http://prometheus:9090", agent="support")
    """

    def __init__(
        self, url: str, agent: str | None = None, *, timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.agent = agent
        self.timeout = timeout
        self._clock = clock
        self._last: float | None = None

    def _selector(self, version: str, *extra: str) -> str:
        labels = [f"version={_promql_string(version)}", *extra]
        if self.agent is not None:
            labels.insert(0, f"agent={_promql_string(self.agent)}")
        return "{" + ",".join(labels) + "}"

    def queries(self, version: str, seconds: float) -> dict[str, str]:
        """The PromQL queries for ``version`` over the last ``seconds``: turns, errors, turn and TTFT buckets."""
        window = _promql_duration(seconds)
        turns = self._selector(version, f'outcome=~"{"|".join(TURN_OUTCOMES)}"')
        errors = self._selector(version, f'outcome="{ERROR_OUTCOME}"')
        latency = self._selector(version, 'phase="end_to_end"')
        ttft = self._selector(version)
        return {
            "turns": f"sum(increase(statefleet_turns_total{turns}[{window}]))",
            "errors": f"sum(increase(statefleet_turns_total{errors}[{window}]))",
            "turn_buckets": f"sum by (le) (increase(statefleet_turn_duration_seconds_bucket{latency}[{window}]))",
            "ttft_buckets": f"sum by (le) (increase(statefleet_time_to_first_token_seconds_bucket{ttft}[{window}]))",
        }

    async def interval(self, versions: Sequence[str]) -> dict[str, VersionCounters]:
        """The counts of each of ``versions`` since the previous call (zeros on the first call)."""
        now = self._clock()
        previous, self._last = self._last, now
        if previous is None:
            return {version: VersionCounters.zero() for version in versions}
        seconds = now - previous
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            results = await asyncio.gather(*(self._version(client, v, seconds) for v in versions))
        return dict(zip(versions, results, strict=True))

    async def _version(self, client: httpx.AsyncClient, version: str, seconds: float) -> VersionCounters:
        queries = self.queries(version, seconds)
        turns, errors, turn_hist, ttft_hist = await asyncio.gather(
            *(self.query(client, queries[name]) for name in ("turns", "errors", "turn_buckets", "ttft_buckets")))
        turn_bounds, turn_buckets = _histogram(turn_hist)
        ttft_bounds, ttft_buckets = _histogram(ttft_hist)
        return VersionCounters(
            turns=_count(turns), errors=_count(errors), turn_buckets=turn_buckets, ttft_count=sum(ttft_buckets),
            ttft_buckets=ttft_buckets, turn_bounds=turn_bounds, ttft_bounds=ttft_bounds,
        )

    async def query(self, client: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to now; ``MetricsQueryFailed`` when Prometheus cannot say."""
        where = f"{self.url}/api/v1/query"
        try:
            response = await client.get(where, params={"query": promql})
            body = response.json()
        except httpx.HTTPError as exc:
            raise MetricsQueryFailed(f"Prometheus at {self.url} did not answer {promql!r}: {exc!r}") from exc
        except ValueError:
            raise MetricsQueryFailed(
                f"Prometheus at {self.url} answered HTTP {response.status_code} with no JSON to {promql!r}; "
                "is the URL the Prometheus server's base URL?") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else None
            raise MetricsQueryFailed(f"Prometheus at {self.url} refused {promql!r} (HTTP {response.status_code}): "
                                     f"{detail if isinstance(detail, str) else repr(body)}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise MetricsQueryFailed(f"Prometheus at {self.url} answered {promql!r} with no instant vector")
        return list(data["result"])


def _value(sample: dict[str, Any]) -> float:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise MetricsQueryFailed(f"Prometheus sample {sample!r} has no [time, value] pair") from None
    return value if math.isfinite(value) and value > 0 else 0.0


def _count(result: list[dict[str, Any]]) -> int:
    return round(sum(_value(sample) for sample in result))


def _histogram(result: list[dict[str, Any]]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Finite bounds and per-bucket counts from ``sum by (le)`` of cumulative ``_bucket`` increases."""
    cumulative: dict[float, float] = {}
    for sample in result:
        try:
            le = float(sample["metric"]["le"])
        except (KeyError, TypeError, ValueError):
            raise MetricsQueryFailed(f"Prometheus bucket sample {sample!r} has no numeric 'le' label") from None
        cumulative[le] = cumulative.get(le, 0.0) + _value(sample)
    bounds = tuple(sorted(b for b in cumulative if b != math.inf))
    buckets: list[int] = []
    below = 0
    for bound in (*bounds, math.inf):
        # Rounded extrapolations may dip below the previous bucket's: keep the cumulative counts monotonic.
        reached = max(round(cumulative.get(bound, below)), below)
        buckets.append(reached - below)
        below = reached
    return bounds, tuple(buckets)
