"""Canary analysis: step a candidate version's share of new conversations up while it stays as healthy as the
baseline, and roll it back to 0 at the first failed check.

The algorithm of ``run_canary``:

1. Read the routing weights. At step *k* the candidate's weight is ``plan.steps[k]`` and the baseline's is
   100 − that − the weights of any other versions, which stay untouched. A plan that would leave the baseline
   below 0 is refused (``ConfigError``) before anything changes.
2. Call the metrics source once to set its baseline, then set the first step (decision ``start``).
3. After every ``plan.interval`` seconds, read both versions' turns since the previous read, and add them up
   over the intervals spent at the current step (the weights being the same, they are one sample):

   - the candidate has fewer than ``min_turns`` turns at this step → ``hold`` (wait another interval). A read
     that fails (Prometheus or the store did not answer) is a hold too. After ``max_waits`` holds at one step,
     the next short interval ends the run ``inconclusive`` and restores the weights read in 1.
   - else the candidate is compared with the baseline; it fails a check when

     * its error rate > ``max_error_ratio`` × max(baseline error rate, ``error_floor``),
     * its p99 end-to-end turn latency > ``max_p99_ratio`` × max(baseline p99, ``latency_floor``),
     * its p99 time to first token > ``max_ttft_ratio`` × max(baseline's, ``latency_floor``), checked only
       when both versions emitted first tokens.

     The floors keep a candidate from failing for 1 error against 0, or 12 ms against 8 ms. A baseline without
     turns at this step (at 100% it may have drained) is replaced by its sample of the last step that had
     some, or, if none had, by the floors alone; the reason says which.
   - any check failed → ``rollback``: the candidate goes to 0 and the baseline to 100 − the others; the run
     ends ``rolled_back``. Since a check needs only ``min_turns`` candidate turns, a candidate that fails 20%
     of its turns with enough traffic is rolled back at the end of the first interval.
   - every check passed → ``promote`` to the next step, or ``promoted`` after the last one (the weights stay
     at the last step, usually 100).

4. Every decision carries its evidence (turns, errors, error rate, p99 and TTFT p99 per version), is handed to
   ``on_decision`` and kept in the result; every weight change carries a reason that names the run and the
   decision, for the weights' audit log.

With ``dry_run`` the weights are read but never changed: the decisions say what would have been set.

Exit codes (``CanaryResult.exit_code``, and those of ``statefleet canary run``): **0** promoted, **1** rolled
back, **3** inconclusive. The command also exits **2** on bad options and **4** when it could not run (the
store or the weights unreachable).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from .._json import dumps_str
from ..engine.turn_counters import VersionCounters
from ..errors import ConfigError, StatefleetError
from .sources import MetricsSource

log = logging.getLogger(__name__)

Verdict = Literal["start", "hold", "promote", "promoted", "rollback", "inconclusive"]
Outcome = Literal["promoted", "rolled_back", "inconclusive"]

#: ``CanaryResult.exit_code`` per outcome.
EXIT_CODES: dict[str, int] = {"promoted": 0, "rolled_back": 1, "inconclusive": 3}


@dataclass(frozen=True)
class CanaryPlan:
    """What a canary run does: the versions, the steps, the interval and the limits of a healthy candidate."""

    #: The version serving today, compared against.
    baseline: str
    #: The version being released.
    candidate: str
    #: The candidate's percent of new conversations at each step: strictly increasing, each 1..100.
    steps: tuple[int, ...]
    #: Seconds between two checks.
    interval: float
    #: Candidate error rate may reach this × max(baseline error rate, ``error_floor``).
    max_error_ratio: float = 1.5
    #: Candidate p99 turn latency may reach this × max(baseline p99, ``latency_floor``).
    max_p99_ratio: float = 1.3
    #: Candidate p99 time to first token may reach this × max(baseline's, ``latency_floor``).
    max_ttft_ratio: float = 1.3
    #: Candidate turns a step needs before it is judged.
    min_turns: int = 200
    #: A baseline error rate below this counts as this.
    error_floor: float = 0.01
    #: Seconds: a baseline p99 (turn or TTFT) below this counts as this.
    latency_floor: float = 0.05
    #: Intervals a step may wait for ``min_turns`` before the run ends inconclusive.
    max_waits: int = 3
    #: Decide and report, but never change the weights.
    dry_run: bool = False

    def __post_init__(self) -> None:
        if not self.baseline or not self.candidate:
            raise ConfigError("a canary needs both a baseline and a candidate version")
        if self.baseline == self.candidate:
            raise ConfigError(f"the candidate {self.candidate!r} is also the baseline; name two different versions")
        if not self.steps:
            raise ConfigError("a canary needs at least one step, e.g. steps 5,10,25,50,100")
        for step in self.steps:
            if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100:
                raise ConfigError(f"canary step {step!r} is not a whole percent from 1 to 100")
        if any(b <= a for a, b in itertools.pairwise(self.steps)):
            raise ConfigError(f"canary steps {list(self.steps)} must strictly increase, e.g. 5,10,25,50,100")
        if not (math.isfinite(self.interval) and self.interval > 0):
            raise ConfigError(f"canary interval {self.interval!r} must be a positive number of seconds")
        for name in ("max_error_ratio", "max_p99_ratio", "max_ttft_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 1.0):
                raise ConfigError(f"{name} {value!r} must be a finite number ≥ 1 "
                                  "(below 1 a candidate exactly as good as the baseline would fail)")
        if isinstance(self.min_turns, bool) or self.min_turns < 1:
            raise ConfigError(f"min_turns {self.min_turns!r} must be at least 1")
        if not 0.0 <= self.error_floor < 1.0:
            raise ConfigError(f"error_floor {self.error_floor!r} must be a fraction in [0, 1), e.g. 0.01 for 1%")
        if not (math.isfinite(self.latency_floor) and self.latency_floor >= 0):
            raise ConfigError(f"latency_floor {self.latency_floor!r} must be a number of seconds ≥ 0")
        if isinstance(self.max_waits, bool) or self.max_waits < 0:
            raise ConfigError(f"max_waits {self.max_waits!r} must be a number of intervals ≥ 0")


class WeightsControl(Protocol):
    """Reads and sets the fleet's routing weights (integers summing to 100 over the versions listed)."""

    async def weights(self) -> dict[str, int]:
        """The current weights."""
        ...

    async def set_weights(self, weights: dict[str, int], *, reason: str) -> None:
        """Replace the weights; ``reason`` goes to the audit log."""
        ...


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def evidence_of(counters: VersionCounters) -> dict[str, Any]:
    """The evidence a decision shows for one version: turns, errors, error rate, p99 and TTFT p99 (seconds)."""
    return {
        "turns": counters.turns,
        "errors": counters.errors,
        "error_rate": counters.error_rate,
        "p99": counters.turn_quantile(0.99),
        "ttft_p99": counters.ttft_quantile(0.99),
    }


@dataclass(frozen=True)
class Decision:
    """One step of a canary run, with the evidence it was taken on."""

    #: Unix time of the decision.
    at: float
    #: The version compared against.
    baseline: str
    #: The version being released.
    candidate: str
    #: The 1-based step the decision was taken at (``start``: the first step).
    step: int
    #: How many steps the plan has.
    steps: int
    #: The candidate's weight before and after the decision (as planned, under ``dry_run``).
    weight_before: int
    weight_after: int
    #: ``start``, ``hold`` (too few turns yet), ``promote`` (next step), ``promoted`` (final), ``rollback``,
    #: ``inconclusive``.
    verdict: Verdict
    #: One readable line: what was compared and why it led here.
    reason: str
    #: Per version: turns, errors, error_rate, p99 and ttft_p99 (seconds) of the sample judged.
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The weights were not changed (``CanaryPlan.dry_run``).
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The decision as JSON-able values, with the time also in ISO 8601 (UTC)."""
        return {"time": _iso(self.at), **asdict(self)}

    def to_json(self) -> str:
        """The decision as one compact JSON line (no newline), for a decisions file."""
        return dumps_str(self.as_dict())

    def __str__(self) -> str:
        line = (f"{_iso(self.at)} canary {self.candidate} step {self.step}/{self.steps} {self.verdict}"
                f"{' (dry run)' if self.dry_run else ''} {self.weight_before}% → {self.weight_after}%: {self.reason}")
        parts = [
            f"{version} {e['turns']} turns, {e['errors']} errors ({_percent(e['error_rate'])}), "
            f"p99 {_seconds(e['p99'])}, ttft p99 {_seconds(e['ttft_p99'])}"
            for version, e in self.evidence.items()
        ]
        return f"{line} | {'; '.join(parts)}" if parts else line


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


@dataclass
class CanaryResult:
    """How a canary run ended, and every decision on the way."""

    #: ``promoted``, ``rolled_back`` or ``inconclusive``.
    outcome: Outcome
    decisions: list[Decision]

    @property
    def exit_code(self) -> int:
        """0 promoted, 1 rolled back, 3 inconclusive."""
        return EXIT_CODES[self.outcome]


def judge(plan: CanaryPlan, baseline: VersionCounters, candidate: VersionCounters) -> tuple[list[str], list[str]]:
    """The failed and the passed checks of ``candidate`` against ``baseline``, each as a readable phrase."""
    failed: list[str] = []
    passed: list[str] = []

    rate, base_rate = candidate.error_rate or 0.0, baseline.error_rate
    limit = plan.max_error_ratio * max(base_rate or 0.0, plan.error_floor)
    if rate > limit:
        failed.append(f"candidate error rate {_percent(rate)} > {plan.max_error_ratio:g} × max(baseline "
                      f"{_percent(base_rate)}, floor {_percent(plan.error_floor)}) = {_percent(limit)}")
    else:
        passed.append(f"error {_percent(rate)} vs {_percent(base_rate)} (limit {_percent(limit)})")

    checks = [("p99", plan.max_p99_ratio, candidate.turn_quantile(0.99), baseline.turn_quantile(0.99))]
    if candidate.ttft_count and baseline.ttft_count:
        checks.append(("ttft p99", plan.max_ttft_ratio, candidate.ttft_quantile(0.99), baseline.ttft_quantile(0.99)))
    for name, ratio, value, base in checks:
        if value is None:
            passed.append(f"{name} unknown (no latency observations)")
            continue
        reference = max(base or 0.0, plan.latency_floor)
        if value > ratio * reference:
            failed.append(f"candidate {name} {_seconds(value)} > {ratio:g} × max(baseline {_seconds(base)}, "
                          f"floor {_seconds(plan.latency_floor)}) = {_seconds(ratio * reference)}")
        else:
            times = f"{value / reference:.2f}×" if reference else "n/a"
            passed.append(f"{name} {_seconds(value)} vs {_seconds(base)} ({times}, limit {ratio:g}×)")
    return failed, passed


class _CanaryRun:
    """The state of one run: the weights it started from, the current step, the decisions so far."""

    def __init__(self, plan: CanaryPlan, control: WeightsControl, start: dict[str, int],
                 clock: Callable[[], float], on_decision: Callable[[Decision], None] | None) -> None:
        self.plan = plan
        self.control = control
        self.start = start
        self.clock = clock
        self.on_decision = on_decision
        self.decisions: list[Decision] = []
        self.others = sum(w for v, w in start.items() if v not in (plan.baseline, plan.candidate))
        self.weight = start.get(plan.candidate, 0)
        for candidate_weight in plan.steps:
            if 100 - candidate_weight - self.others < 0:
                raise ConfigError(
                    f"step {candidate_weight}% for {plan.candidate!r} leaves the baseline {plan.baseline!r} below 0: "
                    f"other versions hold {self.others}% of the weights {start}; lower them first")

    def weights_at(self, candidate_weight: int) -> dict[str, int]:
        weights = dict(self.start)
        weights[self.plan.baseline] = 100 - candidate_weight - self.others
        weights[self.plan.candidate] = candidate_weight
        return weights

    async def decide(self, verdict: Verdict, step: int, reason: str, evidence: dict[str, dict[str, Any]],
                     weights: dict[str, int] | None = None) -> None:
        """Record a decision; apply ``weights`` (the candidate's new share) unless this is a dry run."""
        plan = self.plan
        after = self.weight if weights is None else weights.get(plan.candidate, 0)
        decision = Decision(self.clock(), plan.baseline, plan.candidate, step, len(plan.steps), self.weight, after,
                            verdict, reason, evidence, plan.dry_run)
        log.info("%s", decision)
        # Reported before it is applied: if setting the weights fails, the log still shows what was attempted.
        self.decisions.append(decision)
        if self.on_decision is not None:
            self.on_decision(decision)
        if weights is not None and not plan.dry_run:
            await self.control.set_weights(
                weights, reason=f"canary {plan.candidate}: step {step}/{len(plan.steps)} {verdict}: {reason}")
        self.weight = after


async def run_canary(
    plan: CanaryPlan,
    source: MetricsSource,
    control: WeightsControl,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
    on_decision: Callable[[Decision], None] | None = None,
) -> CanaryResult:
    """Run ``plan`` to its end (see the module docstring): promoted, rolled back or inconclusive.

    >>> plan = CanaryPlan("v1", "v2", steps=(5, 25, 100), interval=60)
    >>> result = await run_canary(plan, RegistrySource(store), StoreWeightsControl(store, actor="release bot"))
    >>> result.outcome, result.exit_code  # ('promoted', 0), ('rolled_back', 1) or ('inconclusive', 3)
    """
    run = _CanaryRun(plan, control, dict(await control.weights()), clock, on_decision)
    versions: Sequence[str] = (plan.baseline, plan.candidate)
    await source.interval(versions)
    await run.decide("start", 1, f"start at {plan.steps[0]}% of new conversations "
                                 f"(then {', '.join(f'{s}%' for s in plan.steps[1:]) or 'done'})",
                     {}, run.weights_at(plan.steps[0]))
    index, holds = 0, 0
    sample = {v: VersionCounters.zero() for v in versions}
    # The baseline's most recent sample with turns: what a drained baseline is compared with.
    reference: tuple[int, VersionCounters] | None = None
    while True:
        await sleep(plan.interval)
        step = index + 1
        try:
            counts = await source.interval(versions)
        except StatefleetError as exc:
            read_error: str | None = f"could not read the metrics: {exc}"
        else:
            read_error = None
            sample = {v: sample[v].plus(counts.get(v, VersionCounters.zero())) for v in versions}
        base, cand = sample[plan.baseline], sample[plan.candidate]
        evidence = {plan.baseline: evidence_of(base), plan.candidate: evidence_of(cand)}
        if read_error is not None or cand.turns < plan.min_turns:
            why = read_error or (f"{cand.turns} candidate turns in {holds + 1} interval(s) at {plan.steps[index]}%, "
                                 f"fewer than the {plan.min_turns} a check needs")
            if holds >= plan.max_waits:
                await run.decide("inconclusive", step, f"{why}; gave up after {holds} wait(s), weights restored",
                                 evidence, run.start or run.weights_at(0))
                return CanaryResult("inconclusive", run.decisions)
            holds += 1
            await run.decide("hold", step, f"{why}; waiting ({holds}/{plan.max_waits})", evidence)
            continue
        note = ""
        if base.turns:
            reference = (step, base)
        elif reference is not None:
            note = (f"baseline {plan.baseline} had no turns, compared with its sample of step {reference[0]} "
                    f"({reference[1].turns} turns); ")
            base = reference[1]
        else:
            note = f"baseline {plan.baseline} had no turns, compared with the floors only; "
        failed, passed = judge(plan, base, cand)
        if failed:
            await run.decide("rollback", step, note + "; ".join(failed), evidence, run.weights_at(0))
            return CanaryResult("rolled_back", run.decisions)
        if index == len(plan.steps) - 1:
            await run.decide("promoted", step, f"{note}healthy at the last step: {'; '.join(passed)}", evidence)
            return CanaryResult("promoted", run.decisions)
        index, holds = index + 1, 0
        sample = {v: VersionCounters.zero() for v in versions}
        await run.decide("promote", step, f"{note}healthy: {'; '.join(passed)}", evidence,
                         run.weights_at(plan.steps[index]))

