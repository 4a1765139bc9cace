"""What a finished turn writes: the ``TurnCommit`` for a committed, failed or interrupted turn."""

from __future__ import annotations

import json
import time

from .. import errors
from ..agent import Agent, Turn
from ..store.base import JSONObject, TurnCommit, WorkItem


def committed(work: WorkItem, turn: Turn, emitted: int, agent: Agent) -> TurnCommit:
    """The commit of a turn whose handler returned (history, state, reply), or a failure if it cannot be stored."""
    reply = turn.final_reply()
    number = work.turns + 1
    try:
        if not isinstance(turn.state, dict):
            raise TypeError(f"turn.state must stay a dict, not {type(turn.state).__name__}")
        state_json = json.dumps(turn.state, separators=(",", ":"), allow_nan=False)
        data_json = json.dumps(reply.data, allow_nan=False) if reply.data is not None else None
    except (TypeError, ValueError) as exc:
        return failed(work.message.id, errors.StateNotSerializable(
            f"turn.state or reply data of message {work.message.id!r} is not JSON-serializable: {exc}"))
    if len(state_json) > agent.max_state_bytes:
        return failed(work.message.id, errors.TurnFailed(
            f"state is {len(state_json)} bytes; agent {agent.name!r} allows {agent.max_state_bytes}"))
    del data_json
    now = time.time()
    utterances: list[JSONObject] = [
        {"role": "user", "text": work.message.text, "ts": work.message.accepted_at, "turn": number}
    ]
    if reply.text or reply.data is not None:
        utterances.append({"role": "agent", "text": reply.text, "ts": now, "turn": number})
    reply_json = {"text": reply.text, "data": reply.data}
    result = {"turn": number, "version": work.version, "reply": reply_json, "events": emitted + 1}
    return TurnCommit(
        message_id=work.message.id,
        outcome="committed",
        utterances=utterances,
        state_json=state_json,
        result=result,
        events=[{"type": "reply", "message_id": work.message.id, "turn": number, **reply_json}],
    )


def failed(message_id: str, error: errors.StatefleetError) -> TurnCommit:
    """The commit of a turn that failed: the message is acknowledged, nothing else changes."""
    body = {"code": error.code, "message": str(error)}
    return TurnCommit(message_id, "failed", [], None, {"error": body},
                      [{"type": "error", "message_id": message_id, **body}])


def cancelled(message_id: str) -> TurnCommit:
    """The commit of an interrupted turn: the message is acknowledged, nothing else changes."""
    body = {"code": errors.TurnInterrupted.code,
            "message": f"message {message_id!r} was interrupted by a newer message"}
    return TurnCommit(message_id, "cancelled", [], None, {"error": body},
                      [{"type": "cancelled", "message_id": message_id, **body}])
