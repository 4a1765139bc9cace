"""``redis://`` and ``rediss://``: the production store, on Redis 7+ (standalone or Sentinel).

Each change to a conversation is one Lua script (``store/lua/``) over keys that share the conversation's
hash tag (``_redis_keys``), so it is atomic, and an uncontended turn is two round trips: ``accept`` then
``commit``. Lease expiry uses the Redis server's clock, so instance clocks never matter.

Commands are not retried automatically: a write retried after a lost reply could accept a message twice.
A failure surfaces as ``StoreUnavailable`` and the turn protocol above decides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import re
import ssl
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any, NamedTuple, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .._json import dumps_str as _dumps
from ..errors import InvalidStoreUrl, StoreError, StoreUnavailable
from . import redact_url
from ._records import receipt_name_for_key, receipt_name_for_message
from ._redis_keys import BACKLOG_KEYS, EPOCH, HINT_KEYS, HINT_SHARDS, INSTANCES, conversation_keys, conversation_of
from ._resp import ConnectionClosed, PipelinedConnection, ReplyError
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
    StoreStats,
    TurnCommit,
    WorkItem,
)

#: Seconds to wait for a connection, and for a reply, unless the URL sets
#: ``?socket_connect_timeout=`` / ``?socket_timeout=``.
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 5.0

_SCRIPTS = (
    "accept", "commit", "renew", "release", "reclaim", "load", "receipt", "delete", "append_events", "expired",
)
#: Errors that mean "the store cannot serve now", as opposed to a bug.
_DOWN = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    OSError,
)
#: Error replies that mean "the store cannot serve now, try again shortly" (a restart loading its data, a
#: script running too long, a replica without its primary, a read-only replica after a failover, a cluster
#: resharding), as opposed to a bug. Each becomes ``StoreUnavailable`` (503 + Retry-After).
_UNAVAILABLE_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")
#: The error word opens the reply; redis-py's pipeline wraps it as "Command # 1 (...) caused error: ('BUSY ...',)".
_UNAVAILABLE = re.compile(r"(?:^|\(')(?:" + "|".join(_UNAVAILABLE_REPLIES) + r")\b")
_EVENT_ID = re.compile(r"\d+(-\d+)?")


def is_unavailable_reply(message: str) -> bool:
    """True for a Redis error reply that means "not now" rather than "wrong" (see ``_UNAVAILABLE_REPLIES``)."""
    return _UNAVAILABLE.search(message) is not None


@functools.cache
def _script_source(name: str) -> str:
    lua = resources.files("statefleet.store.lua")
    return lua.joinpath("_prelude.lua").read_text("utf-8") + "\n" + lua.joinpath(f"{name}.lua").read_text("utf-8")


def _client_options() -> dict[str, Any]:
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": REPLY_TIMEOUT,
        # No blind retries: a write retried after a lost reply could run twice.
        "retry": Retry(NoBackoff(), 0),
    }
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # redis-py before 7 has no maintenance notifications
        pass
    else:
        # Their "auto" default makes the pool skip its check for connections the server closed while idle,
        # so the next command would fail instead of reconnecting first. They need RESP3; we speak RESP2.
        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return options


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
    """Decode ``{tag, token, attempt, turns, version, state, head body, history...}``."""
    return WorkItem(
        lease=Lease(key, owner, int(reply[1])),
        message=_message(reply[6]) if reply[6] is not None else cast(InboundMessage, message),
        version=reply[4],
        turns=int(reply[3]),
        history=_history(reply[7:]),
        state={} if reply[5] is None else json.loads(reply[5]),
        attempt=int(reply[2]),
    )


def _ssl_context(client: Redis) -> ssl.SSLContext | None:
    """The TLS context for ``rediss://`` URLs (certificate checks as redis-py would do them), else None."""
    pool = client.connection_pool
    if not issubclass(pool.connection_class, SSLConnection):
        return None
    kwargs = pool.connection_kwargs
    context = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
    if kwargs.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if kwargs.get("ssl_certfile"):
        context.load_cert_chain(kwargs["ssl_certfile"], kwargs.get("ssl_keyfile"))
    return context


class RedisStore:
    """The ``Store`` on Redis. Open it with ``await RedisStore.open("redis://:password@host:6379/0")``."""

    def __init__(self, client: Redis, url: str) -> None:
        self._client = client
        self._url = redact_url(url)
        self._scripts = {name: client.register_script(_script_source(name)) for name in _SCRIPTS}
        self._shas = {name: script.sha for name, script in self._scripts.items()}
        #: Script calls (the hot path) go over one implicitly pipelined connection; see ``_resp``.
        self._pipe: PipelinedConnection | None = None
        self._pipe_lock = asyncio.Lock()
        self._next_shard = 0
        #: Round trips and script calls made, for metrics.
        self.stats = StoreStats()

    @classmethod
    async def open(cls, url: str) -> RedisStore:
        """Connect to the Redis at ``url``, check that it answers, and load the scripts."""
        safe = redact_url(url)
        try:
            client = Redis.from_url(url, **_client_options())
        except ValueError as exc:
            raise InvalidStoreUrl(f"store URL {safe!r} is not a valid Redis URL: {exc}") from exc
        store = cls(client, url)
        try:
            await client.ping()
            async with client.pipeline(transaction=False) as pipe:
                for script in store._scripts.values():
                    pipe.script_load(script.script)
                await pipe.execute()
        except (*_DOWN, redis_errors.RedisError) as exc:
            await client.aclose()
            raise StoreUnavailable(
                f"cannot reach the Redis store at {safe}: {exc}; check the URL, the password and that "
                "Redis 7+ is running"
            ) from exc
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._url!r})"

    async def _eval(self, name: str, keys: list[str], args: list[str]) -> Any:
        stats = self.stats
        stats.round_trips += 1
        stats.ops[name] = stats.ops.get(name, 0) + 1
        pipe = self._pipe
        if pipe is None or pipe.closed:
            pipe = await self._connect_pipe()
        try:
            return await pipe.execute("EVALSHA", self._shas[name], len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise self._store_error(exc) from exc
        except ConnectionClosed as exc:
            # Not retried: the script may have run before the connection dropped.
            raise self._unavailable(exc) from exc
        # The server lost its scripts (restart, SCRIPT FLUSH): load them again, then run this one.
        await self._load_scripts()
        return await self._eval(name, keys, args)

    async def _connect_pipe(self) -> PipelinedConnection:
        async with self._pipe_lock:
            if self._pipe is not None and not self._pipe.closed:
                return self._pipe
            kwargs = self._client.connection_pool.connection_kwargs
            try:
                pipe = await PipelinedConnection.connect(
                    host=kwargs.get("host"), port=int(kwargs.get("port", 6379)), path=kwargs.get("path"),
                    ssl_context=_ssl_context(self._client),
                    connect_timeout=float(kwargs.get("socket_connect_timeout") or CONNECT_TIMEOUT),
                    reply_timeout=float(kwargs.get("socket_timeout") or REPLY_TIMEOUT),
                )
                if kwargs.get("password"):
                    auth = [kwargs["username"], kwargs["password"]] if kwargs.get("username") else [kwargs["password"]]
                    await pipe.execute("AUTH", *auth)
                if int(kwargs.get("db", 0) or 0):
                    await pipe.execute("SELECT", int(kwargs["db"]))
            except (OSError, TimeoutError, ConnectionClosed, ReplyError) as exc:
                raise self._unavailable(exc) from exc
            self._pipe = pipe
            return pipe

    async def _load_scripts(self) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for script in self._scripts.values():
                    pipe.script_load(script.script)
                await pipe.execute()
        except redis_errors.RedisError as exc:
            raise self._store_error(exc) from exc

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"the Redis store at {self._url} did not answer: {exc}")

    def _store_error(self, exc: BaseException) -> StoreUnavailable | StoreError:
        """The error to raise for a failed Redis call: unavailable (retry shortly) or a store error (a bug)."""
        if isinstance(exc, _DOWN) or is_unavailable_reply(str(exc)):
            return StoreUnavailable(f"the Redis store at {self._url} cannot serve now: {exc}")
        return StoreError(f"the Redis store at {self._url} refused a command: {exc}")

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
    ) -> Acceptance:
        k = conversation_keys(key)
        lim = _limit_args(limits)
        entry, kname = _inbox_entry(message)
        reply = await self._eval(
            "accept",
            [k.meta, k.history, k.state, k.inbox, k.hints, k.backlog],
            [
                message.id, entry, kname, _dumps([message.id, "", "pending", None]), version, owner, policy,
                lim.lease, lim.conversation, lim.idempotency, lim.receipt, lim.inbox_max, k.receipts, k.member,
            ],
        )
        tag = reply[0]
        if tag == "L":
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
        reply = await self._eval(
            "commit",
            [k.meta, k.history, k.state, k.inbox, k.events, k.hints, k.backlog],
            [
                lease.owner, str(lease.token), commit.message_id, commit.outcome, state, _dumps(commit.result),
                lim.window, lim.lease, lim.conversation, lim.idempotency, lim.receipt, lim.events_max,
                k.receipts, lim.events, k.member, lim.outcome, str(len(utterances)),
                *utterances, *[_dumps(e) for e in commit.events],
            ],
        )
        tag = reply[0]
        if tag == "C":
            return CommitOutcome(False, None, int(reply[1]))
        if tag == "N":
            work = _work(lease.key, lease.owner, reply)
            return CommitOutcome(False, work, work.turns)
        return CommitOutcome(fenced=True)

    async def renew(self, lease: Lease, *, limits: Limits) -> RenewOutcome:
        k = conversation_keys(lease.key)
        lim = _limit_args(limits)
        kept, interrupt = await self._eval(
            "renew",
            [k.meta, k.history, k.state, k.inbox, k.hints],
            [lease.owner, str(lease.token), lim.lease, lim.conversation, k.member],
        )
        return RenewOutcome(kept=bool(kept), interrupt=bool(interrupt))

    async def release(self, lease: Lease, *, started: bool = True) -> None:
        k = conversation_keys(lease.key)
        await self._eval("release", [k.meta, k.inbox, k.hints],
                         [lease.owner, str(lease.token), k.member, "1" if started else "0"])

    async def reclaim(self, key: ConversationKey, *, owner: str, limits: Limits) -> WorkItem | None:
        k = conversation_keys(key)
        lim = _limit_args(limits)
        reply = await self._eval(
            "reclaim",
            [k.meta, k.history, k.state, k.inbox, k.events, k.hints, k.backlog],
            [
                owner, lim.lease, lim.conversation, lim.idempotency, lim.receipt, lim.max_attempts,
                lim.events_max, lim.events, k.receipts, k.member, lim.outcome,
            ],
        )
        if not reply[0].startswith("T:"):
            return None
        return dataclasses.replace(_work(key, owner, reply), previous_owner=reply[0][2:] or None)

    async def expired_leases(self, limit: int) -> list[ConversationKey]:
        if limit <= 0:
            return []
        # Start at a different shard each time so that a shard full of stubborn hints starves no other.
        start = self._next_shard
        self._next_shard = (start + 1) % HINT_SHARDS
        members = await self._eval("expired", [*HINT_KEYS[start:], *HINT_KEYS[:start]], [str(limit)])
        return [conversation_of(member) for member in members]

    async def receipt(self, key: ConversationKey, *, message_id: str) -> Receipt | None:
        k = conversation_keys(key)
        text = await self._eval("receipt", [k.meta], [k.receipts, receipt_name_for_message(message_id)])
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
        existed = await self._eval(
            "delete", [k.meta, k.history, k.state, k.inbox, k.events, k.hints, k.backlog], [k.member]
        )
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
        try:
            entries = await self._client.xrange(
                conversation_keys(key).events, min="-" if after is None else "(" + after, count=limit
            )
        except redis_errors.RedisError as exc:
            raise self._store_error(exc) from exc
        events = []
        for event_id, fields in cast(list[tuple[str, dict[str, str]]], entries):
            data = json.loads(fields["d"])
            events.append(Event(event_id, str(data.pop("type")), data))
        return events

    async def backlog(self) -> int:
        self.stats.round_trips += 1
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for shard in BACKLOG_KEYS:
                    pipe.hvals(shard)
                shards = await pipe.execute()
        except redis_errors.RedisError as exc:
            raise self._store_error(exc) from exc
        return sum(int(n) for counts in shards for n in counts)

    async def fleet_epoch(self, candidate: str) -> str:
        self.stats.round_trips += 1
        try:
            previous = await self._client.set(EPOCH, candidate, nx=True, get=True)
        except redis_errors.RedisError as exc:
            raise self._store_error(exc) from exc
        return candidate if previous is None else str(previous)

    async def register_instance(self, instance_id: str, info: JSONObject, *, ttl: float) -> None:
        entry = _dumps({**info, "expires": time.time() + ttl})
        try:
            await self._client.hset(INSTANCES, instance_id, entry)
            await self._client.expire(INSTANCES, max(1, int(ttl * 10)))
        except redis_errors.RedisError as exc:
            raise self._store_error(exc) from exc

    async def deregister_instance(self, instance_id: str) -> None:
        try:
            await self._client.hdel(INSTANCES, instance_id)
        except redis_errors.RedisError as exc:
            raise self._store_error(exc) from exc

    async def instances(self) -> list[JSONObject]:
        try:
            entries = await self._client.hgetall(INSTANCES)
        except redis_errors.RedisError as exc:
            raise self._store_error(exc) from exc
        now = time.time()
        live: list[JSONObject] = []
        dead: list[str] = []
        for instance_id, text in cast(dict[str, str], entries).items():
            info = json.loads(text)
            if info.pop("expires", 0) > now:
                live.append(info)
            else:
                dead.append(instance_id)
        if dead:
            await self._client.hdel(INSTANCES, *dead)
        return live

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (*_DOWN, redis_errors.RedisError) as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        await self._client.aclose()
