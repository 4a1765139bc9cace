"""What an instance counts per turn for canary analysis, published in its fleet registry entry.

``TurnCounters`` is the recorder on the hot path: one call per finished turn (and per first token), a bisect on
a tuple and a list increment. Its ``snapshot()`` is cumulative over the life of the process and goes into the
registry entry as ``"counters"``. ``VersionCounters`` is the immutable arithmetic the analysis does on
snapshots: differences between two reads, sums over instances, error rate and quantiles.

Buckets are per bucket (not cumulative): ``turn_buckets[i]`` counts turns of at most ``bounds[i]`` seconds and
more than ``bounds[i - 1]``; the last entry counts the rest (``+Inf``). The bounds equal the Prometheus
histograms' (``statefleet_turn_duration_seconds``, ``statefleet_time_to_first_token_seconds``), so both
sources of the analysis quantize latencies the same way.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Upper bounds (seconds) of the end-to-end turn latency buckets; a last ``+Inf`` bucket is implicit.
TURN_SECONDS_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)
#: Upper bounds (seconds) of the time-to-first-token buckets; a last ``+Inf`` bucket is implicit.
TTFT_SECONDS_BOUNDS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)


class TurnCounters:
    """Cumulative per-process counts of finished turns, their latency and their time to first token.

    >>> counters = TurnCounters()
    >>> counters.record_turn(True, 0.2)
    >>> counters.snapshot()["turns"]
    1
    """

    __slots__ = ("_ttft_buckets", "_turn_buckets", "errors", "ttft_count", "turns")

    def __init__(self) -> None:
        self.turns = 0
        self.errors = 0
        self.ttft_count = 0
        self._turn_buckets = [0] * (len(TURN_SECONDS_BOUNDS) + 1)
        self._ttft_buckets = [0] * (len(TTFT_SECONDS_BOUNDS) + 1)

    def record_turn(self, ok: bool, seconds: float) -> None:
        """A turn finished: ``ok`` False when it failed; ``seconds`` from acceptance to commit."""
        self.turns += 1
        if not ok:
            self.errors += 1
        # bisect_left puts a value equal to a bound in that bound's bucket, as Prometheus' ``le`` does.
        self._turn_buckets[bisect_left(TURN_SECONDS_BOUNDS, seconds)] += 1

    def record_first_token(self, seconds: float) -> None:
        """A turn emitted its first token ``seconds`` after its message was accepted."""
        self.ttft_count += 1
        self._ttft_buckets[bisect_left(TTFT_SECONDS_BOUNDS, seconds)] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counts so far, as JSON-able values (what the registry entry carries as ``"counters"``)."""
        return {
            "turns": self.turns,
            "errors": self.errors,
            "turn_buckets": list(self._turn_buckets),
            "ttft_count": self.ttft_count,
            "ttft_buckets": list(self._ttft_buckets),
        }


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(int(value), 0)


def _buckets(value: object, bounds: tuple[float, ...]) -> tuple[int, ...]:
    # Another length means other bounds (an instance of another statefleet release): unusable, so empty.
    if not isinstance(value, list) or len(value) != len(bounds) + 1:
        return (0,) * (len(bounds) + 1)
    return tuple(_int(v) for v in value)


def _quantile(q: float, bounds: tuple[float, ...], buckets: tuple[int, ...]) -> float | None:
    """Prometheus' ``histogram_quantile`` over per-bucket counts: linear interpolation inside the bucket."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q!r} is outside [0, 1]")
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, count in enumerate(buckets):
        if count and cumulative + count >= rank:
            if i == len(bounds):
                # The +Inf bucket has no width: like Prometheus, answer the highest finite bound.
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * ((rank - cumulative) / count)
        cumulative += count
    return bounds[-1] if bounds else None


@dataclass(frozen=True)
class VersionCounters:
    """Counts of one version over some span (cumulative, or one interval): the analysis' unit of evidence."""

    #: Finished turns.
    turns: int = 0
    #: Of those, the failed ones.
    errors: int = 0
    #: End-to-end latency, one count per bucket of ``turn_bounds`` plus a last ``+Inf`` bucket.
    turn_buckets: tuple[int, ...] = (0,) * (len(TURN_SECONDS_BOUNDS) + 1)
    #: Turns that emitted a first token.
    ttft_count: int = 0
    #: Time to first token, one count per bucket of ``ttft_bounds`` plus a last ``+Inf`` bucket.
    ttft_buckets: tuple[int, ...] = (0,) * (len(TTFT_SECONDS_BOUNDS) + 1)
    #: Upper bounds of ``turn_buckets`` (other than the default for histograms read from Prometheus).
    turn_bounds: tuple[float, ...] = TURN_SECONDS_BOUNDS
    #: Upper bounds of ``ttft_buckets``.
    ttft_bounds: tuple[float, ...] = TTFT_SECONDS_BOUNDS

    def __post_init__(self) -> None:
        if len(self.turn_buckets) != len(self.turn_bounds) + 1:
            raise ValueError(f"{len(self.turn_buckets)} turn buckets for {len(self.turn_bounds)} bounds + Inf")
        if len(self.ttft_buckets) != len(self.ttft_bounds) + 1:
            raise ValueError(f"{len(self.ttft_buckets)} TTFT buckets for {len(self.ttft_bounds)} bounds + Inf")

    @classmethod
    def zero(cls) -> VersionCounters:
        """No turns at all (with the default bounds)."""
        return cls()

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> VersionCounters:
        """Counts from a ``TurnCounters.snapshot()``; missing or malformed fields count as zeros."""
        return cls(
            turns=_int(snapshot.get("turns")),
            errors=_int(snapshot.get("errors")),
            turn_buckets=_buckets(snapshot.get("turn_buckets"), TURN_SECONDS_BOUNDS),
            ttft_count=_int(snapshot.get("ttft_count")),
            ttft_buckets=_buckets(snapshot.get("ttft_buckets"), TTFT_SECONDS_BOUNDS),
        )

    def plus(self, other: VersionCounters) -> VersionCounters:
        """The sum of both spans' counts.

        Histograms must have the same bounds, except that an empty one takes the other's (Prometheus reports
        no buckets for a version without observations). Else ``ValueError``.
        """
        return self._combine(other, 1)

    def minus(self, other: VersionCounters) -> VersionCounters:
        """These counts less ``other``'s (an earlier read of the same counters), each field clamped at 0."""
        return self._combine(other, -1)

    def _combine(self, other: VersionCounters, sign: int) -> VersionCounters:
        turn_bounds, turn_buckets = _histogram(self.turn_bounds, self.turn_buckets, other.turn_bounds,
                                               other.turn_buckets, sign)
        ttft_bounds, ttft_buckets = _histogram(self.ttft_bounds, self.ttft_buckets, other.ttft_bounds,
                                               other.ttft_buckets, sign)
        return VersionCounters(
            turns=max(self.turns + sign * other.turns, 0),
            errors=max(self.errors + sign * other.errors, 0),
            turn_buckets=turn_buckets,
            ttft_count=max(self.ttft_count + sign * other.ttft_count, 0),
            ttft_buckets=ttft_buckets,
            turn_bounds=turn_bounds,
            ttft_bounds=ttft_bounds,
        )

    @property
    def error_rate(self) -> float | None:
        """Failed turns / turns; None without turns."""
        return self.errors / self.turns if self.turns else None

    def turn_quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of end-to-end turn latency in seconds; None without observations."""
        return _quantile(q, self.turn_bounds, self.turn_buckets)

    def ttft_quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of time to first token in seconds; None without observations."""
        return _quantile(q, self.ttft_bounds, self.ttft_buckets)


def _histogram(
    bounds: tuple[float, ...], buckets: tuple[int, ...], other_bounds: tuple[float, ...],
    other_buckets: tuple[int, ...], sign: int,
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """``buckets`` plus ``sign`` × ``other_buckets``, per bucket, clamped at 0."""
    if bounds == other_bounds:
        return bounds, tuple(max(x + sign * y, 0) for x, y in zip(buckets, other_buckets, strict=True))
    if not any(other_buckets):
        return bounds, buckets
    if not any(buckets):
        return other_bounds, other_buckets if sign > 0 else (0,) * len(other_buckets)
    raise ValueError(f"cannot combine histograms with different bucket bounds: {bounds} and {other_bounds}")
