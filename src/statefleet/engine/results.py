"""What callers get back: a ``TurnResult`` for a message, a ``Conversation`` snapshot; errors from receipts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .. import errors
from ..store.base import ConversationKey, ConversationView, JSONObject

_ERRORS: dict[str, type[errors.StatefleetError]] = {
    cls.code: cls
    for cls in (
        errors.TurnFailed,
        errors.StateNotSerializable,
        errors.TurnInterrupted,
        errors.LeaseLost,
    )
}


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What a caller gets back for one message."""

    conversation_id: str
    message_id: str
    turn: int
    version: str
    reply: str
    data: JSONObject | None
    #: Events the turn emitted (tokens plus the reply).
    events: int
    #: True when this was a retry of an idempotency key already seen.
    duplicate: bool = False

    def to_json(self) -> JSONObject:
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "turn": self.turn,
            "version": self.version,
            "reply": {"text": self.reply, "data": self.data},
            "events": self.events,
        }


@dataclass(frozen=True, slots=True)
class Conversation:
    """A snapshot of a conversation, as ``Engine.get`` returns it."""

    conversation_id: str
    tenant: str
    version: str
    turns: int
    history: list[JSONObject]
    state: JSONObject
    created_at: float
    active_at: float
    pending: int

    @classmethod
    def from_view(cls, view: ConversationView) -> Conversation:
        return cls(view.key.id, view.key.tenant, view.version, view.turns, view.history, view.state,
                   view.created_at, view.active_at, view.pending)

    def to_json(self) -> JSONObject:
        return {
            "conversation_id": self.conversation_id,
            "version": self.version,
            "turns": self.turns,
            "history": self.history,
            "state": self.state,
            "pending": self.pending,
        }


def to_turn_result(key: ConversationKey, message_id: str, result: JSONObject, duplicate: bool) -> TurnResult:
    """The caller's view of a message's committed result; the matching error if the turn did not commit."""
    error = result.get("error")
    if error is not None:
        cls = _ERRORS.get(error.get("code", ""), errors.TurnFailed)
        raise cls(error.get("message", "the turn failed"))
    reply = result["reply"]
    return TurnResult(key.id, message_id, result["turn"], result["version"], reply["text"], reply.get("data"),
                      result.get("events", 1), duplicate)


def expire_waiter(waiter: asyncio.Future[JSONObject], message_id: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(errors.TurnTimeout(
            f"no reply to message {message_id!r} within {timeout} s; it stays accepted and will be processed — "
            "retry with the same Idempotency-Key to get its result"))
