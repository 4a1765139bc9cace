"""The continuity checker: does the server's view of a conversation match what its user sent and got?

Each simulated user keeps its own record of the conversation — the messages it sent, the replies it got and
their turn numbers — and checks every reply and every view the server gives of the conversation
(``GET /v1/conversations/{id}``) against it. Violations are counted once per turn and kind:

- **lost**: a turn the user was answered for is missing from the server's history, or the final view has
  fewer turns than the user was answered for;
- **duplicated**: one message committed twice (a turn number given twice, extra turns, a message twice in
  the history);
- **reordered**: turn numbers that go backwards, or history entries out of the order they were sent in;
- **stale**: a view older than a reply the user already had (fewer turns than acknowledged), mid-run.

>>> checker = ContinuityChecker("c1")
>>> checker.on_reply("hello", turn=1, reply="hi")
[]
>>> checker.on_view({"turns": 1, "history": [{"role": "user", "text": "hello", "turn": 1},
...                                         {"role": "agent", "text": "hi", "turn": 1}]})
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("lost", "duplicated", "reordered", "stale")


@dataclass(frozen=True)
class Violation:
    """One continuity violation of one turn."""

    kind: str
    conversation_id: str
    turn: int
    detail: str

    def __str__(self) -> str:
        return f"{self.conversation_id} turn {self.turn}: {self.detail}"


class ContinuityChecker:
    """One conversation as its user saw it, and the checks of the server's answers against it."""

    __slots__ = ("_flagged", "_sent", "conversation_id", "entries", "last_turn", "uncertain", "window_seen")

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        #: ``(turn, role) → text`` of every utterance acknowledged to the user.
        self.entries: dict[tuple[int, str], str] = {}
        #: Turn of each message text the user sent.
        self._sent: dict[str, int] = {}
        self.last_turn = 0
        #: Messages whose outcome the user never learned (gave up retrying): they may have committed.
        self.uncertain = 0
        #: The longest history window seen, so a shrinking window is noticed.
        self.window_seen = 0
        self._flagged: set[tuple[str, int]] = set()

    def _flag(self, kind: str, turn: int, detail: str, out: list[Violation]) -> None:
        if (kind, turn) not in self._flagged:
            self._flagged.add((kind, turn))
            out.append(Violation(kind, self.conversation_id, turn, detail))

    def on_reply(self, text: str, turn: int, reply: str) -> list[Violation]:
        """The server answered the message ``text`` as turn ``turn`` with ``reply``."""
        out: list[Violation] = []
        expected = self.last_turn + 1
        if turn in (t for t, _ in self.entries) and self.entries.get((turn, "user")) != text:
            self._flag("duplicated", turn, f"turn {turn} given to two messages", out)
        elif turn < expected:
            self._flag("reordered", turn, f"reply has turn {turn} after turn {self.last_turn}", out)
        elif turn > expected + self.uncertain:
            self._flag("duplicated", turn, f"reply has turn {turn}, expected {expected}: "
                                           f"{turn - expected} turn(s) committed that were not sent", out)
        if turn > expected:
            # The messages we gave up on did commit; they are no longer uncertain.
            self.uncertain = max(0, self.uncertain - (turn - expected))
        self.entries[(turn, "user")] = text
        self.entries[(turn, "agent")] = reply
        self._sent[text] = turn
        self.last_turn = max(self.last_turn, turn)
        return out

    def on_view(self, view: dict[str, Any], final: bool = False) -> list[Violation]:
        """Check the server's view of the conversation (``turns`` and ``history``) against the record.

        ``final``: the run is over and the view has settled, so fewer turns than acknowledged means lost.
        """
        out: list[Violation] = []
        turns = int(view.get("turns", 0))
        history = view.get("history") or []
        if turns < self.last_turn:
            kind = "lost" if final else "stale"
            for t in range(turns + 1, self.last_turn + 1):
                self._flag(kind, t, f"server has {turns} turns, the user was answered for {self.last_turn}", out)
            if not final:
                return out
        elif turns > self.last_turn + self.uncertain:
            self._flag("duplicated", turns, f"server has {turns} turns, the user sent {self.last_turn}", out)
        self._check_history(history, out)
        return out

    def _check_history(self, history: list[dict[str, Any]], out: list[Violation]) -> None:
        seen_texts: set[tuple[str, str]] = set()
        previous = (0, -1)
        known = [(t, r, x) for t, r, x in ((int(h.get("turn", 0)), str(h.get("role")), str(h.get("text")))
                                           for h in history) if t <= self.last_turn]
        for turn, role, text in known:
            position = _position(turn, role)
            if position < previous:
                self._flag("reordered", turn, f"history has turn {turn} ({role}) after turn {previous[0]}", out)
            previous = max(previous, position)
            if role == "user" and (role, text) in seen_texts:
                self._flag("duplicated", turn, f"message {text!r} is twice in the history", out)
            seen_texts.add((role, text))
            mine = self.entries.get((turn, role))
            if mine is None or mine == text:
                continue
            sent_as = self._sent.get(text) if role == "user" else None
            if sent_as is not None and sent_as != turn:
                self._flag("reordered", turn, f"message {text!r} sent as turn {sent_as} is turn {turn} in history",
                           out)
            else:
                self._flag("lost", turn, f"history turn {turn} ({role}) is {text!r}, the user had {mine!r}", out)
        # Every acknowledged utterance from the oldest one in the window up to the latest must be there.
        present = {_position(t, r) for t, r, _ in known}
        self.window_seen = max(self.window_seen, len(known))
        if self.last_turn == 0:
            return
        if not known:
            self._flag("lost", self.last_turn, "history is empty", out)
            return
        oldest = min(present)
        for turn, role in self.entries:
            if _position(turn, role) >= oldest and _position(turn, role) not in present:
                self._flag("lost", turn, f"turn {turn} ({role}) is missing from the history window", out)
        expected_len = min(self.window_seen, len(self.entries))
        if len(known) < expected_len:
            self._flag("lost", oldest[0], f"history window shrank to {len(known)} from {self.window_seen}", out)


def _position(turn: int, role: str) -> tuple[int, int]:
    """Where an utterance belongs: by turn, the user's message before the agent's reply."""
    return (turn, 0 if role == "user" else 1)
