"""What load to generate: users, turns, think time, arrivals, and the profile of the load over time.

The load has a *level* that changes over time. In the closed model (``--conversations N``) the level is the
number of concurrent users, each holding conversations of ``--turns K`` turns with think time between
turns. In the open model (``--rate R``) the level is new conversations per second, arriving as a Poisson
process, whatever the server's latency.

A profile (``--profile``) is a comma-separated list of phases, run one after the other:

- ``ramp:A..B/T`` — go linearly from level A to level B over T;
- ``hold:T`` — keep the current level for T;
- ``spike:xF/T`` — multiply the current level by F for T, then go back;
- ``diurnal:LOW..HIGH/PERIOD[xCYCLES]`` — a day-shaped (cosine) curve between LOW and HIGH, one cycle per
  PERIOD, starting at LOW.

>>> Profile.parse("ramp:0..2000/60s,hold:120s,spike:x3/10s", base=100).level(30.0)
1000.0
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from .units import parse_duration, parse_number

_RAMP = re.compile(r"^ramp:([^.]+)\.\.([^/]+)/(.+)$")
_SPIKE = re.compile(r"^spike:x([^/]+)/(.+)$")
_DIURNAL = re.compile(r"^diurnal:([^.]+)\.\.([^/]+)/([^x]+)(?:x(\d+))?$")


@dataclass(frozen=True)
class Phase:
    """One phase of a profile: the level goes from ``start`` to ``end`` over ``seconds``."""

    kind: str
    seconds: float
    start: float
    end: float
    #: Cycles of a diurnal phase.
    cycles: int = 1
    #: The level after this phase (a spike goes back to where it started; None: ``end``).
    after: float | None = None

    def level(self, t: float) -> float:
        """The level ``t`` seconds into this phase."""
        if self.kind == "diurnal":
            period = self.seconds / self.cycles
            return self.start + (self.end - self.start) * (1 - math.cos(2 * math.pi * t / period)) / 2
        if self.seconds <= 0:
            return self.end
        return self.start + (self.end - self.start) * min(1.0, t / self.seconds)


@dataclass(frozen=True)
class Profile:
    """The level of the load as a function of time since the start of the run."""

    phases: tuple[Phase, ...]
    #: The level when there are no phases, or after the last one.
    base: float

    @classmethod
    def constant(cls, level: float) -> Profile:
        return cls((), level)

    @classmethod
    def parse(cls, text: str, base: float) -> Profile:
        """Parse ``--profile``; ``base`` is the level before the first phase (``--conversations``/``--rate``)."""
        phases: list[Phase] = []
        level = base
        for raw in text.split(","):
            part = raw.strip()
            if not part:
                raise ConfigError(f"--profile {text!r} has an empty phase; phases are separated by single commas")
            phase = _parse_phase(part, level)
            phases.append(phase)
            level = phase.end if phase.after is None else phase.after
        return cls(tuple(phases), base)

    @property
    def seconds(self) -> float:
        """The length of all phases together."""
        return sum(p.seconds for p in self.phases)

    @property
    def peak(self) -> float:
        return max([self.base, *(max(p.start, p.end) for p in self.phases)])

    def level(self, t: float) -> float:
        """The level ``t`` seconds into the run (after the last phase, that phase's final level)."""
        last = self.base
        for phase in self.phases:
            if t < phase.seconds:
                return phase.level(t)
            t -= phase.seconds
            last = phase.end if phase.after is None else phase.after
        return last


def _parse_phase(part: str, level: float) -> Phase:
    if match := _RAMP.match(part):
        start = parse_number(match.group(1), f"ramp start in --profile phase {part!r}")
        end = parse_number(match.group(2), f"ramp end in --profile phase {part!r}")
        seconds = parse_duration(match.group(3), f"ramp length in --profile phase {part!r}")
        return Phase("ramp", seconds, start, end)
    if part.startswith("hold:"):
        seconds = parse_duration(part[5:], f"hold length in --profile phase {part!r}")
        return Phase("hold", seconds, level, level)
    if match := _SPIKE.match(part):
        factor = parse_number(match.group(1), f"spike factor in --profile phase {part!r}")
        seconds = parse_duration(match.group(2), f"spike length in --profile phase {part!r}")
        return Phase("spike", seconds, level * factor, level * factor, after=level)
    if match := _DIURNAL.match(part):
        low = parse_number(match.group(1), f"diurnal low in --profile phase {part!r}")
        high = parse_number(match.group(2), f"diurnal high in --profile phase {part!r}")
        period = parse_duration(match.group(3), f"diurnal period in --profile phase {part!r}")
        cycles = int(match.group(4) or 1)
        if period <= 0 or cycles < 1:
            raise ConfigError(f"--profile phase {part!r}: the period and the cycles must be > 0")
        return Phase("diurnal", period * cycles, low, high, cycles, after=low)
    raise ConfigError(
        f"--profile phase {part!r} is not one of ramp:A..B/T, hold:T, spike:xF/T, diurnal:LOW..HIGH/PERIOD[xN] "
        "(for example ramp:0..2000/60s,hold:120s,spike:x3/10s)"
    )




@dataclass(frozen=True)
class Think:
    """Think time between a user's turns: ``2s`` (exponential, mean 2 s) or ``fixed:2s``."""

    mean: float
    fixed: bool = False

    @classmethod
    def parse(cls, text: str) -> Think:
        body = text.strip()
        fixed = False
        for prefix in ("fixed:", "exp:"):
            if body.startswith(prefix):
                fixed = prefix == "fixed:"
                body = body[len(prefix):]
        return cls(parse_duration(body, "--think"), fixed)

    def sample(self, rng: random.Random) -> float:
        if self.mean <= 0:
            return 0.0
        return self.mean if self.fixed else rng.expovariate(1.0 / self.mean)


@dataclass(frozen=True)
class Workload:
    """Everything that shapes the load of one run."""

    #: Target base URLs (``http://host:port``); users spread over them.
    targets: tuple[str, ...]
    #: Run length in seconds.
    duration: float
    #: Turns per conversation.
    turns: int = 10
    think: Think = field(default_factory=lambda: Think(0.0))
    #: Open model: new conversations per second follow ``profile``; closed model: concurrent users do.
    open_loop: bool = False
    profile: Profile = field(default_factory=lambda: Profile.constant(10))
    #: Fraction of turns sent with ``Accept: text/event-stream``.
    stream_ratio: float = 0.0
    #: Fetch the conversation and check its history after every ``verify_every`` turns (0: only at the end).
    verify_every: int = 1
    #: Give up on one message after this many seconds of retries.
    retry_budget: float = 30.0
    #: Per-request timeout in seconds.
    request_timeout: float = 30.0
    #: Processes generating the load (each gets an equal share).
    processes: int = 1
    #: Seed of the random choices (think times, arrivals, stream/JSON).
    seed: int = 1
    #: Prefix of conversation ids, so runs never share a conversation.
    run_id: str = "lt"
    #: Words in each user message.
    message_words: int = 6
    #: Tenant header (None: the default tenant).
    tenant: str | None = None

    def __post_init__(self) -> None:
        if not self.targets:
            raise ConfigError("give at least one target URL, like http://127.0.0.1:8000")
        for url in self.targets:
            if not re.match(r"^https?://[^/\s]+/?$", url):
                raise ConfigError(f"target {url!r} is not a base URL like http://127.0.0.1:8000")
        if self.duration <= 0:
            raise ConfigError("--duration must be > 0")
        if self.turns < 1:
            raise ConfigError("--turns must be ≥ 1")
        if not 0 <= self.stream_ratio <= 1:
            raise ConfigError(f"--stream-ratio {self.stream_ratio} must be between 0 and 1")

    def share(self, index: int) -> Workload:
        """The part of this workload process ``index`` of ``processes`` runs."""
        from dataclasses import replace

        def split(level: float) -> float:
            return level / self.processes

        phases = tuple(Phase(p.kind, p.seconds, split(p.start), split(p.end), p.cycles,
                             None if p.after is None else split(p.after)) for p in self.profile.phases)
        return replace(self, profile=Profile(phases, split(self.profile.base)), processes=1,
                       seed=self.seed * 1000 + index, run_id=f"{self.run_id}p{index}")
