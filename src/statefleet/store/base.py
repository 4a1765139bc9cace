"""The ``Store`` contract: what every state backend provides, and the values that cross it.

A store keeps, per conversation: the pinned agent version, a bounded history window, the agent's JSON
state, a turn counter, the inbox of accepted messages not yet committed, the lease (owner, fencing token,
expiry), a bounded event log, and receipts (the outcome of a message, found by idempotency key or id).

Every method that changes a conversation is atomic for that conversation. The turn protocol built on it
(``statefleet.engine``) is: ``accept`` → run the handler under the returned lease (``renew`` while it runs) →
``commit`` under the fencing token, which also hands the lease on to the next inbox message or frees it.
``reclaim`` takes over a lease whose owner stopped renewing it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

Policy = Literal["enqueue", "reject", "interrupt"]
Outcome = Literal["committed", "failed", "cancelled"]
ReceiptStatus = Literal["pending", "committed", "failed", "cancelled"]
JSONObject = dict[str, Any]


class ConversationKey(NamedTuple):
    """Where a conversation lives: its tenant and its client-chosen id (both validated by the engine).

    A named tuple rather than a frozen dataclass: it is a dict key several times per streamed token, and a
    tuple hashes in C (the dataclass's generated ``__hash__`` was a few percent of a streaming server's CPU).
    """

    tenant: str
    id: str

    def __str__(self) -> str:
        return f"{self.tenant}:{self.id}"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """An accepted message, as it waits in the inbox."""

    id: str
    text: str
    metadata: JSONObject
    idempotency_key: str | None
    #: Unix time (seconds) the message was accepted.
    accepted_at: float
    #: Short hash of text+metadata, to tell a retry from a reused idempotency key.
    fingerprint: str = ""
    #: W3C ``traceparent`` of the request that sent it (tracing on), so the trace survives a takeover.
    trace: str | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """The exclusive right to run turns of one conversation, proved by a fencing token."""

    key: ConversationKey
    owner: str
    token: int
    #: The version the conversation is pinned to (the store indexes a lease's takeover hint by it, so that only
    #: instances of that version ever take the conversation over).
    version: str = ""


@dataclass(frozen=True, slots=True)
class WorkItem:
    """What a lease holder needs to run the message at the head of the inbox."""

    lease: Lease
    message: InboundMessage
    version: str
    turns: int
    history: list[JSONObject]
    state: JSONObject
    #: How many times this message's lease was granted for a run (1 the first time; more after takeovers).
    #: A grant handed back unstarted (``release(started=False)``) does not count; a grant whose holder died
    #: counts, even if it died before the handler began, since the store cannot tell the two apart.
    attempt: int
    #: After a takeover (``reclaim``): the instance that held the lease before, if any.
    previous_owner: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """The fate of one message: pending until its turn commits, fails or is cancelled."""

    message_id: str
    status: ReceiptStatus
    result: JSONObject | None = None
    fingerprint: str = ""


class AcceptKind(enum.Enum):
    """What ``Store.accept`` did with a message."""

    #: Accepted, and the lease was free: the caller now owns it and must run ``work``.
    LEASED = "leased"
    #: Accepted into the inbox behind a running turn; ``owner`` holds the lease.
    QUEUED = "queued"
    #: The idempotency key was seen before; ``receipt`` tells its fate. Nothing new was accepted.
    DUPLICATE = "duplicate"
    #: Policy ``reject`` and the conversation is busy. Nothing was accepted.
    REJECTED = "rejected"
    #: The conversation is pinned to ``version``, not the caller's. Nothing was accepted.
    WRONG_VERSION = "wrong_version"


@dataclass(frozen=True, slots=True)
class Acceptance:
    kind: AcceptKind
    message_id: str
    work: WorkItem | None = None
    owner: str | None = None
    receipt: Receipt | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class TurnCommit:
    """Everything one turn changes, applied atomically under the lease's fencing token."""

    message_id: str
    outcome: Outcome
    #: Utterances to append to history (user, then agent); empty unless committed.
    utterances: list[JSONObject]
    #: New state as JSON text, or None to keep it (always None unless committed).
    state_json: str | None
    #: Stored in the message's receipt and returned to every caller waiting for it.
    result: JSONObject
    #: Appended to the event log in the same atomic step (the reply, an error, a cancellation).
    events: list[JSONObject]
    #: The message's idempotency key, if it has one (lets the Redis store name its receipt up front).
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    #: True when the fencing token was stale: nothing was written.
    fenced: bool
    #: The next inbox message, still under the same lease; None when the lease was released.
    next: WorkItem | None = None
    #: Turn number after the commit.
    turns: int = 0


@dataclass(frozen=True, slots=True)
class RenewOutcome:
    #: False when the lease is no longer ours: stop the turn, do not commit.
    kept: bool
    #: True when a newer message asked to interrupt the running turn.
    interrupt: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a conversation's event log."""

    id: str
    type: str
    data: JSONObject


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A read-only snapshot of a conversation."""

    key: ConversationKey
    version: str
    turns: int
    history: list[JSONObject]
    state: JSONObject
    created_at: float
    active_at: float
    pending: int
    lease_owner: str | None


@dataclass(frozen=True, slots=True)
class Routing:
    """The fleet's routing weights: the share (in percent) of *new* conversations pinned to each version."""

    #: Version -> weight; the weights sum to 100. Empty: never set (a new conversation is pinned to the version
    #: of the instance that accepts it).
    weights: dict[str, int]
    #: Bumped by every change; 0 when never set.
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds and timings the store applies; passed with each call so one store can serve many agents."""

    #: Utterances kept in the history window.
    window: int = 20
    #: Lease time-to-live in seconds; renewed by heartbeat while a turn runs.
    lease_ttl: float = 3.0
    #: An idle conversation expires after this many seconds.
    conversation_ttl: float = 7 * 24 * 3600.0
    #: Receipts of client idempotency keys are kept this long (seconds).
    idempotency_ttl: float = 24 * 3600.0
    #: Receipts a waiting caller polls are kept this long (seconds).
    receipt_ttl: float = 600.0
    #: Every finished message's receipt is kept at least this long (seconds), so that an instance whose commit
    #: reply was lost (store paused, connection dropped) can read back whether, and how, it committed.
    outcome_ttl: float = 60.0
    #: Event log entries kept per conversation.
    events_max: int = 256
    #: The event log expires this long (seconds) after the last event.
    events_ttl: float = 3600.0
    #: Messages an inbox may hold; more are refused as overload.
    inbox_max: int = 1000
    #: A message started this many times without committing fails instead of running again.
    max_attempts: int = 5


@runtime_checkable
class Store(Protocol):
    """A state backend. See the module docstring for the turn protocol it serves."""

    async def accept(
        self,
        key: ConversationKey,
        message: InboundMessage,
        *,
        version: str,
        owner: str,
        policy: Policy,
        limits: Limits,
        new_version: str | None = None,
    ) -> Acceptance:
        """Durably append ``message`` to the inbox (or find its receipt), and take the lease if it is free.

        ``version`` is the caller's: a conversation pinned to another one is not accepted (``WRONG_VERSION``).
        A new conversation is pinned to ``new_version`` (default ``version``); when that is not the caller's,
        nothing is created either: ``WRONG_VERSION`` names ``new_version``, for the caller to forward to.
        """
        ...

    async def commit(self, lease: Lease, commit: TurnCommit, *, limits: Limits) -> CommitOutcome:
        """Apply a finished turn if ``lease`` is still current, then hand the lease on or free it."""
        ...

    async def renew(self, lease: Lease, *, limits: Limits) -> RenewOutcome:
        """Extend a held lease; tell whether it is still ours and whether an interrupt was asked."""
        ...

    async def release(self, lease: Lease, *, started: bool = True) -> None:
        """Give a lease back without committing (draining); pending messages become reclaimable at once.

        ``started`` False says the head message's handler never ran under this lease, so the grant does not
        count as an attempt (``WorkItem.attempt`` of its next run stays what it would have been).
        """
        ...

    async def reclaim(
        self, key: ConversationKey, *, owner: str, limits: Limits, version: str | None = None
    ) -> WorkItem | None:
        """Take over the lease of a conversation whose owner stopped renewing it, with a new token.

        With ``version``, a conversation pinned to another version is left alone (None is returned): an instance
        only ever runs turns of its own version.
        """
        ...

    async def expired_leases(self, limit: int, *, version: str | None = None) -> list[ConversationKey]:
        """Conversations (pinned to ``version``; None: any) whose lease may have expired with messages pending
        (hints; reclaim decides)."""
        ...

    async def receipt(self, key: ConversationKey, *, message_id: str) -> Receipt | None:
        """The fate of a message, by its id (kept for ``Limits.receipt_ttl`` while a caller waits)."""
        ...

    async def load(self, key: ConversationKey) -> ConversationView | None:
        """A snapshot of the conversation, or None."""
        ...

    async def delete(self, key: ConversationKey) -> bool:
        """Remove everything of the conversation; True if it existed."""
        ...

    async def append_events(self, batches: Mapping[ConversationKey, list[JSONObject]], *, limits: Limits) -> None:
        """Append live events (streamed tokens) to the event logs of one or more conversations, each in order.

        Not atomic across conversations: an engine writes the tokens of all its streams in one call.
        """
        ...

    async def read_events(self, key: ConversationKey, *, after: str | None, limit: int) -> list[Event]:
        """Events after the id ``after`` (from the oldest retained when None), oldest first."""
        ...

    async def backlog(self, version: str | None = None) -> int:
        """Conversations fleet-wide (pinned to ``version``; None: any) with messages accepted and not yet
        committed — running or waiting (cheap: no scan; on Redis read from the lease hints, so briefly off after
        a crash)."""
        ...

    async def pinned_conversations(self) -> dict[str, int]:
        """Live conversations per pinned version (a scan of every conversation: for operators, not hot paths)."""
        ...

    async def routing(self) -> Routing:
        """The fleet's routing weights (``Routing({}, 0)`` when never set)."""
        ...

    async def set_routing(
        self, weights: Mapping[str, int], *, expected_revision: int | None, change: JSONObject, log_max: int
    ) -> Routing:
        """Replace the weights, if the revision is still ``expected_revision`` (None: whatever it is), and
        append ``change`` to the routing log with ``old``, ``new`` and ``revision`` filled in, keeping the last
        ``log_max`` entries. Raises ``RoutingConflict`` when another change came first."""
        ...

    async def routing_log(self, limit: int) -> list[JSONObject]:
        """The last ``limit`` changes of the routing weights, newest first."""
        ...

    async def repair_hints(self, owner: str) -> int:
        """Re-index conversations with pending messages whose takeover hint was lost (Redis: a crash between a
        script and its hint, a failover); the engine calls it every minute. Returns how many it looked at."""
        ...

    async def register_instance(self, instance_id: str, info: JSONObject, *, ttl: float) -> None:
        """Record (or refresh) an instance of the fleet; it disappears ``ttl`` seconds after its last call."""
        ...

    async def deregister_instance(self, instance_id: str) -> None:
        """Remove an instance from the fleet registry (it is shutting down)."""
        ...

    async def instances(self) -> list[JSONObject]:
        """The live instances' info, as registered."""
        ...

    async def fleet_epoch(self, candidate: str) -> str:
        """The store's epoch marker: set to ``candidate`` if the store has none, and returned.

        Instances remember the epoch they first saw; a different one later means the store lost its data
        (restarted empty, flushed, a new file) under a running fleet.
        """
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` if the store cannot be reached."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...


@dataclass(slots=True)
class StoreStats:
    """Counters a store keeps about itself (for metrics)."""

    round_trips: int = 0
    ops: dict[str, int] = field(default_factory=dict)
