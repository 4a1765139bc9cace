"""The turn protocol on one conversation record, in plain Python.

The memory and SQLite stores load a ``Record``, call one of these functions, and save what it changed, all
inside one atomic step (a single-threaded section, or a write transaction). The Redis store implements the
same rules in Lua (``store/lua/``); the contract suite holds all of them to the same behaviour.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import RoutingConflict
from .base import (
    Acceptance,
    AcceptKind,
    CommitOutcome,
    ConversationKey,
    ConversationView,
    InboundMessage,
    JSONObject,
    Lease,
    Limits,
    Policy,
    Receipt,
    RenewOutcome,
    Routing,
    TurnCommit,
    WorkItem,
)


@dataclass(slots=True)
class Record:
    version: str
    created_at: float
    active_at: float
    turns: int = 0
    history: list[JSONObject] = field(default_factory=list)
    state_json: str = "{}"
    inbox: deque[InboundMessage] = field(default_factory=deque)
    lease_owner: str | None = None
    lease_token: int = 0
    lease_expires: float = 0.0
    #: Last fencing token handed out; strictly increasing for the life of the conversation, and from one
    #: incarnation to the next (a new one starts at its creation time in µs, see ``new_fence``).
    fence: int = 0
    #: Id of the running message a newer one asked to interrupt.
    interrupt: str | None = None
    #: Starts of the message at the head of the inbox.
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class ReceiptWrite:
    name: str
    receipt: Receipt
    #: Seconds to keep it (when it already existed, if ``ttl_if_new`` is set).
    ttl: float
    #: Seconds to keep it when it did not exist yet; None: ``ttl`` either way.
    ttl_if_new: float | None = None


@dataclass(slots=True)
class Effects:
    """What a step did besides changing the record: receipts to write, events to append."""

    receipts: list[ReceiptWrite] = field(default_factory=list)
    events: list[JSONObject] = field(default_factory=list)
    #: The lease-expiry hint to set (expiry time) or drop (None).
    hint: float | None = None
    drop_hint: bool = False


def receipt_name_for_key(idempotency_key: str) -> str:
    return "k:" + idempotency_key


def receipt_name_for_message(message_id: str) -> str:
    return "m:" + message_id


def new_fence(now: float) -> int:
    """The first fencing token of a new incarnation: its creation time in µs.

    Tokens of an earlier incarnation (before a delete or expiry) are below it, so a stale owner of the old one
    can never present a token the new one also hands out — unless the clock stepped back meanwhile.
    """
    return int(now * 1_000_000)


def lease_live(record: Record, now: float) -> bool:
    return record.lease_owner is not None and record.lease_expires > now


def _take_head(record: Record, key: ConversationKey, owner: str, now: float, limits: Limits) -> WorkItem:
    """Grant the lease (new token) to ``owner`` for the head message."""
    record.fence += 1
    record.lease_owner = owner
    record.lease_token = record.fence
    record.lease_expires = now + limits.lease_ttl
    record.interrupt = None
    record.attempts += 1
    return _work(record, key)


def _work(record: Record, key: ConversationKey) -> WorkItem:
    assert record.lease_owner is not None
    return WorkItem(
        lease=Lease(key, record.lease_owner, record.lease_token, record.version),
        message=record.inbox[0],
        version=record.version,
        turns=record.turns,
        history=list(record.history),
        state=json.loads(record.state_json),
        attempt=record.attempts,
    )


def accept(
    record: Record | None,
    existing_receipt: Receipt | None,
    key: ConversationKey,
    message: InboundMessage,
    *,
    version: str,
    owner: str,
    policy: Policy,
    limits: Limits,
    now: float,
    new_version: str | None = None,
) -> tuple[Acceptance, Record | None, Effects]:
    """Accept ``message`` into ``record`` (created when None). Returns the record to save (None: unchanged)."""
    fx = Effects()
    if existing_receipt is not None:
        return (
            Acceptance(AcceptKind.DUPLICATE, existing_receipt.message_id, receipt=existing_receipt),
            None,
            fx,
        )
    if record is not None and record.version != version:
        return Acceptance(AcceptKind.WRONG_VERSION, message.id, version=record.version), None, fx
    if record is None and new_version and new_version != version:
        return Acceptance(AcceptKind.WRONG_VERSION, message.id, version=new_version), None, fx
    if record is None:
        record = Record(version=version, created_at=now, active_at=now, fence=new_fence(now))
    busy = lease_live(record, now) or bool(record.inbox)
    if policy == "reject" and busy:
        return Acceptance(AcceptKind.REJECTED, message.id, owner=record.lease_owner), None, fx
    if len(record.inbox) >= limits.inbox_max:
        return Acceptance(AcceptKind.REJECTED, message.id, owner=record.lease_owner), None, fx
    record.inbox.append(message)
    record.active_at = now
    if message.idempotency_key is not None:
        fx.receipts.append(
            ReceiptWrite(
                receipt_name_for_key(message.idempotency_key),
                Receipt(message.id, "pending", fingerprint=message.fingerprint),
                limits.idempotency_ttl,
            )
        )
    if not lease_live(record, now):
        record.attempts = 0 if record.inbox[0].id == message.id else record.attempts
        work = _take_head(record, key, owner, now, limits)
        fx.hint = record.lease_expires
        if work.message.id != message.id:
            # The head is an older message a dead owner left; ours waits behind it, so its caller polls.
            fx.receipts.append(
                ReceiptWrite(receipt_name_for_message(message.id), Receipt(message.id, "pending"), limits.receipt_ttl)
            )
        return Acceptance(AcceptKind.LEASED, message.id, work=work, owner=owner), record, fx
    fx.receipts.append(
        ReceiptWrite(receipt_name_for_message(message.id), Receipt(message.id, "pending"), limits.receipt_ttl)
    )
    if policy == "interrupt":
        record.interrupt = record.inbox[0].id
    return Acceptance(AcceptKind.QUEUED, message.id, owner=record.lease_owner), record, fx


def _holds(record: Record | None, lease: Lease) -> bool:
    return (
        record is not None
        and record.lease_owner == lease.owner
        and record.lease_token == lease.token
    )


def commit(
    record: Record | None, lease: Lease, commit: TurnCommit, *, limits: Limits, now: float
) -> tuple[CommitOutcome, Record | None, Effects]:
    """Apply ``commit`` if ``lease`` is current and its message heads the inbox; hand on or free the lease.

    A lease whose expiry passed but that nobody took over is still current: its token is what fences.
    """
    fx = Effects()
    if not _holds(record, lease) or not record.inbox or record.inbox[0].id != commit.message_id:  # type: ignore[union-attr]
        return CommitOutcome(fenced=True), None, fx
    assert record is not None
    message = record.inbox.popleft()
    if commit.outcome == "committed":
        record.turns += 1
        record.history.extend(commit.utterances)
        if len(record.history) > limits.window:
            del record.history[: len(record.history) - limits.window]
        if commit.state_json is not None:
            record.state_json = commit.state_json
    record.active_at = now
    record.interrupt = None
    record.attempts = 0
    done = Receipt(message.id, commit.outcome, commit.result, message.fingerprint)
    if message.idempotency_key is not None:
        fx.receipts.append(ReceiptWrite(receipt_name_for_key(message.idempotency_key), done, limits.idempotency_ttl))
    # Every outcome is readable by message id for a while, so a commit whose reply was lost can be resolved.
    fx.receipts.append(ReceiptWrite(receipt_name_for_message(message.id), done, limits.receipt_ttl,
                                    limits.outcome_ttl))
    fx.events.extend(commit.events)
    if record.inbox:
        record.lease_expires = now + limits.lease_ttl
        record.attempts = 1
        fx.hint = record.lease_expires
        return CommitOutcome(False, _work(record, lease.key), record.turns), record, fx
    record.lease_owner = None
    record.lease_expires = 0.0
    fx.drop_hint = True
    return CommitOutcome(False, None, record.turns), record, fx


def renew(
    record: Record | None, lease: Lease, *, limits: Limits, now: float
) -> tuple[RenewOutcome, Record | None, Effects]:
    fx = Effects()
    if not _holds(record, lease):
        return RenewOutcome(kept=False), None, fx
    assert record is not None
    record.lease_expires = now + limits.lease_ttl
    fx.hint = record.lease_expires
    return RenewOutcome(kept=True, interrupt=record.interrupt is not None), record, fx


def release(record: Record | None, lease: Lease, *, started: bool = True) -> tuple[Record | None, Effects]:
    fx = Effects()
    if not _holds(record, lease):
        return None, fx
    assert record is not None
    if not started:
        record.attempts = max(0, record.attempts - 1)
    record.lease_owner = None
    record.lease_expires = 0.0
    record.interrupt = None
    if record.inbox:
        fx.hint = 0.0
    else:
        fx.drop_hint = True
    return record, fx


def reclaim(
    record: Record | None, key: ConversationKey, *, owner: str, limits: Limits, now: float,
    version: str | None = None,
) -> tuple[WorkItem | None, Record | None, Effects, Receipt | None]:
    """Take over an expired or released lease with work pending (of a conversation pinned to ``version``,
    when given; one pinned to another is left alone).

    Returns (work, record to save, effects, receipt of a message failed for too many attempts).
    """
    fx = Effects()
    if record is None:
        fx.drop_hint = True
        return None, None, fx, None
    if version is not None and record.version != version:
        return None, None, fx, None
    if lease_live(record, now):
        fx.hint = record.lease_expires
        return None, None, fx, None
    if not record.inbox:
        fx.drop_hint = True
        if record.lease_owner is None:
            return None, None, fx, None
        record.lease_owner = None
        record.lease_expires = 0.0
        return None, record, fx, None
    failed: Receipt | None = None
    while record.inbox and record.attempts >= limits.max_attempts:
        # A message that keeps killing its instance must not block the conversation forever.
        message = record.inbox.popleft()
        record.attempts = 0
        error = {"code": "too_many_attempts",
                 "message": f"message {message.id!r} was started {limits.max_attempts} times without "
                            "committing; giving up"}
        failed = Receipt(message.id, "failed", {"error": error}, message.fingerprint)
        if message.idempotency_key is not None:
            fx.receipts.append(
                ReceiptWrite(receipt_name_for_key(message.idempotency_key), failed, limits.idempotency_ttl)
            )
        fx.receipts.append(ReceiptWrite(receipt_name_for_message(message.id), failed, limits.receipt_ttl,
                                        limits.outcome_ttl))
        fx.events.append({"type": "error", "message_id": message.id, **error})
    if not record.inbox:
        record.lease_owner = None
        record.lease_expires = 0.0
        fx.drop_hint = True
        return None, record, fx, failed
    previous = record.lease_owner
    work = dataclasses.replace(_take_head(record, key, owner, now, limits), previous_owner=previous)
    fx.hint = record.lease_expires
    return work, record, fx, failed


def view(key: ConversationKey, record: Record, now: float) -> ConversationView:
    return ConversationView(
        key=key,
        version=record.version,
        turns=record.turns,
        history=list(record.history),
        state=json.loads(record.state_json),
        created_at=record.created_at,
        active_at=record.active_at,
        pending=len(record.inbox),
        lease_owner=record.lease_owner if lease_live(record, now) else None,
    )


def change_routing(
    current: Routing, weights: Mapping[str, int], expected_revision: int | None, change: JSONObject
) -> tuple[Routing, JSONObject]:
    """The routing after a change, and its log entry (``set_routing`` of the SQLite and memory stores)."""
    if expected_revision is not None and expected_revision != current.revision:
        raise RoutingConflict(
            f"the routing weights changed meanwhile (revision {current.revision}, not {expected_revision}): "
            f"now {current.weights}; read them again and retry"
        )
    new = Routing(dict(weights), current.revision + 1)
    return new, {**change, "old": current.weights, "new": new.weights, "revision": new.revision}
