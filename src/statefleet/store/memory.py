"""``memory://``: one process, no persistence. For unit tests, notebooks and the contract suite's baseline."""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Mapping

from .._json import dumps, loads
from . import _records
from .base import (
    Acceptance,
    CommitOutcome,
    ConversationKey,
    ConversationView,
    Event,
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


class _EventLog:
    """A conversation's bounded event log: sequence numbers and event bodies (``{"type": ..., ...}``).

    Two deques rather than a deque of ``Event`` objects or tuples: an int, and a dict of strings, are objects the
    garbage collector does not track, while a log of tracked objects would put every streamed token of every
    live conversation in the collector's work (long pauses with thousands of conversations).
    """

    __slots__ = ("bodies", "expires", "seqs")

    def __init__(self, maxlen: int) -> None:
        self.seqs: deque[int] = deque(maxlen=maxlen)
        self.bodies: deque[JSONObject] = deque(maxlen=maxlen)
        self.expires = 0.0

    def append(self, seq: int, event: JSONObject) -> None:
        self.seqs.append(seq)
        self.bodies.append(dict(event))

    def after(self, floor: int, limit: int) -> list[Event]:
        events: list[Event] = []
        if limit <= 0:
            return events
        for seq, body in zip(self.seqs, self.bodies, strict=True):
            if seq > floor:
                data = dict(body)
                events.append(Event(str(seq), str(data.pop("type")), data))
                if len(events) == limit:
                    break
        return events


class MemoryStore:
    """All state in this process's memory. Every method runs without awaiting, so each is atomic."""

    def __init__(self) -> None:
        self._records: dict[ConversationKey, _records.Record] = {}
        self._expires: dict[ConversationKey, float] = {}
        #: Receipts as JSON (and their expiry), which the garbage collector need not look into: one per message.
        self._receipts: dict[tuple[ConversationKey, str], tuple[bytes, float]] = {}
        #: (expiry, receipt) in expiry order, to drop expired receipts nobody reads again (an entry whose
        #: receipt was rewritten with a later expiry is skipped when it comes up).
        self._receipt_expiries: list[tuple[float, tuple[ConversationKey, str]]] = []
        self._epoch: str | None = None
        self._events: dict[ConversationKey, _EventLog] = {}
        self._hints: dict[ConversationKey, float] = {}
        self._event_seq = 0
        self._instances: dict[str, tuple[JSONObject, float]] = {}
        self._routing = Routing({}, 0)
        self._routing_log: deque[JSONObject] = deque()
        self._clock = time.time

    # -- helpers -------------------------------------------------------------------------------------------

    def _record(self, key: ConversationKey, now: float) -> _records.Record | None:
        record = self._records.get(key)
        if record is not None and self._expires.get(key, 0.0) <= now:
            self._drop(key)
            return None
        return record

    def _get_receipt(self, key: ConversationKey, name: str, now: float) -> Receipt | None:
        entry = self._receipts.get((key, name))
        if entry is None:
            return None
        if entry[1] <= now:
            del self._receipts[(key, name)]
            return None
        return Receipt(*loads(entry[0]))

    def _apply(
        self,
        key: ConversationKey,
        record: _records.Record | None,
        fx: _records.Effects,
        limits: Limits,
        now: float,
    ) -> None:
        if record is not None:
            self._records[key] = record
            self._expires[key] = now + limits.conversation_ttl
        for write in fx.receipts:
            ttl = write.ttl
            if write.ttl_if_new is not None and self._get_receipt(key, write.name, now) is None:
                ttl = write.ttl_if_new
            r = write.receipt
            body = dumps((r.message_id, r.status, r.result, r.fingerprint))
            self._receipts[(key, write.name)] = (body, now + ttl)
            heapq.heappush(self._receipt_expiries, (now + ttl, (key, write.name)))
        if fx.receipts:
            self._drop_expired_receipts(now)
        if fx.events:
            self._append(key, fx.events, limits, now)
        if fx.hint is not None:
            self._hints[key] = fx.hint
        elif fx.drop_hint:
            self._hints.pop(key, None)

    def _drop_expired_receipts(self, now: float) -> None:
        heap, receipts = self._receipt_expiries, self._receipts
        while heap and heap[0][0] <= now:
            _, rkey = heapq.heappop(heap)
            entry = receipts.get(rkey)
            if entry is not None and entry[1] <= now:
                del receipts[rkey]

    def _append(self, key: ConversationKey, events: list[JSONObject], limits: Limits, now: float) -> None:
        log = self._events.get(key)
        if log is None or log.expires <= now or log.seqs.maxlen != limits.events_max:
            old = log if log is not None and log.expires > now else None
            log = self._events[key] = _EventLog(limits.events_max)
            if old is not None:
                log.seqs.extend(old.seqs)
                log.bodies.extend(old.bodies)
        for event in events:
            self._event_seq += 1
            log.append(self._event_seq, event)
        log.expires = now + limits.events_ttl

    def _drop(self, key: ConversationKey) -> None:
        self._records.pop(key, None)
        self._expires.pop(key, None)
        self._events.pop(key, None)
        self._hints.pop(key, None)
        for rkey in [k for k in self._receipts if k[0] == key]:
            del self._receipts[rkey]

    # -- Store ---------------------------------------------------------------------------------------------

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
        now = self._clock()
        existing = None
        if message.idempotency_key is not None:
            existing = self._get_receipt(key, _records.receipt_name_for_key(message.idempotency_key), now)
        acceptance, record, fx = _records.accept(
            self._record(key, now), existing, key, message,
            version=version, owner=owner, policy=policy, limits=limits, now=now, new_version=new_version,
        )
        self._apply(key, record, fx, limits, now)
        return acceptance

    async def commit(self, lease: Lease, commit: TurnCommit, *, limits: Limits) -> CommitOutcome:
        now = self._clock()
        outcome, record, fx = _records.commit(
            self._record(lease.key, now), lease, commit, limits=limits, now=now
        )
        self._apply(lease.key, record, fx, limits, now)
        return outcome

    async def renew(self, lease: Lease, *, limits: Limits) -> RenewOutcome:
        now = self._clock()
        outcome, record, fx = _records.renew(self._record(lease.key, now), lease, limits=limits, now=now)
        self._apply(lease.key, record, fx, limits, now)
        return outcome

    async def release(self, lease: Lease, *, started: bool = True) -> None:
        now = self._clock()
        record, fx = _records.release(self._record(lease.key, now), lease, started=started)
        if record is not None:
            self._records[lease.key] = record
        self._apply(lease.key, None, fx, Limits(), now)

    async def reclaim(
        self, key: ConversationKey, *, owner: str, limits: Limits, version: str | None = None
    ) -> WorkItem | None:
        now = self._clock()
        work, record, fx, _failed = _records.reclaim(
            self._record(key, now), key, owner=owner, limits=limits, now=now, version=version
        )
        self._apply(key, record, fx, limits, now)
        return work

    async def expired_leases(self, limit: int, *, version: str | None = None) -> list[ConversationKey]:
        now = self._clock()
        due = [key for key, expires in self._hints.items() if expires <= now and (
            version is None or ((record := self._records.get(key)) is not None and record.version == version))]
        return due[:limit]

    async def receipt(self, key: ConversationKey, *, message_id: str) -> Receipt | None:
        return self._get_receipt(key, _records.receipt_name_for_message(message_id), self._clock())

    async def load(self, key: ConversationKey) -> ConversationView | None:
        now = self._clock()
        record = self._record(key, now)
        return None if record is None else _records.view(key, record, now)

    async def delete(self, key: ConversationKey) -> bool:
        existed = self._record(key, self._clock()) is not None
        self._drop(key)
        return existed

    async def append_events(self, batches: Mapping[ConversationKey, list[JSONObject]], *, limits: Limits) -> None:
        now = self._clock()
        for key, events in batches.items():
            self._append(key, events, limits, now)

    async def read_events(self, key: ConversationKey, *, after: str | None, limit: int) -> list[Event]:
        log = self._events.get(key)
        if log is None or log.expires <= self._clock():
            return []
        return log.after(int(after) if after else 0, limit)

    async def backlog(self, version: str | None = None) -> int:
        now = self._clock()
        return sum(1 for key, record in self._records.items() if record.inbox and self._expires.get(key, 0) > now
                   and (version is None or record.version == version))

    async def pinned_conversations(self) -> dict[str, int]:
        now = self._clock()
        counts: dict[str, int] = {}
        for key, record in self._records.items():
            if self._expires.get(key, 0) > now:
                counts[record.version] = counts.get(record.version, 0) + 1
        return counts

    async def routing(self) -> Routing:
        return self._routing

    async def set_routing(
        self, weights: Mapping[str, int], *, expected_revision: int | None, change: JSONObject, log_max: int
    ) -> Routing:
        self._routing, entry = _records.change_routing(self._routing, weights, expected_revision, change)
        self._routing_log.appendleft(entry)
        while len(self._routing_log) > max(1, log_max):
            self._routing_log.pop()
        return self._routing

    async def routing_log(self, limit: int) -> list[JSONObject]:
        return list(self._routing_log)[:max(0, limit)]

    async def repair_hints(self, owner: str) -> int:
        return 0  # nothing to repair: the index of expiring leases changes with the conversation itself

    async def register_instance(self, instance_id: str, info: JSONObject, *, ttl: float) -> None:
        self._instances[instance_id] = (dict(info), self._clock() + ttl)

    async def deregister_instance(self, instance_id: str) -> None:
        self._instances.pop(instance_id, None)

    async def instances(self) -> list[JSONObject]:
        now = self._clock()
        return [info for info, expires in self._instances.values() if expires > now]

    async def fleet_epoch(self, candidate: str) -> str:
        if self._epoch is None:
            self._epoch = candidate
        return self._epoch

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
