"""What the engine tells observers about turns. Metrics and tracing implement it; None costs nothing."""

from __future__ import annotations

from typing import Protocol

from ..store.base import ConversationKey


class EngineObserver(Protocol):
    """Called by ``Engine`` on the hot path: implementations must be cheap and must not raise."""

    def message_accepted(self, kind: str) -> None:
        """A ``send`` got an answer from the store: leased, queued, duplicate, rejected or wrong_version."""

    def turn_started(self, key: ConversationKey, message_id: str, attempt: int) -> None:
        """A handler is about to run (``attempt`` > 1 after a takeover)."""

    def turn_finished(
        self, key: ConversationKey, *, outcome: str, attempt: int, handler_seconds: float, total_seconds: float
    ) -> None:
        """A turn's commit landed. ``outcome``: committed, failed or interrupted; ``total_seconds`` runs from
        the message's acceptance to the commit."""

    def turn_abandoned(self, key: ConversationKey, reason: str) -> None:
        """A started turn will not commit here: ``lost`` (lease gone), ``fenced`` or ``drain`` (handed back)."""

    def first_token(self, seconds: float) -> None:
        """The first token of a turn was emitted, ``seconds`` after the message was accepted."""

    def takeover(self, key: ConversationKey, previous_owner: str | None, attempt: int) -> None:
        """This engine took over a conversation whose owner stopped renewing its lease."""
