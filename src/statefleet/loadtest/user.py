"""A conversation-aware simulated user: holds conversations of K turns, thinks between turns, and checks
every reply and view of its conversation with a :class:`ContinuityChecker`."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from .client import Client
from .continuity import ContinuityChecker, Violation
from .stats import Recorder
from .workload import Workload

_WORDS = ("order", "status", "please", "where", "is", "my", "parcel", "thanks", "hello", "help", "refund",
          "tomorrow", "address", "change", "account", "invoice")


class User:
    """One simulated person; ``index`` spreads users over the targets."""

    def __init__(self, index: int, workload: Workload, client: Client, recorder: Recorder,
                 rng: random.Random) -> None:
        self.index = index
        self.workload = workload
        self.client = client
        self.recorder = recorder
        self.rng = rng
        self.stopping = False
        self.conversations = 0

    def _message(self, conversation_id: str, turn: int) -> str:
        words = " ".join(self.rng.choice(_WORDS) for _ in range(self.workload.message_words))
        # Unique per message, so the checker can tell every message apart in the history.
        return f"[{conversation_id}#{turn}] {words}"

    async def run(self, deadline: float) -> None:
        """Hold conversation after conversation until ``deadline`` or until asked to stop."""
        while not self.stopping and time.monotonic() < deadline:
            self.conversations += 1
            failed = self.recorder.failed_turns
            await self.converse(f"{self.workload.run_id}-u{self.index}-c{self.conversations}", deadline)
            if self.recorder.failed_turns > failed:
                # A person whose message failed waits before starting over; no tight loop against a failing fleet.
                await asyncio.sleep(max(1.0, self.workload.think.mean))

    async def converse(self, conversation_id: str, deadline: float) -> None:
        """One conversation of up to ``workload.turns`` turns, then the final check of the server's view."""
        workload = self.workload
        checker = ContinuityChecker(conversation_id)
        self.recorder.conversations_started += 1
        target = self.index
        completed = True
        for n in range(1, workload.turns + 1):
            if n > 1:
                await asyncio.sleep(workload.think.sample(self.rng))
            if time.monotonic() >= deadline or (self.stopping and n > 1):
                completed = False
                break
            text = self._message(conversation_id, n)
            stream = workload.stream_ratio > 0 and self.rng.random() < workload.stream_ratio
            target += 1
            answer = await self.client.send(conversation_id, text, f"{conversation_id}-m{n}", stream, target)
            if answer is None:
                # The outcome is unknown: it may still commit. The user gives up on this conversation.
                checker.uncertain += 1
                completed = False
                break
            self.recorder.turn_done(time.monotonic(), answer.latency, answer.ttft, answer.retries, answer.streamed)
            self._report(checker.on_reply(text, answer.turn, answer.reply))
            if workload.verify_every and n % workload.verify_every == 0 and n < workload.turns:
                view = await self.client.view(conversation_id, target)
                if view is not None:
                    self._report(checker.on_view(view))
        if checker.last_turn:
            await self.final_check(checker, target)
        if completed:
            self.recorder.conversations_completed += 1

    async def final_check(self, checker: ContinuityChecker, target: int) -> None:
        """The settled view must hold every acknowledged turn; a short view is re-read before it counts as
        lost, since a message given up on may still be committing."""
        view: dict[str, Any] | None = None
        for attempt in range(3):
            view = await self.client.view(checker.conversation_id, target + attempt)
            if view is None:
                return
            if int(view.get("turns", 0)) >= checker.last_turn and not view.get("pending"):
                break
            await asyncio.sleep(0.5)
        if view is not None:
            self._report(checker.on_view(view, final=True))

    def _report(self, violations: list[Violation]) -> None:
        for violation in violations:
            self.recorder.violation(violation.kind, str(violation))
