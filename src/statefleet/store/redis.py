"""``redis://``, ``rediss://``, ``redis+sentinel://`` and ``redis+cluster://``: the production store, on Redis 7+.

Each change to a conversation is one Lua script (``store/lua/``) over keys that share the conversation's
hash tag (``_redis_keys``), all passed in ``KEYS``, so it is atomic and runs on one Redis Cluster slot. An
uncontended turn is two round trips: ``accept`` then ``commit``. Lease expiry uses the Redis server's clock,
so instance clocks never matter. The fleet-wide lease hints the sweeper reads are updated beside the scripts
(``_hints``), never inside them.

Every command goes through a ``RedisRouter`` (``_router``): one pipelined connection per node, routed by slot,
following redirections and failovers. Commands that may have run are not retried automatically: a write
retried after a lost reply could accept a message twice. Such a failure surfaces as ``StoreUnavailable`` and
the turn protocol above decides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import random
import re
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any, NamedTuple, cast

from .._json import dumps_str as _dumps
from ..errors import RoutingConflict, StoreError, StoreUnavailable
from ._hints import HintWriter
from ._records import receipt_name_for_key, receipt_name_for_message
from ._redis_keys import (
    AUDIT,
    EPOCH_KEYS,
    INBOX_PATTERN,
    INSTANCES,
    META_PATTERN,
    ROUTING,
    ROUTING_LOG,
    VERSIONS,
    conversation_keys,
    conversation_of,
    hint_keys,
    member_of_inbox,
    meta_of_inbox,
)
from ._resp import ConnectionClosed, ReplyError
from ._router import RedisRouter
from .base import (
    Acceptance,
    AcceptKind,
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
    StoreStats,
    TurnCommit,
    WorkItem,
)

_SCRIPTS = (
    "accept", "commit", "renew", "release", "reclaim", "load", "receipt", "delete", "append_events", "expired",
    "hints", "routing",
)
#: Error replies that mean "the store cannot serve now, try again shortly" (a restart loading its data, a
#: script running too long, a replica without its primary, a read-only replica after a failover, a cluster
#: resharding), as opposed to a bug. Each becomes ``StoreUnavailable`` (503 + Retry-After).
_UNAVAILABLE_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")
_UNAVAILABLE = re.compile(r"(?:^|\(')(?:" + "|".join(_UNAVAILABLE_REPLIES) + r")\b")
_EVENT_ID = re.compile(r"\d+(-\d+)?")
#: How long the instance repairing lost hints holds the audit (one audit per fleet per this many seconds).
AUDIT_HOLD_MS = 60_000


def is_unavailable_reply(message: str) -> bool:
    """True for a Redis error reply that means "not now" rather than "wrong" (see ``_UNAVAILABLE_REPLIES``)."""
    return _UNAVAILABLE.search(message) is not None


@functools.cache
def _script_source(name: str) -> str:
    lua = resources.files("statefleet.store.lua")
    return lua.joinpath("_prelude.lua").read_text("utf-8") + "\n" + lua.joinpath(f"{name}.lua").read_text("utf-8")


class _LimitArgs(NamedTuple):
    """``Limits`` as script arguments (integers as text, durations in ms)."""

    window: str
    lease: str
    conversation: str
    idempotency: str
    receipt: str
    outcome: str
    events_max: str
    events: str
    inbox_max: str
    max_attempts: str


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


@functools.lru_cache(maxsize=64)
def _limit_args(limits: Limits) -> _LimitArgs:
    return _LimitArgs(
        window=str(limits.window),
        lease=_ms(limits.lease_ttl),
        conversation=_ms(limits.conversation_ttl),
        idempotency=_ms(limits.idempotency_ttl),
        receipt=_ms(limits.receipt_ttl),
        outcome=_ms(limits.outcome_ttl),
        events_max=str(limits.events_max),
        events=_ms(limits.events_ttl),
        inbox_max=str(limits.inbox_max),
        max_attempts=str(limits.max_attempts),
    )


def _inbox_entry(message: InboundMessage) -> tuple[str, str]:
    """The message as an inbox entry (layout in ``lua/_prelude.lua``), and its idempotency receipt name."""
    key = message.idempotency_key
    kname = "" if key is None else receipt_name_for_key(key)
    receipt = "[" + _dumps(message.id) + "," + _dumps(message.fingerprint) + ","
    fields = [message.id, message.text, message.metadata, key, message.accepted_at, message.fingerprint]
    if message.trace is not None:  # older entries have no trace: ``_message`` reads both
        fields.append(message.trace)
    body = _dumps(fields)
    head = f"{len(message.id.encode())}:{len(kname.encode())}:{len(receipt)}:"
    return head + message.id + kname + receipt + body, kname


def _message(body: str) -> InboundMessage:
    return InboundMessage(*json.loads(body))


def _receipt(text: str) -> Receipt:
    message_id, fingerprint, status, result = json.loads(text)
    return Receipt(message_id, status, result, fingerprint)


def _history(utterances: list[str]) -> list[JSONObject]:
    return cast(list[JSONObject], json.loads("[" + ",".join(utterances) + "]"))


def _work(key: ConversationKey, owner: str, reply: list[Any], message: InboundMessage | None = None) -> WorkItem:
    """Decode ``{tag, token, attempt, turns, version, state, head body, expiry, history...}``."""
    return WorkItem(
        lease=Lease(key, owner, int(reply[1]), reply[4]),
        message=_message(reply[6]) if reply[6] is not None else cast(InboundMessage, message),
        version=reply[4],
        turns=int(reply[3]),
        history=_history(reply[8:]),
        state={} if reply[5] is None else json.loads(reply[5]),
        attempt=int(reply[2]),
    )


class RedisStore:
    """The ``Store`` on Redis. Open it with ``await RedisStore.open("redis://:password@host:6379/0")``."""

    def __init__(self, router: RedisRouter) -> None:
        self._router = router
        self._execute = router.execute
        self._url = router.description
        self._shas = {name: router.register_script(_script_source(name)) for name in _SCRIPTS}
        self._hints = HintWriter(self)
        #: Round trips and script calls made, for metrics.
        self.stats = StoreStats()

    @classmethod
    async def open(cls, url: str) -> RedisStore:
        """Connect to the Redis at ``url`` (any shape), check that it answers, and load the scripts."""
        router = await RedisRouter.open(url)
        store = cls(router)
        try:
            for name in _SCRIPTS:
                await router.each_primary("SCRIPT", "LOAD", _script_source(name))
        except (ReplyError, ConnectionClosed) as exc:
            await router.close()
            raise StoreUnavailable(f"cannot load the scripts into the Redis store at {store._url}: {exc}") from exc
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._url!r})"

    async def _eval(self, name: str, keys: list[str], args: list[str]) -> Any:
        """Run a script, counted as one round trip."""
        stats = self.stats
        stats.round_trips += 1
        stats.ops[name] = stats.ops.get(name, 0) + 1
        # ``_run`` inlined: the hot path pays for one coroutine less per script call.
        try:
            return await self._execute(keys[0], "EVALSHA", self._shas[name], len(keys), *keys, *args)
        except ReplyError as exc:
            raise self._store_error(exc) from exc
        except ConnectionClosed as exc:
            raise self._unanswered(exc) from exc

    async def _granting(self, member: str, version: str, name: str, keys: list[str], args: list[str]) -> Any:
        """Run a script that may grant, hand on or free a lease. If its reply is lost (the script may have run),
        the lease it may have granted has no hint and nobody to renew it: mark the conversation due now, so the
        sweeper looks at it once the lease expires instead of the audit a minute later."""
        try:
            return await self._eval(name, keys, args)
        except StoreUnavailable:
            self._hints.add_if_absent(member, version)
            raise

    async def _run(self, key: str | None, *args: str | int) -> Any:
        try:
            return await self._execute(key, *args)
        except ReplyError as exc:
            raise self._store_error(exc) from exc
        except ConnectionClosed as exc:
            raise self._unanswered(exc) from exc

    def _unanswered(self, exc: ConnectionClosed) -> StoreUnavailable:
        """No reply: not retried here, since the command may have run before the connection dropped."""
        return StoreUnavailable(f"the Redis store at {self._url} did not answer: {exc}")

    def _store_error(self, exc: BaseException) -> StoreUnavailable | StoreError:
        """The error to raise for an error reply: unavailable (retry shortly) or a store error (a bug)."""
        if is_unavailable_reply(str(exc)):
            return StoreUnavailable(f"the Redis store at {self._url} cannot serve now: {exc}")
        return StoreError(f"the Redis store at {self._url} refused a command: {exc}")

    async def send_hints(self, shard: str, args: list[str]) -> None:
        """Apply a batch of hint updates to one shard (``HintWriter`` calls it; not a turn's round trip)."""
        stats = self.stats
        stats.ops["hints"] = stats.ops.get("hints", 0) + 1
        await self._run(shard, "EVALSHA", self._shas["hints"], 1, shard, *args)

    async def send_version(self, version: str) -> None:
        """Add a version to the list the backlog sums (``HintWriter`` calls it at a version's first lease)."""
        await self._run(VERSIONS, "SADD", VERSIONS, version)

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
        k = conversation_keys(key)
        lim = _limit_args(limits)
        entry, kname = _inbox_entry(message)
        keys = [k.meta, k.history, k.state, k.inbox, k.receipts + receipt_name_for_message(message.id)]
        if kname:
            keys.append(k.receipts + kname)
        reply = await self._granting(
            k.member, version, "accept", keys,
            [
                entry, _dumps([message.id, "", "pending", None]), version, owner, policy,
                lim.lease, lim.conversation, lim.idempotency, lim.receipt, lim.inbox_max, new_version or "",
            ],
        )
        tag = reply[0]
        if tag == "L":
            self._hints.grant(k.member, version, reply[7])
            return Acceptance(AcceptKind.LEASED, message.id, work=_work(key, owner, reply, message), owner=owner)
        if tag == "Q":
            return Acceptance(AcceptKind.QUEUED, message.id, owner=reply[1])
        if tag == "D":
            receipt = _receipt(reply[1])
            return Acceptance(AcceptKind.DUPLICATE, receipt.message_id, receipt=receipt)
        if tag == "R":
            return Acceptance(AcceptKind.REJECTED, message.id, owner=reply[1])
        return Acceptance(AcceptKind.WRONG_VERSION, message.id, version=reply[1])

    async def commit(self, lease: Lease, commit: TurnCommit, *, limits: Limits) -> CommitOutcome:
        k = conversation_keys(lease.key)
        lim = _limit_args(limits)
        committed = commit.outcome == "committed"
        utterances = [_dumps(u) for u in commit.utterances] if committed else []
        state = commit.state_json if committed and commit.state_json is not None else ""
        keys = [k.meta, k.history, k.state, k.inbox, k.events, k.receipts + receipt_name_for_message(commit.message_id)]
        if commit.idempotency_key is not None:
            keys.append(k.receipts + receipt_name_for_key(commit.idempotency_key))
        args = [
            lease.owner, str(lease.token), commit.message_id, commit.outcome, state, _dumps(commit.result),
            lim.window, lim.lease, lim.conversation, lim.idempotency, lim.receipt, lim.events_max, lim.events,
            lim.outcome, str(len(utterances)), *utterances, *[_dumps(e) for e in commit.events],
        ]
        version = lease.version
        reply = await self._granting(k.member, version, "commit", keys, args)
        if reply[0] == "K":
            # The commit did not name the message's idempotency key: nothing was written; name it and go again.
            reply = await self._granting(k.member, version, "commit", [*keys[:6], k.receipts + reply[1]], args)
        tag = reply[0]
        if tag == "C":
            self._hints.drop_if_due(k.member, version, reply[2])
            return CommitOutcome(False, None, int(reply[1]))
        if tag == "N":
            self._hints.grant(k.member, version, reply[7])
            work = _work(lease.key, lease.owner, reply)
            return CommitOutcome(False, work, work.turns)
        return CommitOutcome(fenced=True)

    async def renew(self, lease: Lease, *, limits: Limits) -> RenewOutcome:
        k = conversation_keys(lease.key)
        lim = _limit_args(limits)
        kept, interrupt, expiry = await self._eval(
            "renew", [k.meta, k.history, k.state, k.inbox],
            [lease.owner, str(lease.token), lim.lease, lim.conversation],
        )
        if kept:
            # Also repairs a hint lost since the lease was granted: at most one heartbeat late.
            self._hints.add(k.member, lease.version, expiry)
        return RenewOutcome(kept=bool(kept), interrupt=bool(interrupt))

    async def release(self, lease: Lease, *, started: bool = True) -> None:
        k = conversation_keys(lease.key)
        released, pending, expiry = await self._granting(
            k.member, lease.version, "release", [k.meta, k.inbox],
            [lease.owner, str(lease.token), "1" if started else "0"],
        )
        if released and pending:
            self._hints.grant(k.member, lease.version, 0)  # due now (sent at once: a draining instance is leaving)
        elif released:
            self._hints.drop_if_due(k.member, lease.version, expiry)

    async def reclaim(
        self, key: ConversationKey, *, owner: str, limits: Limits, version: str | None = None
    ) -> WorkItem | None:
        k = conversation_keys(key)
        lim = _limit_args(limits)
        keys = [k.meta, k.history, k.state, k.inbox, k.events]
        args = [
            owner, lim.lease, lim.conversation, lim.idempotency, lim.receipt, lim.max_attempts,
            lim.events_max, lim.events, k.receipts, lim.outcome, version or "",
        ]
        # A lost reply marks the conversation due in the caller's version's hints: with ``version`` given, that
        # is the conversation's own (else nothing is granted); without, a due mark anywhere is only a hint.
        hinted = version or ""
        reply = await self._granting(k.member, hinted, "reclaim", keys, args)
        if reply[0] == "K":
            # The head message fails (too many attempts): name its receipts and go again (nothing was written).
            reply = await self._granting(k.member, hinted, "reclaim",
                                         [*keys, *[k.receipts + name for name in reply[1:]]], args)
        tag = reply[0]
        if tag == "V":  # pinned to another version: a stray hint in this version's shards (never taken over)
            if version is not None:
                self._hints.drop_if_due(k.member, version, reply[2])
            return None
        if tag == "-":
            expiry, now = int(reply[1]), reply[2]
            # Without ``version`` the hint's shard is not known here: correct it in every version's seen so far.
            for shard_version in (version,) if version is not None else tuple(self._hints.versions):
                if expiry:
                    self._hints.add_if_present(k.member, shard_version, expiry)
                else:
                    self._hints.drop_if_due(k.member, shard_version, now)
            return None
        if not tag.startswith("T:"):
            return None  # still 'K': another instance is failing the same head; the next sweep sees the result
        work = _work(key, owner, reply)
        self._hints.grant(k.member, work.version, reply[7])
        return dataclasses.replace(work, previous_owner=tag[2:] or None)

    async def _versions(self, version: str | None) -> list[str]:
        """``[version]``, or every version that ever had a lease hint."""
        if version is not None:
            return [version]
        # With the ones this process has seen: its own first lease of a version may still be on its way there.
        return sorted(set(cast(list[str], await self._run(VERSIONS, "SMEMBERS", VERSIONS))) | self._hints.versions)

    async def expired_leases(self, limit: int, *, version: str | None = None) -> list[ConversationKey]:
        if limit <= 0:
            return []
        shards = [shard for v in await self._versions(version) for shard in hint_keys(v)]
        if not shards:
            return []
        # Every shard at once (one write per node). Conversations spread evenly over the shards, so twice the
        # even share from each finds ``limit`` when that many are due; the sweeper asks again when it got a full
        # batch.
        per_shard = str(2 * -(-limit // len(shards)))
        self._hints.flush()
        replies = await asyncio.gather(*[self._eval("expired", [shard], [per_shard]) for shard in shards])
        keys = [conversation_of(member) for reply in replies for member in reply[::2]]
        random.shuffle(keys)  # instances sweeping at once start on different conversations
        return keys[:limit]

    async def receipt(self, key: ConversationKey, *, message_id: str) -> Receipt | None:
        k = conversation_keys(key)
        text = await self._eval("receipt", [k.meta, k.receipts + receipt_name_for_message(message_id)], [])
        return None if text is None else _receipt(text)

    async def load(self, key: ConversationKey) -> ConversationView | None:
        k = conversation_keys(key)
        reply = await self._eval("load", [k.meta, k.history, k.state, k.inbox], [])
        if reply is None:
            return None
        return ConversationView(
            key=key,
            version=reply[0],
            turns=int(reply[1]),
            history=_history(reply[7:]),
            state={} if reply[5] is None else json.loads(reply[5]),
            created_at=int(reply[2]) / 1e6,
            active_at=int(reply[3]) / 1e6,
            pending=int(reply[6]),
            lease_owner=reply[4],
        )

    async def delete(self, key: ConversationKey) -> bool:
        k = conversation_keys(key)
        existed, until, version = await self._eval("delete", [k.meta, k.history, k.state, k.inbox, k.events], [])
        if version:
            self._hints.drop_if_due(k.member, version, until)
        return bool(existed)

    async def append_events(self, batches: Mapping[ConversationKey, list[JSONObject]], *, limits: Limits) -> None:
        lim = _limit_args(limits)
        # One script call per conversation (each log is in its conversation's slot), all sent in one write.
        calls = [
            self._eval("append_events", [conversation_keys(key).events],
                       [lim.events_max, lim.events, *[_dumps(e) for e in events]])
            for key, events in batches.items() if events
        ]
        if len(calls) == 1:
            await calls[0]
        elif calls:
            await asyncio.gather(*calls)

    async def read_events(self, key: ConversationKey, *, after: str | None, limit: int) -> list[Event]:
        if after is not None and not _EVENT_ID.fullmatch(after):
            raise ValueError(f"event id {after!r} is not a Redis stream id such as '1718000000000-0'")
        if limit <= 0:
            return []
        self.stats.round_trips += 1
        stream = conversation_keys(key).events
        entries = await self._run(stream, "XRANGE", stream, "-" if after is None else "(" + after, "+",
                                  "COUNT", limit)
        events = []
        for event_id, fields in cast(list[tuple[str, list[str]]], entries):
            data = json.loads(fields[fields.index("d") + 1])
            events.append(Event(event_id, str(data.pop("type")), data))
        return events

    async def backlog(self, version: str | None = None) -> int:
        """Conversations with messages accepted and not yet committed: the lease hints (see ``_hints``)."""
        self.stats.round_trips += 1
        self._hints.flush()
        shards = [shard for v in await self._versions(version) for shard in hint_keys(v)]
        counts = await asyncio.gather(*[self._run(shard, "ZCARD", shard) for shard in shards])
        return sum(int(n) for n in counts)

    async def pinned_conversations(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        async for metas in self._router.scan(META_PATTERN, type_="hash", count=1000):
            versions = await asyncio.gather(*[self._run(meta, "HGET", meta, "v") for meta in metas])
            for version in versions:
                if version is not None:
                    counts[version] = counts.get(version, 0) + 1
        return counts

    async def routing(self) -> Routing:
        weights, revision = await self._run(ROUTING, "HMGET", ROUTING, "w", "r")
        return Routing(json.loads(weights) if weights else {}, int(revision or 0))

    async def set_routing(
        self, weights: Mapping[str, int], *, expected_revision: int | None, change: JSONObject, log_max: int
    ) -> Routing:
        changed, revision, current = await self._run(
            ROUTING, "EVALSHA", self._shas["routing"], 2, ROUTING, ROUTING_LOG,
            "" if expected_revision is None else str(expected_revision), _dumps(dict(weights)), _dumps(change),
            str(max(1, log_max)),
        )
        if not changed:
            raise RoutingConflict(
                f"the routing weights changed meanwhile (revision {revision}, not {expected_revision}): "
                f"now {current}; read them again and retry"
            )
        return Routing(json.loads(current), int(revision))

    async def routing_log(self, limit: int) -> list[JSONObject]:
        if limit <= 0:
            return []
        entries = await self._run(ROUTING_LOG, "LRANGE", ROUTING_LOG, 0, limit - 1)
        return [json.loads(entry) for entry in entries]

    async def fleet_epoch(self, candidate: str) -> str:
        """The epoch, kept in 16 copies spread over the slot space, so a Cluster shard that comes back empty
        is noticed too. A lost copy is set again (to ``candidate``), so the epoch read changes exactly once:
        from ``"e"`` to ``"c+e"`` — the sorted distinct values joined by ``+``."""
        self.stats.round_trips += 1
        previous = await asyncio.gather(*[self._run(key, "SET", key, candidate, "NX", "GET") for key in EPOCH_KEYS])
        return "+".join(sorted({candidate if value is None else str(value) for value in previous}))

    async def register_instance(self, instance_id: str, info: JSONObject, *, ttl: float) -> None:
        entry = _dumps({**info, "expires": time.time() + ttl})
        await asyncio.gather(
            self._run(INSTANCES, "HSET", INSTANCES, instance_id, entry),
            self._run(INSTANCES, "EXPIRE", INSTANCES, max(1, int(ttl * 10))),
        )

    async def deregister_instance(self, instance_id: str) -> None:
        await self._run(INSTANCES, "HDEL", INSTANCES, instance_id)

    async def instances(self) -> list[JSONObject]:
        flat = cast(list[str], await self._run(INSTANCES, "HGETALL", INSTANCES))
        now = time.time()
        live: list[JSONObject] = []
        dead: list[str] = []
        for instance_id, text in zip(flat[::2], flat[1::2], strict=True):
            info = json.loads(text)
            if info.pop("expires", 0) > now:
                live.append(info)
            else:
                dead.append(instance_id)
        if dead:
            await self._run(INSTANCES, "HDEL", INSTANCES, *dead)
        return live

    async def repair_hints(self, owner: str) -> int:
        """Index every conversation with messages pending that no hint names (lost to a crash between a script
        and its hint, or to a failover): one instance of the fleet per minute scans every primary's inboxes.
        Returns how many inboxes it looked at (0 when another instance holds the audit)."""
        if not await self._run(AUDIT, "SET", AUDIT, owner, "NX", "PX", AUDIT_HOLD_MS):
            return 0
        seen = 0
        async for inboxes in self._router.scan(INBOX_PATTERN, type_="list", count=1000):
            metas = [meta_of_inbox(inbox) for inbox in inboxes]
            versions = await asyncio.gather(*[self._run(meta, "HGET", meta, "v") for meta in metas])
            for inbox, version in zip(inboxes, versions, strict=True):
                if version is not None:  # else deleted or expired since the scan saw it
                    self._hints.add_if_absent(member_of_inbox(inbox), version)
            seen += len(inboxes)
            await asyncio.sleep(0)  # let the hint updates of this batch go out before the next scan step
        return seen

    async def ping(self) -> None:
        await self._run(None, "PING")

    async def close(self) -> None:
        await self._hints.drain(timeout=2.0)
        await self._router.close()
