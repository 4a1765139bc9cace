"""Locust users for statefleet, with the same conversation-aware checks as ``statefleet loadtest``.

    pip install -e ".[locust]"
    locust -f examples/locustfile.py --host http://127.0.0.1:8000 --headless -u 200 -r 50 -t 2m

Each user holds conversations of ``TURNS`` turns; every message has its own Idempotency-Key and is retried
with it on connection errors and 503; every reply and the conversation's history window are checked with
:class:`statefleet.loadtest.continuity.ContinuityChecker`. Violations are reported as failures of a
``continuity/<kind>`` request, so they show in Locust's failure table.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid

from locust import HttpUser, between, events, task

from statefleet.loadtest.continuity import ContinuityChecker, Violation

TURNS = int(os.environ.get("STATEFLEET_TURNS", "10"))
RETRIES = 5
_ids = itertools.count(1)


class ConversationUser(HttpUser):
    """One person holding conversations with the agent."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.start_conversation()

    def start_conversation(self) -> None:
        self.conversation_id = f"locust-{uuid.uuid4().hex[:8]}-{next(_ids)}"
        self.checker = ContinuityChecker(self.conversation_id)
        self.turn = 0

    @task
    def talk(self) -> None:
        self.turn += 1
        text = f"[{self.conversation_id}#{self.turn}] where is my order?"
        key = f"{self.conversation_id}-m{self.turn}"
        result = self.send(text, key)
        if result is None:
            self.checker.uncertain += 1
            self.start_conversation()
            return
        self.report(self.checker.on_reply(text, int(result["turn"]), str(result["reply"]["text"])))
        with self.client.get(f"/v1/conversations/{self.conversation_id}", name="/v1/conversations/[id]",
                             catch_response=True) as response:
            if response.status_code == 200:
                final = self.turn >= TURNS
                self.report(self.checker.on_view(response.json(), final=final))
                response.success()
        if self.turn >= TURNS:
            self.start_conversation()

    def send(self, text: str, key: str) -> dict[str, object] | None:
        """POST the message, retrying with the same Idempotency-Key on connection errors and 503."""
        for _attempt in range(RETRIES):
            with self.client.post(f"/v1/conversations/{self.conversation_id}/messages", json={"text": text},
                                  headers={"Idempotency-Key": key}, name="/v1/conversations/[id]/messages",
                                  catch_response=True) as response:
                if response.status_code == 200:
                    response.success()
                    return dict(response.json())
                if response.status_code in (0, 502, 503, 504):
                    response.failure(f"retryable {response.status_code}")
                    time.sleep(float(response.headers.get("Retry-After", "0.2") or 0.2))
                    continue
                response.failure(f"HTTP {response.status_code}")
                return None
        return None

    def report(self, violations: list[Violation]) -> None:
        for violation in violations:
            events.request.fire(request_type="continuity", name=f"continuity/{violation.kind}", response_time=0,
                                response_length=0, exception=AssertionError(str(violation)), context={})
