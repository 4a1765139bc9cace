"""What a run measured: latency and TTFT histograms, counts, errors by kind, and time series.

Everything here merges across processes (``to_dict``/``from_dict``/``merge``): percentiles come from merged
HDR histograms, never from averaging percentiles.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .histogram import Histogram

#: Width of the fine time buckets (max latency, disruption) in seconds.
FINE = 0.1


@dataclass
class Second:
    """What happened in one second of the run."""

    turns: int = 0
    errors: int = 0
    retries: int = 0
    latency: Histogram = field(default_factory=lambda: Histogram(digits=2))


@dataclass
class Fine:
    """What happened in one 100 ms bucket: for recovery times."""

    turns: int = 0
    troubled: int = 0
    max_latency: float = 0.0


@dataclass
class Recorder:
    """Collects one process's measurements; ``start`` is the run's time origin (``time.monotonic()``)."""

    start: float
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    turns: int = 0
    stream_turns: int = 0
    json_turns: int = 0
    #: Turns the user saw fail (after every allowed retry).
    failed_turns: int = 0
    retries: int = 0
    conversations_started: int = 0
    conversations_completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    continuity: Counter[str] = field(default_factory=Counter)
    #: A few examples of each continuity violation, for the report.
    violation_examples: list[str] = field(default_factory=list)
    seconds: dict[int, Second] = field(default_factory=dict)
    fine: dict[int, Fine] = field(default_factory=dict)
    #: CPU seconds this process used, and wall seconds it ran (its own saturation).
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def _second(self, now: float) -> Second:
        key = int(now - self.start)
        second = self.seconds.get(key)
        if second is None:
            second = self.seconds[key] = Second()
        return second

    def _fine(self, now: float) -> Fine:
        key = int((now - self.start) / FINE)
        bucket = self.fine.get(key)
        if bucket is None:
            bucket = self.fine[key] = Fine()
        return bucket

    def turn_done(self, now: float, latency: float, ttft: float | None, retries: int, streamed: bool) -> None:
        """A turn got its reply ``latency`` seconds after the user first sent it."""
        self.turns += 1
        if streamed:
            self.stream_turns += 1
        else:
            self.json_turns += 1
        self.latency.record(latency)
        if ttft is not None:
            self.ttft.record(ttft)
        second = self._second(now)
        second.turns += 1
        second.latency.record(latency)
        second.retries += retries
        bucket = self._fine(now)
        bucket.turns += 1
        if retries:
            bucket.troubled += 1
        bucket.max_latency = max(bucket.max_latency, latency)

    def error(self, now: float, kind: str) -> None:
        """A request failed with ``kind`` (it may still be retried)."""
        self.errors[kind] += 1
        self._second(now).errors += 1
        self._fine(now).troubled += 1

    def retry(self) -> None:
        self.retries += 1

    def turn_failed(self, now: float) -> None:
        self.failed_turns += 1
        self._fine(now).troubled += 1

    def violation(self, kind: str, example: str) -> None:
        self.continuity[kind] += 1
        if len(self.violation_examples) < 20:
            self.violation_examples.append(f"{kind}: {example}")

    # -- merging across processes ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "latency": self.latency.encode(),
            "ttft": self.ttft.encode(),
            "counts": {k: getattr(self, k) for k in _COUNTS},
            "errors": dict(self.errors),
            "continuity": dict(self.continuity),
            "violation_examples": self.violation_examples,
            "seconds": {k: [s.turns, s.errors, s.retries, s.latency.encode()] for k, s in self.seconds.items()},
            "fine": {k: [f.turns, f.troubled, f.max_latency] for k, f in self.fine.items()},
            "cpu_seconds": self.cpu_seconds,
            "wall_seconds": self.wall_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], start: float) -> Recorder:
        """Rebuild a recorder sent by another process; its times are moved onto ``start``."""
        rec = cls(start)
        shift = data["start"] - start
        rec.latency = Histogram.decode(data["latency"])
        rec.ttft = Histogram.decode(data["ttft"])
        for key, value in data["counts"].items():
            setattr(rec, key, value)
        rec.errors.update(data["errors"])
        rec.continuity.update(data["continuity"])
        rec.violation_examples = list(data["violation_examples"])
        for k, (turns, errors, retries, hist) in data["seconds"].items():
            rec.seconds[int(k) + round(shift)] = Second(turns, errors, retries, Histogram.decode(hist))
        for k, (turns, troubled, max_latency) in data["fine"].items():
            rec.fine[int(k) + round(shift / FINE)] = Fine(turns, troubled, max_latency)
        rec.cpu_seconds = data["cpu_seconds"]
        rec.wall_seconds = data["wall_seconds"]
        return rec

    def merge(self, other: Recorder) -> None:
        self.latency.merge(other.latency)
        self.ttft.merge(other.ttft)
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        self.continuity.update(other.continuity)
        self.violation_examples.extend(other.violation_examples[: max(0, 20 - len(self.violation_examples))])
        for key, sec in other.seconds.items():
            mine = self.seconds.setdefault(key, Second())
            mine.turns += sec.turns
            mine.errors += sec.errors
            mine.retries += sec.retries
            mine.latency.merge(sec.latency)
        for key, bucket in other.fine.items():
            fine = self.fine.setdefault(key, Fine())
            fine.turns += bucket.turns
            fine.troubled += bucket.troubled
            fine.max_latency = max(fine.max_latency, bucket.max_latency)
        self.cpu_seconds += other.cpu_seconds
        self.wall_seconds = max(self.wall_seconds, other.wall_seconds)


_COUNTS = ("turns", "stream_turns", "json_turns", "failed_turns", "retries", "conversations_started",
           "conversations_completed")


def recovery_times(rec: Recorder, events: list[float], end: float) -> list[float | None]:
    """Seconds from each injected failure (``events``, run-relative) until service was normal again.

    Troubled: a 100 ms bucket with an error, a retry or a failed turn, or a second whose p99 is above 3 × the
    p99 before the first failure (at least 50 ms). The recovery time is the end of the last troubled period
    before the next failure, minus the failure's time (0 when nothing was troubled); None when the run ended
    still troubled.
    """
    baseline = Histogram(digits=2)
    first = events[0] if events else end
    for key, second in rec.seconds.items():
        if key + 1 <= first:
            baseline.merge(second.latency)
    slow = max(0.05, 3 * baseline.percentile(99)) if baseline.count else 0.5
    out: list[float | None] = []
    for i, at in enumerate(events):
        until = events[i + 1] if i + 1 < len(events) else end
        last_bad: float | None = None
        # Buckets from the failure's up to (not into) the next failure's.
        for key in range(int(at / FINE), max(int(at / FINE) + 1, int(until / FINE))):
            bucket = rec.fine.get(key)
            if bucket is not None and bucket.troubled:
                last_bad = (key + 1) * FINE
        for key in range(int(at), max(int(at) + 1, int(until))):
            per_second = rec.seconds.get(key)
            if per_second is not None and per_second.latency.percentile(99) > slow:
                last_bad = max(last_bad or 0.0, min(float(key + 1), until))
        if last_bad is None:
            out.append(0.0)
        elif i + 1 == len(events) and last_bad >= end - FINE and end - at > 1:
            out.append(None)
        else:
            out.append(max(0.0, last_bad - at))
    return out
