"""Running turns: accept, lease, handler, commit, double texting and drain.

One ``Engine`` is one instance of the fleet. Every engine is equal: any of them accepts any message, the one
that holds a conversation's lease runs its turns one at a time, and every engine's sweeper takes over the
conversations whose owner died (the background loops are its :class:`~statefleet.engine.upkeep.Upkeep`). See
docs/guarantees.md for what this promises and how it is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any

from .. import errors
from .._validation import DEFAULT_TENANT, check_conversation_id, check_message, check_tenant
from ..agent import Agent, DoubleTexting, Turn
from ..observability.context import TurnScope, current_turn
from ..observability.hooks import EngineObserver, MessageSpan
from ..routing import set_weights
from ..store.base import (
    Acceptance,
    AcceptKind,
    CommitOutcome,
    ConversationKey,
    InboundMessage,
    JSONObject,
    Limits,
    Receipt,
    Routing,
    Store,
    TurnCommit,
    WorkItem,
)
from .commits import cancelled, committed, failed
from .epoch import EpochWatch
from .fleet_view import FleetView
from .publisher import EventCallback, EventLogWriter, EventPublisher
from .resolution import resolve_commit
from .results import Conversation, TurnResult, to_turn_result
from .settings import EngineSettings, EngineStats
from .turn_counters import TurnCounters
from .upkeep import Running, Upkeep
from .waiting import await_own, await_receipt, follow_receipt

__all__ = ["Engine"]

log = logging.getLogger("statefleet.turns")  # the engine's logger (named when it was turns.py): operators filter on it


@dataclass(slots=True)
class _Accepted:
    """A message the store accepted (or recognised as a retry), whose result its caller is still to get."""

    key: ConversationKey
    message: InboundMessage
    acceptance: Acceptance
    waiter: asyncio.Future[JSONObject]
    policy: DoubleTexting
    timeout: float | None
    span: MessageSpan | None
    #: A queued message whose turn this engine runs: its waiter is settled here, the store is polled rarely.
    local: bool

    @property
    def message_id(self) -> str:
        """The id the caller knows the message by: for a retry, the original message's."""
        return self.acceptance.message_id


def _observe(task: asyncio.Task[Any]) -> None:
    """Mark a background task's failure as seen; whoever awaits the task still gets it."""
    if not task.cancelled():
        task.exception()


def _new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Engine:
    """One instance of the fleet: runs ``agent`` on conversations kept in ``store``.

    >>> async with Engine(agent, store) as engine:
    ...     result = await engine.send("alice123", "What's my order status?", idempotency_key="k-1")
    ...     conversation = await engine.get("alice123")
    """

    def __init__(
        self,
        agent: Agent,
        store: Store,
        settings: EngineSettings | None = None,
        *,
        observer: EngineObserver | None = None,
    ) -> None:
        self.agent = agent
        self.store = store
        #: Metrics and tracing hooks (see ``statefleet.observability``); None costs nothing.
        self.observer = observer
        self.settings = settings or EngineSettings()
        self.instance_id = self.settings.instance_id or _new_instance_id()
        self.limits = Limits(
            window=agent.history_window,
            lease_ttl=self.settings.lease_ttl,
            conversation_ttl=self.settings.conversation_ttl,
            idempotency_ttl=self.settings.idempotency_ttl,
            receipt_ttl=self.settings.receipt_ttl,
            outcome_ttl=self.settings.outcome_ttl,
            events_max=self.settings.events_max,
            events_ttl=self.settings.events_ttl,
            inbox_max=self.settings.inbox_max,
            max_attempts=self.settings.max_attempts,
        )
        self.stats = EngineStats()
        #: Finished turns, their latency and time to first token, in the registry entry (canary analysis).
        self.turn_counters = TurnCounters()
        self._running: dict[ConversationKey, Running] = {}
        self._waiters: dict[str, asyncio.Future[JSONObject]] = {}
        self._listeners: dict[str, EventCallback] = {}
        self._background: set[asyncio.Task[Any]] = set()
        #: Local followers of conversations' event logs, woken when this engine appends to one.
        self._event_watchers: dict[ConversationKey, set[asyncio.Event]] = {}
        #: Streamed tokens on their way to the store's event logs (None: not published, see the settings).
        self._event_writer = None
        if self.settings.publish_tokens:
            self._event_writer = EventLogWriter(lambda: self.store, self.limits, self._events_appended)
        #: Heartbeat, sweeper and registry while the engine runs (made at start: the server swaps in a metered
        #: and traced store and an observer after creating the engine).
        self._upkeep: Upkeep | None = None
        #: The store's epoch as this engine knows it; a change means the store lost its data (see ``epoch``).
        self.epoch = EpochWatch(self.settings.store_reset_hold)
        #: The routing weights and the live instances by version, as last read (see ``fleet_view``).
        self.fleet = FleetView()
        self._in_flight = 0
        #: Message ids are this engine's random prefix and a counter: unique fleet-wide, cheap to make.
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count(1)
        self._accepting = False
        self._started = False
        #: host:port other instances reach this one at (set by the server); None for in-process engines.
        self.address: str | None = None
        self.started_at = 0.0

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sweeper and the heartbeat; until then the engine accepts nothing."""
        if self._started:
            return
        self._started = True
        self._accepting = True
        self.started_at = time.time()
        self._upkeep = Upkeep(
            self.store, self.settings, self.limits, self.stats, self._running,
            instance_id=self.instance_id, observer=self.observer, start_drive=self._start_drive,
            accepting=lambda: self._accepting, registry_entry=self.info, epoch=self.epoch,
            version=self.agent.version, fleet_view=self.fleet.update,
        )
        await self._upkeep.start()

    async def stop(self, drain_timeout: float = 25.0) -> None:
        """Stop accepting, let running turns finish within ``drain_timeout``, hand the rest back, stop.

        Messages still waiting in this engine's inboxes are handed back to the fleet (any instance's sweeper
        picks them up); nothing accepted is lost. The heartbeat keeps the running turns' leases until the last
        one ends, so no other instance takes a conversation over while its turn still runs here.
        """
        if not self._started:
            return
        upkeep = self._upkeep
        assert upkeep is not None
        self._accepting = False
        await upkeep.stop_taking_over()
        drives = [r.task for r in self._running.values() if r.task is not None]
        if drives:
            _done, pending = await asyncio.wait(drives, timeout=drain_timeout)
            for running in list(self._running.values()):
                if running.task in pending:
                    running.cancel_reason = "drain"
                    running.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await upkeep.stop()
        self._upkeep = None
        if self._event_writer is not None:
            await self._event_writer.close()
        try:
            await self.store.deregister_instance(self.instance_id)
        except Exception:
            log.warning("could not remove instance %r from the fleet registry", self.instance_id, exc_info=True)
        self._started = False

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def draining(self) -> bool:
        return self._started and not self._accepting

    @property
    def in_flight(self) -> int:
        """Turns running on this engine now (the autoscaling signal)."""
        return len(self._running)

    @property
    def waiting_callers(self) -> int:
        """Calls to ``send`` (requests) waiting for their reply on this engine now."""
        return self._in_flight

    @property
    def idle(self) -> bool:
        """No turn running here and no caller waiting: safe to stop without handing anything back."""
        return not self._running and not self._in_flight

    def info(self) -> JSONObject:
        """This instance as the fleet registry shows it."""
        return {
            "id": self.instance_id,
            "agent": self.agent.name,
            "version": self.agent.version,
            "address": self.address,
            "in_flight": self.in_flight,
            "waiting": self._in_flight,
            "draining": self.draining,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "stats": {"committed": self.stats.committed, "failed": self.stats.failed,
                      "takeovers": self.stats.takeovers, "fenced": self.stats.fenced},
            "counters": self.turn_counters.snapshot(),
        }

    async def reclaim_expired_leases(self, limit: int = 1000) -> int:
        """Take over conversations whose owner stopped renewing, and run their pending messages.

        The sweeper does this every ``sweep_interval``; a stopped engine takes nothing over and returns 0.
        """
        if self._upkeep is None:
            return 0
        return await self._upkeep.reclaim_expired_leases(limit)

    # -- public API ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch_events(self, key: ConversationKey) -> Iterator[asyncio.Event]:
        """An ``asyncio.Event`` set whenever this engine appends to ``key``'s event log (tokens, replies).

        Appends by other instances do not set it: a follower still reads the store now and then.
        """
        signal = asyncio.Event()
        self._event_watchers.setdefault(key, set()).add(signal)
        try:
            yield signal
        finally:
            watchers = self._event_watchers.get(key)
            if watchers is not None:
                watchers.discard(signal)
                if not watchers:
                    del self._event_watchers[key]

    def events_appended(self, key: ConversationKey) -> None:
        """Wake this engine's local followers of ``key``'s event log."""
        for signal in self._event_watchers.get(key, ()):
            signal.set()

    def _events_appended(self, keys: Iterable[ConversationKey]) -> None:
        if self._event_watchers:  # usually nobody follows a log: skip the per-key lookups
            for key in keys:
                self.events_appended(key)

    def _next_message_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):08x}"

    def conversation_key(self, conversation_id: str, tenant: str = DEFAULT_TENANT) -> ConversationKey:
        return ConversationKey(check_tenant(tenant), check_conversation_id(conversation_id))

    async def send(
        self,
        conversation_id: str,
        text: str,
        *,
        tenant: str = DEFAULT_TENANT,
        metadata: JSONObject | None = None,
        idempotency_key: str | None = None,
        double_texting: DoubleTexting | None = None,
        timeout: float | None = 300.0,
        on_event: EventCallback | None = None,
        new_version: str | None = None,
    ) -> TurnResult:
        """Send one message and wait for its reply.

        ``on_event`` is called with each token the handler emits (when the turn runs on this instance).
        A new conversation is pinned to the version the routing weights pick (``new_version`` overrides it: the
        server passes the version a forwarding instance chose), or to this engine's when no weights are set.
        Raises a ``StatefleetClientError`` for bad input (nothing accepted), ``ConversationBusy`` under
        policy ``reject``, ``WrongVersion`` when the conversation belongs to another version (nothing accepted;
        the server forwards it), ``TurnInterrupted`` when a newer message cancelled this one, ``TurnFailed`` when
        the handler raised, ``TurnTimeout`` when ``timeout`` passed (the message is still processed).
        """
        accepted = await self._accept(conversation_id, text, tenant, metadata, idempotency_key, double_texting,
                                      timeout, on_event, new_version)
        return await self._outcome(accepted)

    async def submit(
        self,
        conversation_id: str,
        text: str,
        *,
        tenant: str = DEFAULT_TENANT,
        metadata: JSONObject | None = None,
        idempotency_key: str | None = None,
        double_texting: DoubleTexting | None = None,
        timeout: float | None = 300.0,
        on_event: EventCallback | None = None,
        new_version: str | None = None,
    ) -> tuple[str, asyncio.Task[TurnResult]]:
        """Send one message without waiting for its reply: return once the store has accepted it.

        Returns the message id (for a retried Idempotency-Key: the original message's) and a task that resolves
        to the ``TurnResult`` (the engine holds a reference to it until it is done). Takes the arguments of
        ``send``, and raises as ``send`` does when the message is not accepted (bad input, busy, overloaded).
        The store's accept runs in the caller's task, so the turn starts without waiting for another task.

        >>> message_id, reply = await engine.submit("alice123", "hello")
        >>> result = await reply
        """
        accepted = await self._accept(conversation_id, text, tenant, metadata, idempotency_key, double_texting,
                                      timeout, on_event, new_version)
        task = asyncio.create_task(self._outcome(accepted))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_observe)
        return accepted.message_id, task

    async def stream(
        self,
        conversation_id: str,
        text: str,
        **kwargs: Any,
    ) -> AsyncIterator[JSONObject]:
        """Send one message and yield its events as they happen: ``token`` events, then one ``reply``.

        Errors are raised from the iterator, after any tokens already streamed.
        """
        queue: asyncio.Queue[JSONObject | None] = asyncio.Queue()
        task = asyncio.create_task(self.send(conversation_id, text, on_event=queue.put_nowait, **kwargs))
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        try:
            while (event := await queue.get()) is not None:
                yield event
            result = task.result()
            yield {"type": "reply", **result.to_json()}
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def set_weights(self, weights: Mapping[str, object], *, actor: str, reason: str = "",
                          expected_revision: int | None = None) -> Routing:
        """Change the fleet's routing weights (audited), and apply them here at once (the rest of the fleet within
        ``fleet_view_interval``). Raises ``InvalidWeights`` or ``RoutingConflict``; see ``routing.set_weights``.

        >>> await engine.set_weights({"v1": 90, "v2": 10}, actor="alice", reason="canary of v2")
        """
        try:
            routing = await set_weights(self.store, weights, actor=actor, reason=reason,
                                        expected_revision=expected_revision)
        except errors.ConfigError as exc:
            raise errors.InvalidWeights(str(exc)) from None
        self.fleet.update(routing, await self.store.instances())
        return routing

    async def get(self, conversation_id: str, tenant: str = DEFAULT_TENANT) -> Conversation | None:
        """A snapshot of the conversation (version, turns, history window, state), or None."""
        view = await self.store.load(self.conversation_key(conversation_id, tenant))
        return None if view is None else Conversation.from_view(view)

    async def delete(self, conversation_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        """Remove everything of the conversation; True if it existed."""
        return await self.store.delete(self.conversation_key(conversation_id, tenant))

    # -- accepting a message ---------------------------------------------------------------------------------

    async def _accept(
        self,
        conversation_id: str,
        text: str,
        tenant: str,
        metadata: JSONObject | None,
        idempotency_key: str | None,
        double_texting: DoubleTexting | None,
        timeout: float | None,
        on_event: EventCallback | None,
        new_version: str | None = None,
    ) -> _Accepted:
        """Validate ``text`` and have the store accept it; start its turn when this engine got the lease.

        Raises when the message is not accepted. Otherwise the caller owns the returned record and must pass it
        to :meth:`_outcome`, which waits for the result and releases what was registered here. (If the caller
        is cancelled while the store accepts, the message may still have been accepted: its lease then expires
        and the sweeper runs it, as after a crash.)
        """
        key = self.conversation_key(conversation_id, tenant)
        policy = double_texting or self.agent.double_texting
        if policy not in ("enqueue", "reject", "interrupt"):
            raise errors.InvalidMessage(f"double_texting {policy!r} must be enqueue, reject or interrupt")
        text, metadata, idempotency_key, fingerprint = check_message(
            text, metadata, idempotency_key, max_bytes=self.agent.max_message_bytes
        )
        if not self._accepting:
            raise errors.Overloaded(
                "this instance is draining" if self._started else "engine not started; use `async with Engine(...)`"
            )
        if self._in_flight >= self.settings.max_in_flight:
            raise errors.Overloaded(f"this instance is at its limit of {self.settings.max_in_flight} turns in flight")
        message_id = self._next_message_id()
        observer = self.observer
        span: MessageSpan | None = None if observer is None else observer.message_received(key, message_id)
        message = InboundMessage(message_id, text, metadata, idempotency_key, time.time(), fingerprint,
                                 None if span is None else span.traceparent)
        self._in_flight += 1
        waiter: asyncio.Future[JSONObject] = asyncio.get_running_loop().create_future()
        self._waiters[message.id] = waiter
        if on_event is not None:
            self._listeners[message.id] = on_event
        try:
            started = perf_counter()
            acceptance = await self.store.accept(
                key, message, version=self.agent.version, owner=self.instance_id, policy=policy,
                limits=self.limits, new_version=new_version or self.fleet.new_version(key),
            )
            kind = acceptance.kind
            if observer is not None:
                observer.message_accepted(kind.value, perf_counter() - started)
            local = False
            if kind is AcceptKind.LEASED:
                assert acceptance.work is not None
                self._start_drive(acceptance.work)
            elif kind is AcceptKind.QUEUED:
                if policy == "interrupt":
                    self._interrupt_local(key)
                local = acceptance.owner == self.instance_id and key in self._running
            elif kind is AcceptKind.REJECTED:
                self.stats.rejected += 1
                if policy == "reject":
                    raise errors.ConversationBusy(
                        f"conversation {conversation_id!r} is running a turn; double texting policy is reject"
                    )
                raise errors.Overloaded(
                    f"conversation {conversation_id!r} has {self.limits.inbox_max} messages waiting"
                )
            elif kind is not AcceptKind.DUPLICATE:
                raise errors.WrongVersion(
                    f"conversation {conversation_id!r} belongs to version {acceptance.version!r}; "
                    f"this instance serves {self.agent.version!r}", version=acceptance.version or "",
                )
        except BaseException as exc:
            self._forget(message.id, span, exc)
            raise
        return _Accepted(key, message, acceptance, waiter, policy, timeout, span, local)

    async def _outcome(self, accepted: _Accepted) -> TurnResult:
        """The result of a message :meth:`_accept` took: its own turn's, or the original's for a duplicate."""
        key, message, acceptance = accepted.key, accepted.message, accepted.acceptance
        try:
            if acceptance.kind is AcceptKind.LEASED:
                result = await await_own(message.id, accepted.waiter, accepted.timeout)
            elif acceptance.kind is AcceptKind.QUEUED:
                result = await await_receipt(self.store, key, message.id, accepted.waiter, accepted.timeout,
                                             poll_store=not accepted.local)
            else:
                return await self._duplicate(key, message, acceptance.receipt, accepted.timeout, accepted.policy)
            return to_turn_result(key, message.id, result, duplicate=False)
        finally:
            self._forget(message.id, accepted.span, sys.exc_info()[1])

    def _forget(self, message_id: str, span: MessageSpan | None, error: BaseException | None) -> None:
        """The message's caller is done with it: unregister its waiter and listener, end its span."""
        self._in_flight -= 1
        self._waiters.pop(message_id, None)
        self._listeners.pop(message_id, None)
        if span is not None:
            span.end(error)

    # -- waiting for results -------------------------------------------------------------------------------

    async def _duplicate(
        self,
        key: ConversationKey,
        message: InboundMessage,
        receipt: Receipt | None,
        timeout: float | None,
        policy: DoubleTexting,
    ) -> TurnResult:
        """A retry of an idempotency key: the original's result, once it exists; never a second turn."""
        assert receipt is not None and message.idempotency_key is not None
        if receipt.fingerprint and receipt.fingerprint != message.fingerprint:
            raise errors.IdempotencyKeyReused(
                f"Idempotency-Key {message.idempotency_key!r} was used for a different message"
            )
        original = receipt.message_id
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        while receipt is None or receipt.status == "pending":
            local = self._waiters.get(original)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.TurnTimeout(f"no reply to message {original!r} within {timeout} s")
            if local is not None:
                step = 0.5 if remaining is None else min(0.5, remaining)
                done, _ = await asyncio.wait([local], timeout=step)
                if done and not local.cancelled() and local.exception() is None:
                    return to_turn_result(key, original, local.result(), duplicate=True)
                if done:  # the original caller went away or lost the lease: read the receipt instead
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(delay if remaining is None else min(delay, remaining))
                delay = min(delay * 1.5, 0.05)
            # Asking to accept the same key again reads its receipt and changes nothing.
            again = await self.store.accept(
                key, message, version=self.agent.version, owner=self.instance_id, policy=policy,
                limits=self.limits,
            )
            if again.kind is not AcceptKind.DUPLICATE:  # the record expired meanwhile: it was a new message
                assert again.kind is AcceptKind.LEASED or again.kind is AcceptKind.QUEUED
                if again.work is not None:
                    self._start_drive(again.work)
                receipt = None
                original = again.message_id
                waiter = asyncio.get_running_loop().create_future()
                self._waiters[original] = waiter
                try:
                    result = await await_receipt(self.store, key, original, waiter, timeout, poll_store=True)
                    return to_turn_result(key, original, result, False)
                finally:
                    self._waiters.pop(original, None)
            receipt = again.receipt
        assert receipt.result is not None
        return to_turn_result(key, original, receipt.result, duplicate=True)

    # -- running turns -------------------------------------------------------------------------------------

    def _start_drive(self, work: WorkItem) -> None:
        key = work.lease.key
        running = Running(work.lease, renewed_at=time.monotonic())
        self._running[key] = running
        running.task = asyncio.create_task(self._drive(running, work))
        self._background.add(running.task)
        running.task.add_done_callback(self._background.discard)

    async def _drive(self, running: Running, first: WorkItem) -> None:
        """Run turns under one lease until the inbox is empty, the lease is lost, or the engine drains."""
        key = first.lease.key
        work: WorkItem | None = first
        try:
            while work is not None:
                commit = await self._run_turn(running, work)
                if commit is None:  # lease lost or draining: nothing to write
                    return
                committing = perf_counter()
                try:
                    outcome = await self._commit(work, commit)
                except asyncio.CancelledError:
                    # Only stop() cancels a drive. The commit may or may not have landed: the caller's retry
                    # with its Idempotency-Key finds out, never running the turn twice.
                    self._fail_waiter(work.message.id, errors.OutcomeUnknown(
                        f"instance stopped while committing a turn of conversation {key.id!r}; retry with the "
                        "same Idempotency-Key to get its result"))
                    if running.cancel_reason != "drain":
                        raise
                    return
                if outcome is None:  # the commit's fate was settled otherwise (see _commit)
                    return
                if outcome.fenced:
                    self.stats.fenced += 1
                    if self.observer is not None:
                        self.observer.turn_abandoned(key, "fenced")
                    log.warning(
                        "fenced: commit of message %r in conversation %r refused; lease token %d is stale",
                        work.message.id, str(key), work.lease.token,
                    )
                    self._follow(key, work.message.id)  # the new owner commits it; its caller gets that
                    return
                self._count(commit.outcome)
                self.turn_counters.record_turn(commit.outcome != "failed", time.time() - work.message.accepted_at)
                if self._event_watchers:
                    self.events_appended(key)  # the commit appended the reply (or error) event
                if self.observer is not None:
                    self.observer.turn_finished(
                        key, outcome="interrupted" if commit.outcome == "cancelled" else commit.outcome,
                        attempt=work.attempt, handler_seconds=time.monotonic() - running.started,
                        total_seconds=max(0.0, time.time() - work.message.accepted_at),
                        commit_seconds=perf_counter() - committing,
                    )
                self._resolve(work.message.id, commit.result)
                work = outcome.next
                if work is not None and not self._accepting:
                    # Draining: hand the queued messages back to the fleet instead of running them here.
                    await self.store.release(work.lease, started=False)
                    self.stats.handed_back += 1
                    return
        except Exception as exc:
            # The message stays in the inbox under a lease nobody renews: another instance takes it over.
            log.exception("turn loop of conversation %r crashed; its lease will be taken over", str(key))
            self._fail_waiter(running.message_id, errors.OutcomeUnknown(
                f"internal error running the turn ({exc!r}); the message stays accepted and is committed once — "
                "retry with the same Idempotency-Key to get its result"))
        finally:
            if self._running.get(key) is running:
                del self._running[key]

    async def _commit(self, work: WorkItem, commit: TurnCommit) -> CommitOutcome | None:
        """Commit a finished turn; when the store fails meanwhile, find out what happened before answering.

        Returns the commit's outcome, or None when its fate was settled otherwise: the message had committed
        already (its caller gets the stored result), waits for another owner (its caller follows the receipt),
        or stayed unknown for ``resolve_timeout`` (its caller gets ``OutcomeUnknown``). See ``resolution``.
        """
        if work.message.idempotency_key is not None:
            commit = replace(commit, idempotency_key=work.message.idempotency_key)
        try:
            return await self.store.commit(work.lease, commit, limits=self.limits)
        except errors.StoreUnavailable as exc:
            key, message_id = work.lease.key, work.message.id
            log.warning("the store failed while message %r of conversation %r committed (%s); finding out whether "
                        "it landed", message_id, str(key), exc)
            resolution = await resolve_commit(self.store, work.lease, commit, self.limits,
                                              self.settings.resolve_timeout)
        if resolution is None:
            self._fail_waiter(message_id, errors.OutcomeUnknown(
                f"the store did not answer while message {message_id!r} of conversation {key.id!r} committed, "
                f"nor for {self.settings.resolve_timeout} s after; it commits exactly once or not at all — retry "
                "with the same Idempotency-Key to get its result"))
            return None
        if resolution.applied is not None:
            return resolution.applied
        if resolution.result is not None:
            self._count(commit.outcome)
            self._resolve(message_id, resolution.result)
        else:
            self._follow(key, message_id)
        # A landed commit may have handed this lease on to the next message: give it back for the sweeper.
        with contextlib.suppress(errors.StatefleetError):
            await self.store.release(work.lease, started=False)
        return None

    def _follow(self, key: ConversationKey, message_id: str) -> None:
        """The message moved to another owner: settle its local caller's waiter from the store's receipt."""
        waiter = self._waiters.get(message_id)
        if waiter is None or waiter.done():
            return
        task = asyncio.create_task(follow_receipt(
            self.store, key, message_id, waiter, lambda: self._waiters.get(message_id) is waiter))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_observe)

    async def _run_turn(self, running: Running, work: WorkItem) -> TurnCommit | None:
        key = work.lease.key
        message = work.message
        running.message_id = message.id
        running.renewed_at = running.started = time.monotonic()
        running.cancel_reason = None
        observer = self.observer
        if observer is not None:
            observer.turn_started(key, message.id, work.attempt, message.trace)
        publisher = EventPublisher(
            self._event_writer, key, self._listeners.get(message.id), observer, message.accepted_at,
            self.turn_counters,
        )
        turn = Turn(
            conversation_id=key.id,
            tenant=key.tenant,
            message_id=message.id,
            text=message.text,
            metadata=message.metadata,
            history=work.history,
            state=work.state,
            version=work.version,
            turn=work.turns + 1,
            attempt=work.attempt,
            idempotency_key=message.idempotency_key or f"{key.tenant}/{key.id}/{message.id}",
            emit_hook=publisher.publish,
        )
        current_turn.set(TurnScope(turn, self.instance_id, observer))
        running.in_handler = True
        try:
            try:
                await self.agent.run_handler(turn)
            finally:
                if observer is not None:
                    observer.handler_finished(key, time.monotonic() - running.started, sys.exc_info()[1])
        except asyncio.CancelledError:
            running.in_handler = False
            reason = running.cancel_reason
            turn.seal()
            if reason == "interrupt":
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                await publisher.drain()
                return cancelled(message.id)
            if reason == "lost":
                if observer is not None:
                    observer.turn_abandoned(key, "lost")
                self.stats.fenced += 1
                self._follow(key, message.id)  # the new owner runs it again; its caller gets that result
                return None
            if reason == "drain":
                if observer is not None:
                    observer.turn_abandoned(key, "drain")
                self.stats.handed_back += 1
                self._fail_waiter(message.id, errors.LeaseLost(
                    f"this instance is shutting down; the turn of conversation {key.id!r} was handed to another "
                    "instance — retry with the same Idempotency-Key to get its result"))
                with contextlib.suppress(errors.StatefleetError):
                    await self.store.release(work.lease)  # else the lease expires and is taken over
                return None
            raise
        except Exception as exc:
            running.in_handler = False
            turn.seal()
            log.exception("handler of agent %r failed on message %r of conversation %r",
                          self.agent.name, message.id, str(key))
            await publisher.drain()
            return failed(message.id, errors.TurnFailed(f"the agent's handler raised {exc!r}"))
        running.in_handler = False
        turn.seal()
        await publisher.drain()
        return committed(work, turn, publisher.count, self.agent)

    def _count(self, outcome: str) -> None:
        if outcome == "committed":
            self.stats.committed += 1
        elif outcome == "failed":
            self.stats.failed += 1
        else:
            self.stats.interrupted += 1

    def _resolve(self, message_id: str, result: JSONObject) -> None:
        waiter = self._waiters.get(message_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def _fail_waiter(self, message_id: str, error: BaseException) -> None:
        waiter = self._waiters.get(message_id)
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _interrupt_local(self, key: ConversationKey) -> None:
        running = self._running.get(key)
        if running is not None and running.in_handler and running.task is not None:
            running.cancel_reason = "interrupt"
            running.task.cancel()
