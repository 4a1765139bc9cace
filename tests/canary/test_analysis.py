"""Canary analysis: the decisions against a simulated fleet, and ``statefleet canary run``'s command line.

The decision logic is pure: it is driven here by a Fake source whose counts come from simulated turns recorded
in real ``TurnCounters``, and a Fake weights control. The same runs over the real fleet registry (SQLite) are
at the end.
"""

from __future__ import annotations

import json
import random
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from statefleet.canary import (
    CanaryPlan,
    CanaryResult,
    Decision,
    MetricsQueryFailed,
    MetricsSource,
    RegistrySource,
    run_canary,
)
from statefleet.canary.cli import parse_duration
from statefleet.canary.cli import run as run_command
from statefleet.engine.turn_counters import TurnCounters, VersionCounters
from statefleet.errors import ConfigError
from statefleet.store import Store, open_store

STEPS = (5, 10, 25, 50, 100)


@dataclass(frozen=True)
class Behaviour:
    """How one simulated version serves its turns."""

    error_rate: float = 0.001
    latency: tuple[float, float] = (0.1, 0.3)
    ttft: tuple[float, float] | None = (0.02, 0.08)


class FakeWeights:
    """The routing weights in memory, with every change and its reason kept."""

    def __init__(self, weights: dict[str, int]) -> None:
        self.current = dict(weights)
        self.changes: list[tuple[dict[str, int], str]] = []

    async def weights(self) -> dict[str, int]:
        return dict(self.current)

    async def set_weights(self, weights: dict[str, int], *, reason: str) -> None:
        assert sum(weights.values()) == 100 and min(weights.values()) >= 0, weights
        self.current = dict(weights)
        self.changes.append((dict(weights), reason))


def simulate(rng: random.Random, behaviour: Behaviour, turns: int,
             counters: TurnCounters | None = None) -> TurnCounters:
    counters = counters or TurnCounters()
    for _ in range(turns):
        counters.record_turn(rng.random() >= behaviour.error_rate, rng.uniform(*behaviour.latency))
        if behaviour.ttft is not None:
            counters.record_first_token(rng.uniform(*behaviour.ttft))
    return counters


class FakeFleetSource:
    """Each interval, ``turns`` turns split between the versions by the weights in force, served as simulated."""

    def __init__(self, control: FakeWeights, behaviours: dict[str, Behaviour], turns: int = 5000) -> None:
        self.control = control
        self.behaviours = behaviours
        self.turns = turns
        self.calls = 0
        self.rng = random.Random(14)

    async def interval(self, versions: Sequence[str]) -> dict[str, VersionCounters]:
        self.calls += 1
        counts = {}
        for version in versions:
            share = round(self.turns * self.control.current.get(version, 0) / 100)
            recorded = simulate(self.rng, self.behaviours[version], share)
            counts[version] = VersionCounters.from_snapshot(recorded.snapshot())
        return counts


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def canary(plan: CanaryPlan, control: FakeWeights,
                 source: MetricsSource) -> tuple[CanaryResult, FakeClock, list[Decision]]:
    clock = FakeClock()
    seen: list[Decision] = []
    result = await run_canary(plan, source, control, sleep=clock.sleep, clock=clock, on_decision=seen.append)
    assert seen == result.decisions
    return result, clock, seen


async def test_a_candidate_failing_20_percent_is_rolled_back_at_the_first_interval() -> None:
    # Given v1 serving everything and a v2 that fails one turn in five
    control = FakeWeights({"v1": 100})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour(error_rate=0.2)})
    plan = CanaryPlan("v1", "v2", STEPS, interval=60)
    # When the canary runs
    result, clock, decisions = await canary(plan, control, source)
    # Then it is caught at the end of the first interval, back to 0, with the evidence in the log
    assert result.outcome == "rolled_back" and result.exit_code == 1
    assert [d.verdict for d in decisions] == ["start", "rollback"]
    assert len(clock.sleeps) == 1
    assert control.current == {"v1": 100, "v2": 0}
    assert [w for w, _ in control.changes] == [{"v1": 95, "v2": 5}, {"v1": 100, "v2": 0}]
    rollback = decisions[-1]
    assert (rollback.weight_before, rollback.weight_after, rollback.step) == (5, 0, 1)
    assert rollback.reason.startswith("candidate error rate ")
    assert "> 1.5 × max(baseline 0.1%" in rollback.reason and "floor 1.0%)" in rollback.reason
    assert rollback.evidence["v2"]["turns"] == 250 and 0.15 < rollback.evidence["v2"]["error_rate"] < 0.25
    assert rollback.evidence["v1"]["turns"] == 4750
    line = str(rollback)
    assert "canary v2 step 1/5 rollback 5% → 0%: candidate error rate" in line
    assert "v2 250 turns" in line and "\n" not in line
    assert "rollback" in control.changes[-1][1] and control.changes[-1][1].startswith("canary v2: step 1/5")


async def test_a_healthy_candidate_is_promoted_through_every_step_to_100() -> None:
    control = FakeWeights({"v1": 100})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour()})
    result, clock, decisions = await canary(CanaryPlan("v1", "v2", STEPS, interval=60), control, source)

    assert result.outcome == "promoted" and result.exit_code == 0
    assert [d.verdict for d in decisions] == ["start", "promote", "promote", "promote", "promote", "promoted"]
    assert [(d.weight_before, d.weight_after) for d in decisions] == [
        (0, 5), (5, 10), (10, 25), (25, 50), (50, 100), (100, 100)]
    assert control.current == {"v1": 0, "v2": 100}
    assert len(clock.sleeps) == 5 and source.calls == 6
    # Every weight change is explained for the audit log, and every decision reads as one line
    assert all(reason.startswith("canary v2: step ") for _, reason in control.changes)
    assert "healthy: error" in decisions[1].reason and "p99" in decisions[1].reason
    assert "ttft p99" in decisions[1].reason
    # At 100% the simulated baseline has no turns left: the last check is against its sample of step 4
    assert decisions[-1].reason.startswith(
        "baseline v1 had no turns, compared with its sample of step 4 (2500 turns); healthy at the last step: ")


async def test_a_baseline_that_never_had_turns_is_replaced_by_the_floors() -> None:
    control = FakeWeights({"v1": 100})
    fast = Behaviour(latency=(0.01, 0.04), ttft=None)
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": fast})
    result, _, decisions = await canary(CanaryPlan("v1", "v2", (100,), interval=60), control, source)
    assert result.outcome == "promoted"
    assert decisions[-1].reason.startswith("baseline v1 had no turns, compared with the floors only; healthy")
    assert "error 0.1% vs n/a (limit 1.5%); p99 " in decisions[-1].reason
    # The same candidate at 100 ms is not within 1.3 × the 50 ms floor
    control = FakeWeights({"v1": 100})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour(latency=(0.05, 0.1), ttft=None)})
    result, _, decisions = await canary(CanaryPlan("v1", "v2", (100,), interval=60), control, source)
    assert result.outcome == "rolled_back"
    assert "candidate p99 100ms > 1.3 × max(baseline n/a, floor 50ms) = 65ms" in decisions[-1].reason


async def test_too_few_turns_hold_then_end_inconclusive_with_the_weights_restored() -> None:
    # 300 turns an interval: 60 at 20%, which do not add up to 200 within 1 + 2 intervals
    control = FakeWeights({"v1": 90, "v2": 10})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour()}, turns=300)
    plan = CanaryPlan("v1", "v2", (20, 50, 100), interval=30, max_waits=2)
    result, clock, decisions = await canary(plan, control, source)

    assert result.outcome == "inconclusive" and result.exit_code == 3
    assert [d.verdict for d in decisions] == ["start", "hold", "hold", "inconclusive"]
    assert control.current == {"v1": 90, "v2": 10}
    assert decisions[-1].weight_after == 10
    assert "60 candidate turns in 1 interval(s) at 20%, fewer than the 200" in decisions[1].reason
    assert "120 candidate turns in 2 interval(s)" in decisions[2].reason  # a step's intervals add up
    assert "gave up after 2 wait(s), weights restored" in decisions[-1].reason
    assert clock.sleeps == [30, 30, 30]


async def test_held_intervals_add_up_until_a_step_has_enough_turns() -> None:
    control = FakeWeights({"v1": 100})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour()}, turns=2000)
    _, _, decisions = await canary(CanaryPlan("v1", "v2", (5, 100), interval=1), control, source)
    assert [d.verdict for d in decisions] == ["start", "hold", "promote", "promoted"]
    assert decisions[2].evidence["v2"]["turns"] == 200


async def test_a_dry_run_changes_no_weights_but_says_what_it_would_set() -> None:
    control = FakeWeights({"v1": 100})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour()})
    # With the weights unchanged, v2 gets no turns: the dry run holds, then ends inconclusive
    result, _, decisions = await canary(CanaryPlan("v1", "v2", STEPS, interval=60, dry_run=True, max_waits=1),
                                       control, source)
    assert control.changes == [] and control.current == {"v1": 100}
    assert result.outcome == "inconclusive"
    assert decisions[0].weight_after == 5 and all(d.dry_run for d in decisions)
    assert "start (dry run) 0% → 5%" in str(decisions[0])


async def test_a_dry_run_against_real_traffic_promotes_on_paper() -> None:
    control = FakeWeights({"v1": 50, "v2": 50})  # traffic is already split; the dry run only judges it
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour()})
    result, _, decisions = await canary(CanaryPlan("v1", "v2", (10, 100), interval=60, dry_run=True),
                                       control, source)
    assert result.outcome == "promoted" and control.changes == []
    assert [(d.weight_before, d.weight_after) for d in decisions] == [(50, 10), (10, 100), (100, 100)]


async def test_a_latency_regression_is_rolled_back() -> None:
    control = FakeWeights({"v1": 100})
    slow = Behaviour(latency=(0.4, 0.9))
    source = FakeFleetSource(control, {"v1": Behaviour(latency=(0.1, 0.3)), "v2": slow})
    result, _, decisions = await canary(CanaryPlan("v1", "v2", STEPS, interval=60), control, source)
    assert result.outcome == "rolled_back"
    assert decisions[-1].reason.startswith("candidate p99 ")
    assert "> 1.3 × max(baseline 490ms" in decisions[-1].reason and "floor 50ms)" in decisions[-1].reason
    assert control.current["v2"] == 0


async def test_a_time_to_first_token_regression_is_rolled_back() -> None:
    control = FakeWeights({"v1": 100})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour(ttft=(0.5, 1.0))})
    result, _, decisions = await canary(CanaryPlan("v1", "v2", STEPS, interval=60), control, source)
    assert result.outcome == "rolled_back"
    assert decisions[-1].reason.startswith("candidate ttft p99 ")


async def test_ttft_is_not_compared_when_the_baseline_does_not_stream() -> None:
    control = FakeWeights({"v1": 100})
    source = FakeFleetSource(control, {"v1": Behaviour(ttft=None), "v2": Behaviour(ttft=(0.5, 1.0))})
    result, _, decisions = await canary(CanaryPlan("v1", "v2", (50, 100), interval=60), control, source)
    assert result.outcome == "promoted"
    assert "ttft" not in decisions[1].reason


async def test_floors_keep_a_near_perfect_candidate_from_failing_against_a_perfect_baseline() -> None:
    control = FakeWeights({"v1": 100})
    fast = Behaviour(error_rate=0.0, latency=(0.001, 0.004), ttft=None)
    source = FakeFleetSource(control, {"v1": fast, "v2": Behaviour(error_rate=0.005, latency=(0.01, 0.03))})
    result, _, _ = await canary(CanaryPlan("v1", "v2", (50, 100), interval=60), control, source)
    assert result.outcome == "promoted"


async def test_other_versions_keep_their_weight() -> None:
    control = FakeWeights({"v0": 20, "v1": 80})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour(error_rate=0.3)})
    result, _, _ = await canary(CanaryPlan("v1", "v2", (10, 80), interval=60), control, source)
    assert result.outcome == "rolled_back"
    assert [w for w, _ in control.changes] == [{"v0": 20, "v1": 70, "v2": 10}, {"v0": 20, "v1": 80, "v2": 0}]


async def test_a_plan_that_leaves_the_baseline_below_zero_is_refused_before_any_change() -> None:
    control = FakeWeights({"v0": 20, "v1": 80})
    source = FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour()})
    with pytest.raises(ConfigError, match=r"step 100% for 'v2' leaves the baseline 'v1' below 0.*hold 20%"):
        await canary(CanaryPlan("v1", "v2", STEPS, interval=60), control, source)
    assert control.changes == [] and source.calls == 0


class FlakySource:
    """Fails its second read (Prometheus did not answer), then serves as the wrapped source."""

    def __init__(self, inner: FakeFleetSource) -> None:
        self.inner = inner
        self.calls = 0

    async def interval(self, versions: Sequence[str]) -> dict[str, VersionCounters]:
        self.calls += 1
        if self.calls == 2:
            raise MetricsQueryFailed("Prometheus at http://prometheus:9090 did not answer")
        return await self.inner.interval(versions)


async def test_a_failed_read_is_a_hold_not_a_verdict() -> None:
    control = FakeWeights({"v1": 100})
    source = FlakySource(FakeFleetSource(control, {"v1": Behaviour(), "v2": Behaviour()}))
    result, _, decisions = await canary(CanaryPlan("v1", "v2", (5, 100), interval=60), control, source)
    assert result.outcome == "promoted"
    assert decisions[1].verdict == "hold"
    assert decisions[1].reason.startswith("could not read the metrics: Prometheus at http://prometheus:9090")


def test_decisions_serialize_as_one_json_line() -> None:
    decision = Decision(1_700_000_000.0, "v1", "v2", 2, 5, 5, 10, "promote", "healthy: error 0.1% vs 0.1%",
                        {"v2": {"turns": 300, "errors": 0, "error_rate": 0.0, "p99": 0.2, "ttft_p99": None}})
    line = decision.to_json()
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["time"] == "2023-11-14T22:13:20Z" and parsed["verdict"] == "promote"
    assert parsed["evidence"]["v2"]["turns"] == 300 and parsed["weight_after"] == 10
    assert str(decision) == ("2023-11-14T22:13:20Z canary v2 step 2/5 promote 5% → 10%: healthy: error 0.1% vs 0.1% "
                             "| v2 300 turns, 0 errors (0.0%), p99 200ms, ttft p99 n/a")


@pytest.mark.parametrize(("changes", "message"), [
    ({"candidate": "v1"}, "the candidate 'v1' is also the baseline"),
    ({"steps": ()}, "at least one step"),
    ({"steps": (5, 5, 100)}, "must strictly increase"),
    ({"steps": (0, 100)}, "step 0 is not a whole percent from 1 to 100"),
    ({"steps": (50, 101)}, "step 101 is not"),
    ({"interval": 0.0}, "interval 0.0 must be a positive number of seconds"),
    ({"max_error_ratio": 0.9}, "max_error_ratio 0.9 must be a finite number ≥ 1"),
    ({"min_turns": 0}, "min_turns 0 must be at least 1"),
    ({"error_floor": 1.5}, "error_floor 1.5 must be a fraction"),
    ({"latency_floor": -1.0}, "latency_floor -1.0"),
    ({"max_waits": -1}, "max_waits -1"),
])
def test_plans_are_validated_with_clear_messages(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"baseline": "v1", "candidate": "v2", "steps": STEPS, "interval": 60.0, **changes}
    with pytest.raises(ConfigError, match=message):
        CanaryPlan(**fields)  # type: ignore[arg-type]


# -- over the real fleet registry ------------------------------------------------------------------------------


class SimulatedFleet:
    """Instances that serve turns by the weights and publish their counters in a real SQLite registry."""

    def __init__(self, store: Store, control: FakeWeights, behaviours: dict[str, Behaviour], clock: FakeClock) -> None:
        self.store = store
        self.control = control
        self.behaviours = behaviours
        self.clock = clock
        self.rng = random.Random(3)
        self.counters = {f"{v}-{n}": TurnCounters() for v in behaviours for n in range(2)}

    async def publish(self) -> None:
        for instance, counters in self.counters.items():
            version = instance.split("-")[0]
            info = {"id": instance, "version": version, "started_at": 1.0, "counters": counters.snapshot()}
            await self.store.register_instance(instance, info, ttl=60)

    async def sleep(self, seconds: float) -> None:
        # An interval of traffic: 4000 turns split by the weights, half on each instance of a version
        for instance, counters in self.counters.items():
            version = instance.split("-")[0]
            share = round(2000 * self.control.current.get(version, 0) / 100)
            simulate(self.rng, self.behaviours[version], share, counters)
        await self.publish()
        await self.clock.sleep(seconds)


@pytest.mark.parametrize(("v2", "outcome", "verdicts"), [
    (Behaviour(error_rate=0.2), "rolled_back", ["start", "rollback"]),
    (Behaviour(), "promoted", ["start", "promote", "promote", "promote", "promote", "promoted"]),
])
async def test_the_must_show_runs_over_the_real_registry(tmp_path: Path, v2: Behaviour, outcome: str,
                                                         verdicts: list[str]) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        clock = FakeClock()
        control = FakeWeights({"v1": 100})
        fleet = SimulatedFleet(store, control, {"v1": Behaviour(), "v2": v2}, clock)
        await fleet.publish()
        log: list[str] = []
        result = await run_canary(CanaryPlan("v1", "v2", STEPS, interval=0.5), RegistrySource(store, clock=clock),
                                  control, sleep=fleet.sleep, clock=clock, on_decision=lambda d: log.append(str(d)))
    finally:
        await store.close()
    assert result.outcome == outcome
    assert [d.verdict for d in result.decisions] == verdicts
    assert control.current["v2"] == (0 if outcome == "rolled_back" else 100)
    assert all(" canary v2 step " in line for line in log)


# -- the command line ----------------------------------------------------------------------------------------


def test_durations_read_as_people_write_them() -> None:
    assert parse_duration("60s") == 60 and parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120 and parse_duration("45") == 45
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "5,x"], "not a list of whole percents"),
    (["--steps", "10,5"], "does not strictly increase"),
    (["--steps", "5,150"], "step 150 is outside 1..100"),
    (["--interval", "a minute"], "is not a duration"),
    (["--interval", "0s"], "an interval needs a positive duration"),
    (["--error-floor", "120%"], "is not a rate from 0 to below 100%"),
    (["--max-error-ratio", "0.5"], "0.5 is not in the range x>=1"),
    (["--store", "mysql://db"], "unknown store scheme 'mysql'"),
    (["--candidate", "v1"], "the candidate 'v1' is also the baseline"),
])
def test_bad_options_exit_2_with_a_precise_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(run_command, ["--baseline", "v1", "--candidate", "v2", "--store", "memory://", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_command_prints_and_records_each_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The store-backed control is another module's; a Fake stands in for it here.
    controls: list[FakeWeights] = []

    def control_factory(store: object, actor: str) -> FakeWeights:
        assert actor.startswith("statefleet canary run (")
        controls.append(FakeWeights({"v1": 100}))
        return controls[-1]

    module = types.ModuleType("statefleet.canary.control")
    module.StoreWeightsControl = control_factory  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "statefleet.canary.control", module)
    decisions = tmp_path / "decisions.jsonl"
    # An empty registry: no turns at all, so the run holds once and ends inconclusive
    result = CliRunner().invoke(run_command, [
        "--baseline", "v1", "--candidate", "v2", "--steps", "5,100", "--interval", "10ms", "--max-waits", "1",
        "--store", "memory://", "--decisions-file", str(decisions)])
    assert result.exit_code == 3, result.output
    lines = result.output.splitlines()
    assert [line.split(" ")[5] for line in lines[:3]] == ["start", "hold", "inconclusive"]
    assert lines[-1] == "canary v2: inconclusive after 3 decisions; weights v2 at 0%; exit code 3"
    assert [json.loads(line)["verdict"] for line in decisions.read_text().splitlines()] == [
        "start", "hold", "inconclusive"]
    assert [w for w, _ in controls[0].changes] == [{"v1": 95, "v2": 5}, {"v1": 100}]
