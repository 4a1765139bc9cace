"""Check what clients saw and what the store holds against the guarantees (docs/guarantees.md).

A ``History`` is one conversation after a schedule: every request a client made (its answer, and when it was
sent and answered, by ``time.monotonic()``), every handler run the engines recorded, and the final conversation.
The agent appends ``{"text", "run", "turn"}`` to ``state["seen"]`` in each turn, so ``Final.seen`` is the exact
list of committed messages in commit order, each naming the handler run that committed it.

Answers are classified as a client must read them:

- **success**: the message committed, as turn ``turn``, by handler run ``run``;
- **unknown** (503, 504, or no answer at all — a connection cut by a kill -9): the outcome is not known; a
  retry with the same Idempotency-Key must tell;
- **refused** (4xx such as ``conversation_busy``): this request was not accepted; a later request with the same
  key may be;
- **failure** (every other error: ``turn_failed``, ``internal``, ``turn_interrupted``, …): the message did not
  commit and never will.

``check`` returns every violation found (empty: the history is consistent with the guarantees).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

#: Statuses that mean "outcome unknown: retry with the same Idempotency-Key".
UNKNOWN_STATUSES = frozenset({503, 504})

#: A 4xx that is not a refusal: the message was accepted, then cancelled by a newer one.
NOT_REFUSALS = frozenset({"turn_interrupted"})

Verdict = Literal["success", "unknown", "refused", "failure"]


@dataclass(frozen=True)
class Answer:
    """What one request got back. ``status`` None with ``code`` "no_answer": the connection was cut."""

    ok: bool
    turn: int | None = None
    run: str | None = None
    #: The reply text (the agent echoes the message's text).
    reply: str | None = None
    duplicate: bool = False
    code: str | None = None
    status: int | None = None

    @property
    def verdict(self) -> Verdict:
        if self.ok:
            return "success"
        if self.status is None or self.status in UNKNOWN_STATUSES:
            return "unknown"
        if 400 <= self.status < 500 and self.code not in NOT_REFUSALS:
            return "refused"
        return "failure"

    def __str__(self) -> str:
        if self.ok:
            return f"ok turn={self.turn} run={self.run}{' (duplicate)' if self.duplicate else ''}"
        return f"{self.status} {self.code}"


@dataclass(frozen=True)
class Request:
    """One request for a message: the first send or a retry with the same Idempotency-Key."""

    sent: float
    answered: float
    answer: Answer
    retry: bool = False


@dataclass
class Message:
    """One message a client sent (``text`` is unique per message), with every request made for it."""

    text: str
    key: str
    requests: list[Request] = field(default_factory=list)

    @property
    def first_sent(self) -> float:
        return min(r.sent for r in self.requests)

    def first_success(self) -> Request | None:
        successes = [r for r in self.requests if r.answer.verdict == "success"]
        return min(successes, key=lambda r: r.answered) if successes else None


@dataclass(frozen=True)
class Run:
    """One handler run, from the engines' records; ``end`` None: the run never finished (killed)."""

    run: str
    text: str
    pid: int
    attempt: int
    start: float
    end: float | None


@dataclass(frozen=True)
class Entry:
    """One committed turn, from ``state["seen"]``."""

    text: str
    run: str
    turn: int


@dataclass
class Final:
    """The conversation as the store holds it after the schedule."""

    turns: int
    seen: list[Entry]
    #: User utterances in the history window, oldest first.
    window_texts: list[str]
    pending: int = 0


@dataclass
class History:
    conversation: str
    messages: list[Message]
    runs: list[Run]
    final: Final


@dataclass(frozen=True)
class Violation:
    """A broken guarantee: ``rule`` names it, ``detail`` says where."""

    rule: str
    conversation: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.conversation}: {self.detail}"


def check(history: History) -> list[Violation]:
    """Every violation of the guarantees in ``history``."""
    found: list[Violation] = []

    def violation(rule: str, detail: str) -> None:
        found.append(Violation(rule, history.conversation, detail))

    final = history.final
    texts = [e.text for e in final.seen]
    position = {e.text: i for i, e in enumerate(final.seen)}
    sent = {m.text: m for m in history.messages}

    # Exactly once, and nothing that was never sent.
    for text, group in itertools.groupby(sorted(texts)):
        count = len(list(group))
        if count > 1:
            violation("duplicate", f"message {text!r} committed {count} times (turns "
                      f"{[i + 1 for i, t in enumerate(texts) if t == text]})")
        if text not in sent:
            violation("phantom", f"message {text!r} committed but never sent")

    # Continuity: each committed turn saw every turn before it; counters and window agree with the state.
    for i, entry in enumerate(final.seen):
        if entry.turn != i + 1:
            violation("continuity", f"message {entry.text!r} committed at position {i + 1} ran as turn "
                      f"{entry.turn}: it did not see the turns committed before it")
    if final.turns != len(final.seen):
        violation("continuity", f"turn counter is {final.turns} but {len(final.seen)} turns are in the state")
    tail = texts[len(texts) - len(final.window_texts):] if final.window_texts else []
    if final.window_texts != tail:
        violation("continuity", f"history window {final.window_texts} is not the last committed messages {tail}")
    if final.pending:
        violation("durable", f"{final.pending} accepted messages were never processed")

    # Every answer agrees with the final state.
    for message in history.messages:
        at = position.get(message.text)
        answers = [r.answer for r in message.requests]
        listed = ", ".join(str(a) for a in answers)
        successes = [a for a in answers if a.verdict == "success"]
        failures = [a for a in answers if a.verdict == "failure"]
        if successes and at is None:
            violation("lost", f"message {message.text!r} was acknowledged ({listed}) but never committed")
        for answer in successes:
            if answer.reply is not None and answer.reply != message.text:
                violation("wrong_answer", f"message {message.text!r} got the reply to {answer.reply!r}")
            elif at is not None and (answer.turn != at + 1 or answer.run != final.seen[at].run):
                violation("wrong_answer", f"message {message.text!r} was answered {answer} but committed as "
                          f"turn {at + 1} by run {final.seen[at].run}")
        if failures and at is not None:
            violation("failed_but_committed", f"message {message.text!r} was answered {failures[0]} (the turn "
                      f"did not happen) but committed as turn {at + 1} ({listed})")
        if answers and at is not None and all(a.verdict == "refused" for a in answers):
            violation("failed_but_committed", f"message {message.text!r} was refused by every request ({listed}) "
                      f"but committed as turn {at + 1}")
        if (successes and failures) or len({(a.turn, a.run) for a in successes}) > 1:
            violation("inconsistent_answers", f"message {message.text!r} got contradicting answers: {listed}")
        if any(a.verdict == "unknown" for a in answers) and not successes and not failures:
            violation("unresolved", f"message {message.text!r}: no request told its outcome, retries with the "
                      f"same Idempotency-Key included ({listed})")

    # Real-time order: a message acknowledged before another was first sent commits before it.
    acked = sorted(((m, r) for m in history.messages if (r := m.first_success()) is not None),
                   key=lambda pair: pair[1].answered)
    for later in history.messages:
        if later.text not in position:
            continue
        for earlier, ack in acked:
            if ack.answered >= later.first_sent:
                break
            if earlier.text in position and position[earlier.text] > position[later.text]:
                violation("reorder", f"message {earlier.text!r} was acknowledged before {later.text!r} was sent, "
                          f"but committed after it (turn {position[earlier.text] + 1} > "
                          f"{position[later.text] + 1})")

    # Serial: no handler run overlaps a run that committed.
    runs = {r.run: r for r in history.runs}
    committed_runs: list[Run] = []
    for entry in final.seen:
        run = runs.get(entry.run)
        if run is None or run.end is None:
            violation("unrecorded_run", f"run {entry.run} committed message {entry.text!r} but its handler "
                      "start/end was not recorded")
        else:
            committed_runs.append(run)
    for winner in committed_runs:
        assert winner.end is not None
        for other in history.runs:
            # Another run that starts while a committing run is in its handler held a lease the committing one
            # had lost (or never did): fencing must have refused the commit. (Two committed runs that overlap
            # are caught from the earlier one.)
            if other.run != winner.run and winner.start <= other.start < winner.end:
                violation("overlap", f"run {winner.run} of {winner.text!r} (pid {winner.pid}, attempt "
                          f"{winner.attempt}, {winner.start:.3f}-{winner.end:.3f}) committed, but run {other.run} "
                          f"of {other.text!r} (pid {other.pid}, attempt {other.attempt}) started at "
                          f"{other.start:.3f} while it ran")
    return found
