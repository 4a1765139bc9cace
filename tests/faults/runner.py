"""Run a schedule on a fleet and collect, per conversation, the ``History`` the checker reads.

Steps run in order; sends run concurrently (each is a task, as independent clients would be), faults block the
schedule while they last. Then the fleet is healed, every accepted message is waited for, each message whose
outcome a client does not know is retried with its Idempotency-Key until a definite answer (a few times at
most), and the final conversations and the handler records are read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .checker import Answer, Entry, Final, History, Message, Request, Run, Violation, check
from .fleet import Fleet, Slot, WorkerGone
from .schedule import Freeze, Kill, PauseStore, RestartStore, Retry, Schedule, Send, Wait

#: What an engine's ``send`` waits for (s) before answering turn_timeout (504).
SEND_TIMEOUT = 20.0
#: How long (s) after the schedule every accepted message must have been processed.
SETTLE_TIMEOUT = 20.0
#: Retries with the same Idempotency-Key for a message whose outcome is unknown.
RESOLVE_RETRIES = 4
#: How long (s) a fault aimed at a conversation's running turn waits for one to start.
OWNER_WAIT = 0.5


@dataclass
class _Sent:
    conv: int
    message: Message
    metadata: dict[str, Any]
    policy: str


@dataclass
class ScheduleResult:
    """What one schedule did and what the checker found."""

    histories: list[History]
    violations: list[Violation]
    messages: int
    requests: int
    seconds: float
    outcomes: dict[str, int] = field(default_factory=dict)


class _Run:
    def __init__(self, fleet: Fleet, schedule: Schedule, name: str) -> None:
        self.fleet = fleet
        self.schedule = schedule
        self.convs = [f"{name}-c{i}" for i in range(schedule.conversations)]
        self.sent: list[_Sent] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.offset = fleet.records_offset()

    async def request(self, engine: int, item: _Sent, *, retry: bool) -> None:
        worker = self.fleet.pick(engine)
        if worker is None:
            return  # nobody to send to: no request was made
        sent = time.monotonic()
        try:
            raw = await worker.request(
                "send", timeout=SEND_TIMEOUT + 15, conv=self.convs[item.conv], text=item.message.text,
                key=item.message.key, metadata=item.metadata, policy=item.policy, reply_timeout=SEND_TIMEOUT,
            )
            answer = _answer(raw)
        except (WorkerGone, TimeoutError):
            answer = Answer(False, code="no_answer", status=None)
        item.message.requests.append(Request(sent, time.monotonic(), answer, retry))

    def launch(self, engine: int, item: _Sent, *, retry: bool) -> None:
        self.tasks.append(asyncio.create_task(self.request(engine, item, retry=retry)))

    async def owner(self, conv: int, engine: int) -> Slot:
        """The slot whose engine runs a handler of ``conv`` now (waiting briefly for one), else ``engine``'s."""
        deadline = time.monotonic() + OWNER_WAIT
        conv_id = self.convs[conv]
        while True:
            open_runs: dict[str, int] = {}
            for record in self.fleet.records_since(self.offset):
                if record["conv"] != conv_id:
                    continue
                if record["k"] == "start":
                    open_runs[record["run"]] = record["pid"]
                else:
                    open_runs.pop(record["run"], None)
            for pid in reversed(open_runs.values()):
                slot = self.fleet.slot_of_pid(pid)
                if slot is not None:
                    return slot
            if time.monotonic() > deadline:
                return self.fleet.slots[engine % len(self.fleet.slots)]
            await asyncio.sleep(0.01)

    async def step(self, step: object) -> None:
        fleet = self.fleet
        if isinstance(step, Send):
            text = f"{self.convs[step.conv]}/m{len(self.sent)}"
            metadata: dict[str, Any] = {"sleep": step.sleep}
            if step.fail:
                metadata["fail"] = True
            item = _Sent(step.conv, Message(text, f"key-{text}"), metadata, step.policy)
            self.sent.append(item)
            self.launch(step.engine, item, retry=False)
            await asyncio.sleep(step.then)
        elif isinstance(step, Retry):
            if self.sent:
                self.launch(step.engine, self.sent[step.message % len(self.sent)], retry=True)
            await asyncio.sleep(step.then)
        elif isinstance(step, Kill):
            fleet.kill(await self.owner(step.conv, step.engine))
        elif isinstance(step, Freeze):
            await fleet.freeze(await self.owner(step.conv, step.engine), step.seconds)
        elif isinstance(step, PauseStore):
            if fleet.supports_store_faults:
                await self.owner(step.conv, 0)
                await fleet.pause_store(step.seconds)
        elif isinstance(step, RestartStore):
            if fleet.supports_store_faults:
                await self.owner(step.conv, 0)
                await fleet.restart_store()
        elif isinstance(step, Wait):
            await asyncio.sleep(step.seconds)

    async def settle(self) -> dict[str, dict[str, Any] | None]:
        """The final conversations, once nothing accepted is waiting (or ``SETTLE_TIMEOUT`` passed)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        views: dict[str, dict[str, Any] | None] = {}
        engine = 0
        for conv_id in self.convs:
            while True:
                engine += 1
                worker = self.fleet.pick(engine)
                try:
                    assert worker is not None
                    answer = await worker.request("get", timeout=10, conv=conv_id)
                except (WorkerGone, TimeoutError, AssertionError):
                    answer = {"ok": False}
                view = answer.get("result") if answer["ok"] else None
                if answer["ok"] and (view is None or not view["pending"]):
                    views[conv_id] = view
                    break
                if time.monotonic() > deadline:
                    if answer["ok"]:
                        views[conv_id] = view
                        break
                    raise RuntimeError(f"could not read conversation {conv_id!r} after the schedule: {answer}")
                await asyncio.sleep(0.05)
        return views

    async def resolve(self) -> None:
        """Retry each message whose outcome its client does not know, with its Idempotency-Key."""
        for attempt in range(RESOLVE_RETRIES):
            unknown = [s for s in self.sent if _untold(s.message)]
            if not unknown:
                return
            if attempt:
                await asyncio.sleep(0.3 * attempt)
            await asyncio.gather(*(self.request(attempt + i, s, retry=True) for i, s in enumerate(unknown)))

    async def run(self) -> list[History]:
        try:
            for step in self.schedule.steps:
                await self.step(step)
        finally:
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.fleet.heal()
        await self.settle()
        await self.resolve()
        views = await self.settle()
        return self.histories(views)

    def histories(self, views: dict[str, dict[str, Any] | None]) -> list[History]:
        starts: dict[str, dict[str, Any]] = {}
        ends: dict[str, float] = {}
        for record in self.fleet.records_since(self.offset):
            if record["k"] == "start":
                starts[record["run"]] = record
            else:
                ends[record["run"]] = record["t"]
        histories = []
        for index, conv_id in enumerate(self.convs):
            view = views.get(conv_id)
            runs = [Run(run, r["text"], r["pid"], r["attempt"], r["t"], ends.get(run))
                    for run, r in starts.items() if r["conv"] == conv_id]
            messages = [s.message for s in self.sent if s.conv == index and s.message.requests]
            histories.append(History(conv_id, messages, runs, _final(view)))
        return histories


def _untold(message: Message) -> bool:
    """A request got no definite answer (success or failure), and no other request did either."""
    verdicts = {r.answer.verdict for r in message.requests}
    return "unknown" in verdicts and not verdicts & {"success", "failure"}


def _answer(raw: dict[str, Any]) -> Answer:
    if raw["ok"]:
        result = raw["result"]
        data = result["reply"]["data"] or {}
        return Answer(True, turn=result["turn"], run=data.get("run"), reply=result["reply"]["text"],
                      duplicate=result.get("duplicate", False))
    return Answer(False, code=raw["error"], status=raw["status"])


def _final(view: dict[str, Any] | None) -> Final:
    if view is None:
        return Final(0, [], [])
    seen = [Entry(e["text"], e["run"], e["turn"]) for e in view["state"].get("seen", [])]
    window = [u["text"] for u in view["history"] if u["role"] == "user"]
    return Final(view["turns"], seen, window, view["pending"])


async def run_schedule(fleet: Fleet, schedule: Schedule, name: str) -> ScheduleResult:
    """Run ``schedule`` on ``fleet`` with conversations named ``name-c<i>``, and check what happened."""
    started = time.monotonic()
    histories = await _Run(fleet, schedule, name).run()
    violations = [v for h in histories for v in check(h)]
    outcomes: dict[str, int] = {}
    for history in histories:
        for message in history.messages:
            for request in message.requests:
                label = "ok" if request.answer.ok else f"{request.answer.status} {request.answer.code}"
                outcomes[label] = outcomes.get(label, 0) + 1
    return ScheduleResult(
        histories, violations,
        messages=sum(len(h.messages) for h in histories),
        requests=sum(len(m.requests) for h in histories for m in h.messages),
        seconds=time.monotonic() - started, outcomes=outcomes,
    )
