"""Fault schedules: what clients send and which faults strike, in order, and how to generate them at random.

A schedule is plain data (JSON round-trips it, so a failing one can be replayed). ``build_schedule`` makes one
from a ``Chooser``: hypothesis draws (``schedules()``, for the test suite) or a seeded ``random.Random``
(``RandomChooser``, for the soak). Heavy faults — kill -9, SIGSTOP past the lease, store pause and restart — are
one or two per schedule at most, in a share of the schedules: they cost seconds, and one well-placed fault finds
what ten do.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")

#: Handler sleeps (s).
SLEEPS = (0.0, 0.01, 0.03, 0.08, 0.2)
#: Slow turns (s), each paired with a long freeze below: the frozen owner's handler is done when it is thawed,
#: while the run of the engine that took the message over still runs — the race fencing exists for.
SLOW_SLEEPS = (0.6, 1.2)
#: Gaps (s) after launching a send before the next step; 0: the next message is sent at once (double texting).
GAPS = (0.0, 0.0, 0.01, 0.05, 0.15)
#: SIGSTOP of an engine: shorter than the lease (0.5 s), and well past it (lease + sweep + slack).
SHORT_FREEZES = (0.1, 0.25)
LONG_FREEZES = (0.9, 1.3)
#: SIGSTOP of the redis-server; LONG_PAUSE outlasts the store's 5 s reply timeout.
STORE_PAUSES = (0.3, 0.8, 1.5)
LONG_PAUSE = 6.0


@dataclass(frozen=True)
class Send:
    """A new message to conversation ``conv`` through engine ``engine``; the handler sleeps ``sleep`` s."""

    conv: int
    engine: int
    sleep: float
    policy: str = "enqueue"
    fail: bool = False
    then: float = 0.0


@dataclass(frozen=True)
class Retry:
    """The ``message``-th message sent so far (modulo), again, with the same Idempotency-Key."""

    message: int
    engine: int
    then: float = 0.0


@dataclass(frozen=True)
class Kill:
    """kill -9 the engine running a handler of conversation ``conv`` (waiting briefly for one), else ``engine``."""

    conv: int
    engine: int


@dataclass(frozen=True)
class Freeze:
    """SIGSTOP the engine running a handler of ``conv`` (else ``engine``) for ``seconds``, then SIGCONT."""

    conv: int
    engine: int
    seconds: float


@dataclass(frozen=True)
class PauseStore:
    """SIGSTOP the redis-server for ``seconds`` (once a handler of ``conv`` runs), then SIGCONT."""

    conv: int
    seconds: float


@dataclass(frozen=True)
class RestartStore:
    """kill -9 the redis-server (once a handler of ``conv`` runs) and restart it with its append-only file."""

    conv: int


@dataclass(frozen=True)
class Wait:
    seconds: float


Step = Send | Retry | Kill | Freeze | PauseStore | RestartStore | Wait
_STEPS: dict[str, type[Any]] = {cls.__name__: cls for cls in (Send, Retry, Kill, Freeze, PauseStore, RestartStore,
                                                               Wait)}
HEAVY = (Kill, Freeze, PauseStore, RestartStore)


@dataclass(frozen=True)
class Schedule:
    conversations: int
    steps: tuple[Step, ...]

    def to_json(self) -> str:
        return json.dumps({"conversations": self.conversations,
                           "steps": [[type(s).__name__, dataclasses.asdict(s)] for s in self.steps]},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        data = json.loads(text)
        return cls(data["conversations"], tuple(_STEPS[name](**fields) for name, fields in data["steps"]))

    @property
    def heavy_faults(self) -> int:
        return sum(isinstance(s, HEAVY) and not (isinstance(s, Freeze) and s.seconds < 0.5) for s in self.steps)


# Stories every run tells, whatever hypothesis draws (explicit examples), and the broken build's test uses.
FROZEN_OWNER = Schedule(1, (Send(0, 0, 1.2), Freeze(0, 0, 1.3)))
KILLED_OWNER_WITH_QUEUE = Schedule(1, (Send(0, 0, 0.3), Send(0, 1, 0.0, then=0.05), Kill(0, 0)))
INTERRUPT_FROM_ANOTHER_ENGINE = Schedule(1, (Send(0, 0, 0.6, then=0.1), Send(0, 1, 0.0, policy="interrupt")))
STORE_PAUSED_PAST_REPLY_TIMEOUT = Schedule(1, (Send(0, 0, 0.05), PauseStore(0, 6.0)))
STORE_RESTARTED_MID_TURN = Schedule(1, (Send(0, 0, 0.2), Send(0, 1, 0.0), RestartStore(0)))

EVERY_STORE = [FROZEN_OWNER, KILLED_OWNER_WITH_QUEUE, INTERRUPT_FROM_ANOTHER_ENGINE]
REDIS_ONLY = [STORE_PAUSED_PAST_REPLY_TIMEOUT, STORE_RESTARTED_MID_TURN]


class Chooser(Protocol):
    def integer(self, low: int, high: int) -> int: ...

    def pick(self, options: Sequence[T]) -> T: ...

    def chance(self, percent: int) -> bool: ...


class RandomChooser:
    """Choices from a seeded ``random.Random``: the soak's schedule ``i`` of seed ``s`` is always the same."""

    def __init__(self, seed: str) -> None:
        self._random = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self._random.randint(low, high)

    def pick(self, options: Sequence[T]) -> T:
        return self._random.choice(options)

    def chance(self, percent: int) -> bool:
        return self._random.randrange(100) < percent


class HypothesisChooser:
    """Choices drawn by hypothesis; each shrinks toward the cheap option (no fault, first option, low bound)."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        return int(self._draw(st.integers(low, high)))

    def pick(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def chance(self, percent: int) -> bool:
        return bool(self._draw(st.integers(0, 99)) >= 100 - percent)


@dataclass(frozen=True)
class Mix:
    """How often things happen, in percent (per step unless said otherwise)."""

    #: Schedules with a second conversation (per schedule).
    two_conversations: int = 30
    #: Schedules with a heavy fault, and with a second one among those.
    fault: int = 45
    second_fault: int = 0
    #: Long store pauses (past the store's reply timeout) among store pauses.
    long_pause: int = 4
    retry: int = 10
    wait: int = 8
    slow: int = 3
    interrupt: int = 12
    reject: int = 6
    fail: int = 5


#: The test suite's mix: sized so 200 schedules fit in CI (the stories above tell each fault at least once).
CI_MIX = Mix()
SOAK_MIX = Mix(fault=70, second_fault=40, long_pause=8, slow=15)

#: Heavy faults, each equally likely (store faults only on Redis).
ENGINE_FAULTS = ("kill", "freeze", "short_freeze")
STORE_FAULTS = ("store_pause", "store_restart")


def build_schedule(choose: Chooser, *, store_faults: bool, engines: int = 3, mix: Mix = CI_MIX) -> Schedule:
    """A random schedule: 2–8 sends, retries and waits, and (``mix.fault`` percent of the time) one or two heavy
    faults placed after the first send."""
    conversations = 2 if choose.chance(mix.two_conversations) else 1
    steps: list[Step] = []
    sent = 0
    for _ in range(choose.integer(2, 8)):
        conv = choose.integer(0, conversations - 1)
        engine = choose.integer(0, engines - 1)
        if sent and choose.chance(mix.retry):
            steps.append(Retry(choose.integer(0, sent - 1), engine, choose.pick(GAPS)))
        elif sent and choose.chance(mix.wait):
            steps.append(Wait(choose.pick((0.05, 0.2, 0.5))))
        else:
            sent += 1
            policy = "interrupt" if choose.chance(mix.interrupt) else "reject" if choose.chance(mix.reject) else (
                "enqueue")
            sleep = choose.pick(SLOW_SLEEPS) if choose.chance(mix.slow) else choose.pick(SLEEPS)
            steps.append(Send(conv, engine, sleep, policy, choose.chance(mix.fail), choose.pick(GAPS)))
    # Whether, which and where heavy faults strike: a Random seeded with a drawn number and the steps above
    # decides, so faults come in the proportions of ``mix``. (Hypothesis repeats its draws on purpose, and its
    # own choices of fault clustered: one derandomized run of 140 schedules held no store pause at all, another
    # 13 heavy faults in all.)
    spread = random.Random(f"{choose.integer(0, 2**32 - 1)}:{steps}")
    kinds = ENGINE_FAULTS + STORE_FAULTS if store_faults else ENGINE_FAULTS
    count = 0
    if spread.randrange(100) < mix.fault:
        count = 2 if spread.randrange(100) < mix.second_fault else 1
    for _ in range(count):
        at = spread.randint(1, len(steps))
        steps.insert(at, _fault(spread, spread.choice(kinds), spread.randrange(conversations),
                                spread.randrange(engines), mix))
    return Schedule(conversations, tuple(steps))


def _fault(spread: random.Random, kind: str, conv: int, engine: int, mix: Mix) -> Step:
    if kind == "store_restart":
        return RestartStore(conv)
    if kind == "store_pause":
        return PauseStore(conv, LONG_PAUSE if spread.randrange(100) < mix.long_pause else spread.choice(STORE_PAUSES))
    if kind == "freeze":
        return Freeze(conv, engine, spread.choice(LONG_FREEZES))
    if kind == "short_freeze":
        return Freeze(conv, engine, spread.choice(SHORT_FREEZES))
    return Kill(conv, engine)


def schedules(*, store_faults: bool, engines: int = 3, mix: Mix = CI_MIX) -> st.SearchStrategy[Schedule]:
    """Hypothesis strategy of schedules (see ``build_schedule``)."""

    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Schedule:
        return build_schedule(HypothesisChooser(draw), store_faults=store_faults, engines=engines, mix=mix)

    return build()
