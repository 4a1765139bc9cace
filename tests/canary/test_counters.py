"""The per-turn counters an instance publishes, and the arithmetic canary analysis does on them."""

from __future__ import annotations

import json
import random

import pytest

from statefleet.engine.turn_counters import (
    TTFT_SECONDS_BOUNDS,
    TURN_SECONDS_BOUNDS,
    TurnCounters,
    VersionCounters,
)
from statefleet.observability.metrics import TTFT_BUCKETS, TURN_BUCKETS
from statefleet.status import quantile as status_quantile


def counters_of(*turns: tuple[bool, float], first_tokens: tuple[float, ...] = ()) -> VersionCounters:
    recorder = TurnCounters()
    for ok, seconds in turns:
        recorder.record_turn(ok, seconds)
    for seconds in first_tokens:
        recorder.record_first_token(seconds)
    return VersionCounters.from_snapshot(recorder.snapshot())


def test_bounds_are_the_prometheus_histograms_so_both_sources_quantize_alike() -> None:
    assert TURN_SECONDS_BOUNDS == TURN_BUCKETS
    assert TTFT_SECONDS_BOUNDS == TTFT_BUCKETS


def test_snapshot_counts_turns_errors_and_buckets_and_is_json() -> None:
    recorder = TurnCounters()
    recorder.record_turn(True, 0.1)  # exactly on a bound: that bound's bucket, like Prometheus' le
    recorder.record_turn(False, 0.2)
    recorder.record_turn(True, 1000.0)  # beyond the last bound: the +Inf bucket
    recorder.record_first_token(0.02)

    snapshot = json.loads(json.dumps(recorder.snapshot()))

    assert snapshot["turns"] == 3 and snapshot["errors"] == 1 and snapshot["ttft_count"] == 1
    assert len(snapshot["turn_buckets"]) == len(TURN_SECONDS_BOUNDS) + 1
    assert snapshot["turn_buckets"][TURN_SECONDS_BOUNDS.index(0.1)] == 1
    assert snapshot["turn_buckets"][TURN_SECONDS_BOUNDS.index(0.25)] == 1
    assert snapshot["turn_buckets"][-1] == 1
    assert snapshot["ttft_buckets"][TTFT_SECONDS_BOUNDS.index(0.025)] == 1
    assert not hasattr(recorder, "__dict__")  # slots: the hot path allocates no per-instance dict


def test_snapshot_is_a_copy_not_a_live_view() -> None:
    recorder = TurnCounters()
    snapshot = recorder.snapshot()
    recorder.record_turn(True, 0.1)
    assert sum(snapshot["turn_buckets"]) == 0


def test_from_snapshot_tolerates_missing_and_malformed_fields() -> None:
    assert VersionCounters.from_snapshot({}) == VersionCounters.zero()
    partial = VersionCounters.from_snapshot({"turns": 5, "errors": "x", "turn_buckets": [1, 2], "ttft_count": -3})
    assert partial.turns == 5 and partial.errors == 0 and partial.ttft_count == 0
    assert not any(partial.turn_buckets)  # another length means other bounds: unusable, so empty


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    # 50 turns ≤ 100 ms, 40 in (100, 250] ms, 10 in (250, 500] ms
    counters = counters_of(*[(True, 0.08)] * 50, *[(True, 0.2)] * 40, *[(True, 0.4)] * 10)
    # rank 99 of 100 lies 9/10 into the (0.25, 0.5] bucket
    assert counters.turn_quantile(0.99) == pytest.approx(0.25 + 0.25 * 0.9)
    # rank 50 is the last turn of the (0.05, 0.1] bucket
    assert counters.turn_quantile(0.5) == pytest.approx(0.1)
    cumulative = dict.fromkeys((*TURN_SECONDS_BOUNDS, float("inf")), 0.0)
    running = 0
    for bound, count in zip((*TURN_SECONDS_BOUNDS, float("inf")), counters.turn_buckets, strict=True):
        running += count
        cumulative[bound] = float(running)
    for q in (0.5, 0.9, 0.95, 0.99):
        assert counters.turn_quantile(q) == pytest.approx(status_quantile(q, cumulative))


def test_quantile_of_a_uniform_distribution_is_close_to_the_true_one() -> None:
    rng = random.Random(7)
    counters = counters_of(*[(True, rng.uniform(0.0, 1.0)) for _ in range(20_000)],
                           first_tokens=tuple(rng.uniform(0.0, 2.0) for _ in range(20_000)))
    # Linear interpolation is exact for a uniform distribution, up to sampling noise.
    assert counters.turn_quantile(0.99) == pytest.approx(0.99, abs=0.01)
    assert counters.turn_quantile(0.5) == pytest.approx(0.5, abs=0.02)
    assert counters.ttft_quantile(0.99) == pytest.approx(1.98, abs=0.03)


def test_quantile_beyond_the_last_bound_answers_the_last_bound_and_empty_answers_none() -> None:
    assert counters_of((True, 900.0)).turn_quantile(0.99) == TURN_SECONDS_BOUNDS[-1]
    assert VersionCounters.zero().turn_quantile(0.99) is None
    assert VersionCounters.zero().ttft_quantile(0.99) is None
    assert VersionCounters.zero().error_rate is None
    with pytest.raises(ValueError, match="outside"):
        VersionCounters.zero().turn_quantile(99)


def test_error_rate() -> None:
    assert counters_of(*[(True, 0.1)] * 8, *[(False, 0.1)] * 2).error_rate == pytest.approx(0.2)


def test_minus_gives_the_interval_and_clamps_at_zero() -> None:
    before = counters_of(*[(True, 0.1)] * 10, (False, 0.3), first_tokens=(0.05,))
    after = counters_of(*[(True, 0.1)] * 15, (False, 0.3), (False, 2.0), first_tokens=(0.05, 0.05))

    interval = after.minus(before)

    assert (interval.turns, interval.errors, interval.ttft_count) == (6, 1, 1)
    assert sum(interval.turn_buckets) == 6 and sum(interval.ttft_buckets) == 1
    # A restarted process counts from zero again: the "difference" is clamped, never negative.
    restarted = counters_of((True, 0.1)).minus(before)
    assert restarted.turns == 0 and restarted.errors == 0 and min(restarted.turn_buckets) == 0
    assert restarted.ttft_count == 0 and min(restarted.ttft_buckets) == 0


def test_plus_adds_every_field() -> None:
    a = counters_of((True, 0.1), (False, 0.3), first_tokens=(0.05,))
    b = counters_of((True, 0.1), first_tokens=(0.05, 0.2))
    total = a.plus(b)
    assert (total.turns, total.errors, total.ttft_count) == (3, 1, 3)
    assert total.turn_buckets == tuple(x + y for x, y in zip(a.turn_buckets, b.turn_buckets, strict=True))
    assert total.minus(b) == a


def test_histograms_with_other_bounds_combine_only_when_one_is_empty() -> None:
    coarse = VersionCounters(turns=4, turn_buckets=(3, 1, 0), turn_bounds=(0.1, 1.0))
    assert VersionCounters.zero().plus(coarse).turn_bounds == (0.1, 1.0)
    assert coarse.plus(VersionCounters(turns=1)).turn_buckets == (3, 1, 0)
    with pytest.raises(ValueError, match="different bucket bounds"):
        coarse.plus(counters_of((True, 0.1)))
    with pytest.raises(ValueError, match="turn buckets"):
        VersionCounters(turn_buckets=(1, 2), turn_bounds=(0.1, 1.0))
