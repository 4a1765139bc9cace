"""A typed face of ``hdrhistogram`` (which ships no type hints): latencies in microseconds, 3 digits."""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

#: 1 µs .. 10 min, 3 significant digits: 0.1 % error on every percentile.
LOWEST_US = 1
HIGHEST_US = 600_000_000
#: The percentiles a summary reports, by name.
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


class Histogram:
    """Latency histogram (HDR): exact percentiles within 0.1 %, mergeable across processes."""

    __slots__ = ("_h",)

    def __init__(self, digits: int = 3, _h: Any = None) -> None:
        self._h = _h if _h is not None else HdrHistogram(LOWEST_US, HIGHEST_US, digits)

    def record(self, seconds: float) -> None:
        us = int(seconds * 1_000_000)
        self._h.record_value(min(max(us, LOWEST_US), HIGHEST_US))

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile in seconds (0 when empty)."""
        if self.count == 0:
            return 0.0
        return float(self._h.get_value_at_percentile(p)) / 1_000_000

    @property
    def max(self) -> float:
        return float(self._h.get_max_value()) / 1_000_000 if self.count else 0.0

    @property
    def mean(self) -> float:
        return float(self._h.get_mean_value()) / 1_000_000 if self.count else 0.0

    def summary_ms(self) -> dict[str, float]:
        """``p50``, ``p90``, ``p99``, ``p99.9`` and ``max`` in ms, and ``count`` (all 0 when empty)."""
        out = {name: round(self.percentile(p) * 1000, 3) for name, p in PERCENTILES}
        out["max"] = round(self.max * 1000, 3)
        out["count"] = self.count
        return out

    def merge(self, other: Histogram) -> None:
        if other.count:
            self._h.add(other._h)

    def encode(self) -> str:
        return bytes(self._h.encode()).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Histogram:
        return cls(_h=HdrHistogram.decode(text.encode("ascii")))

    def distribution(self, points: int = 200) -> list[tuple[float, float]]:
        """``(percentile, seconds)`` pairs on a log scale of 1/(1-p), for a percentile-distribution plot."""
        if self.count == 0:
            return []
        out: list[tuple[float, float]] = []
        for i in range(points + 1):
            # 0 → p0, points → p99.999
            p = 100.0 * (1 - 10 ** (-5 * i / points))
            out.append((p, self.percentile(p)))
        return out
