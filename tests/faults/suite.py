"""Drive many schedules through one fleet and report: hypothesis-generated (the test suite) or seeded (the soak).

Hypothesis runs in a worker thread and hands each schedule to the fleet's event loop, so the fleet (its processes,
pipes and tasks) lives in the test's loop across all schedules. A schedule with a violation does not stop the run
by default: every schedule runs and the report lists each violation with its schedule as JSON, which
``python -m benchmarks.soak --replay`` runs again. With ``shrink=True`` the first violation fails the hypothesis
run instead, and hypothesis shrinks the schedule (slow: every try is real processes and signals).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from .checker import History, Violation
from .fleet import Fleet
from .runner import ScheduleResult, run_schedule
from .schedule import HEAVY, Schedule


@dataclass
class Failure:
    """A schedule that broke a guarantee."""

    number: int
    schedule: Schedule
    violations: list[Violation]
    histories: list[History]

    def describe(self) -> str:
        lines = [f"schedule #{self.number}: {self.schedule.to_json()}"]
        lines += [f"  {v}" for v in self.violations]
        for history in self.histories:
            lines.append(f"  {history.conversation}: final turns={history.final.turns} "
                         f"seen={[e.text.rsplit('/', 1)[-1] for e in history.final.seen]}")
            for message in history.messages:
                answers = "; ".join(f"{'retry ' if r.retry else ''}{r.answer}" for r in message.requests)
                lines.append(f"    {message.text}: {answers}")
        return "\n".join(lines)


@dataclass
class Report:
    """What a run of many schedules did and found."""

    backend: str
    schedules: int = 0
    messages: int = 0
    requests: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    #: Schedules and their seconds, by the heavy faults they had ("none", "Kill", "Freeze+PauseStore", …).
    time_by_faults: dict[str, list[float]] = field(default_factory=dict)

    def add(self, number: int, schedule: Schedule, result: ScheduleResult) -> None:
        self.schedules += 1
        self.messages += result.messages
        self.requests += result.requests
        kinds = "+".join(type(s).__name__ for s in schedule.steps if isinstance(s, HEAVY)) or "none"
        spent = self.time_by_faults.setdefault(kinds, [0, 0.0])
        spent[0] += 1
        spent[1] += result.seconds
        for label, count in result.outcomes.items():
            self.outcomes[label] = self.outcomes.get(label, 0) + count
        if result.violations:
            self.failures.append(Failure(number, schedule, result.violations, result.histories))

    @property
    def violations(self) -> list[Violation]:
        return [v for f in self.failures for v in f.violations]

    def violations_by_rule(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for violation in self.violations:
            counts[violation.rule] = counts.get(violation.rule, 0) + 1
        return counts

    def summary(self) -> str:
        head = (f"{self.backend}: {self.schedules} schedules, {self.messages} messages, {self.requests} requests in "
                f"{self.seconds:.1f} s; faults {self.faults}; answers {dict(sorted(self.outcomes.items()))}; "
                f"violations {self.violations_by_rule() or 'none'}\n  seconds per schedule by heavy faults: "
                + ", ".join(f"{k} {n} x {t / n:.2f}" for k, (n, t) in sorted(self.time_by_faults.items())))
        return "\n".join([head, *(f.describe() for f in self.failures)])

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "schedules": self.schedules, "messages": self.messages,
            "requests": self.requests, "seconds": round(self.seconds, 1), "faults": self.faults,
            "answers": self.outcomes, "violations": self.violations_by_rule(),
            "seconds_per_schedule_by_faults": {k: {"schedules": n, "mean_s": round(t / n, 2)}
                                               for k, (n, t) in sorted(self.time_by_faults.items())},
            "failures": [{"schedule": f.number, "replay": f.schedule.to_json(),
                          "violations": [str(v) for v in f.violations]} for f in self.failures],
        }


class Explorer:
    """Runs schedules on ``fleet`` (in the running event loop) and adds them to ``report``."""

    def __init__(self, fleet: Fleet, report: Report, name: str) -> None:
        self.fleet = fleet
        self.report = report
        self.name = name
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    async def run(self, schedule: Schedule) -> ScheduleResult:
        number = next(self._numbers)
        result = await run_schedule(self.fleet, schedule, f"{self.name}-s{number}")
        self.report.add(number, schedule, result)
        self.report.faults = dict(self.fleet.faults.counts)
        return result

    async def run_all(self, schedules: Iterable[Schedule], *, until: float | None = None) -> Report:
        started = time.monotonic()
        for schedule in schedules:
            if until is not None and time.monotonic() >= until:
                break
            await self.run(schedule)
        self.report.seconds += time.monotonic() - started
        return self.report

    async def explore(self, strategy: st.SearchStrategy[Schedule], *, max_examples: int,
                      explicit: Iterable[Schedule] = (), seed: int | None = None, shrink: bool = False) -> Report:
        """Run ``max_examples`` hypothesis-generated schedules (after the ``explicit`` ones)."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        stop = threading.Event()

        seen: set[str] = set()

        def run_one(schedule: Schedule) -> None:
            # Many draws make one schedule (every value under a chance's threshold is the same "no"): run each
            # schedule once, and let hypothesis draw another in its place.
            assume(schedule.to_json() not in seen)
            seen.add(schedule.to_json())
            if stop.is_set():
                return
            result = asyncio.run_coroutine_threadsafe(self.run(schedule), loop).result()
            if shrink and result.violations:
                raise AssertionError("\n".join(str(v) for v in result.violations))

        phases = [Phase.explicit, Phase.reuse, Phase.generate, *([Phase.shrink] if shrink else [])]
        test: Callable[[], None] = given(schedule=strategy)(run_one)
        for schedule in explicit:
            test = example(schedule=schedule)(test)
        test = settings(
            max_examples=max_examples, deadline=None, database=None, derandomize=seed is None,
            phases=phases, print_blob=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        )(test)
        if seed is not None:
            test = hypothesis_seed(seed)(test)
        try:
            await asyncio.to_thread(test)
        finally:
            stop.set()
            self.report.seconds += time.monotonic() - started
        return self.report
