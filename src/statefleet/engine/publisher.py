"""Where a turn's streamed tokens go: to the local caller at once, and to the store's event log in batches.

One :class:`EventLogWriter` per engine writes the tokens of all its running turns: whatever was emitted in the
last few milliseconds goes to the store in one call, so a token costs a list append, not a task and a store
call of its own (with thousands of streams, the per-token task was a good part of an instance's CPU). The
caller streaming a turn gets its tokens at once; only the log, which other instances and reconnecting clients
read, lags by up to :data:`BATCH_DELAY` — and a turn's end writes its tokens at once, before its reply.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Iterable

from ..observability.hooks import EngineObserver
from ..store.base import ConversationKey, JSONObject, Limits, Store
from .turn_counters import TurnCounters

log = logging.getLogger(__name__)

EventCallback = Callable[[JSONObject], None]

#: Seconds a writer pass waits for more tokens once one is queued. Under light load a pass would otherwise
#: carry a token or two, each paying for a task and a store call; 5 ms gathers every stream's next tokens.
BATCH_DELAY = 0.005
#: The writer serves every turn, so its timer and task must not carry the first one's context (its trace, its
#: turn scope — and a reference cycle through that turn).
_EMPTY = contextvars.Context()


class EventLogWriter:
    """Appends the events emitted by this engine's turns to the store, all conversations in one pass.

    Each conversation's events reach the store in the order they were emitted; :meth:`flushed` waits until
    all of one conversation's are there (the commit appends the reply after them).
    """

    def __init__(
        self, store: Callable[[], Store], limits: Limits, on_appended: Callable[[Iterable[ConversationKey]], None]
    ) -> None:
        #: The engine's store as it is now (the server wraps it with metrics and tracing after creating it).
        self._store = store
        self._limits = limits
        self._on_appended = on_appended
        self._pending: dict[ConversationKey, list[JSONObject]] = {}
        self._writing: dict[ConversationKey, list[JSONObject]] = {}
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: ConversationKey, event: JSONObject) -> None:
        """Queue ``event`` for ``key``'s event log: written within :data:`BATCH_DELAY`, or when its turn ends."""
        batch = self._pending.get(key)
        if batch is None:
            self._pending[key] = [event]
        else:
            batch.append(event)
        if self._task is None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_DELAY, self._start, context=_EMPTY)

    def _start(self) -> None:
        """Start a pass now (the delay passed, or a turn is ending)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None and self._pending:
            self._task = asyncio.get_running_loop().create_task(self._write(), context=contextvars.Context())

    async def _write(self) -> None:
        try:
            while self._pending:
                self._writing, self._pending = self._pending, {}
                try:
                    await self._store().append_events(self._writing, limits=self._limits)
                except Exception:
                    log.warning("could not publish the events of %d conversations", len(self._writing),
                                exc_info=True)
                else:
                    self._on_appended(self._writing)
                self._writing = {}
        finally:
            self._task = None

    async def flushed(self, key: ConversationKey) -> None:
        """Wait until every event queued for ``key`` is in the store (or could not be written)."""
        if self._timer is not None and key in self._pending:
            self._start()  # the turn is ending: its tokens go now, not after the batching delay
        while (task := self._task) is not None and (key in self._pending or key in self._writing):
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled() and not _cancelling():
                    return  # the writer was stopped with the engine: nothing more will be written
                raise

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._start()
        while (task := self._task) is not None:
            await asyncio.shield(task)


def _cancelling() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


class EventPublisher:
    """Streams one turn's tokens to its local caller at once, and to the engine's event log writer."""

    __slots__ = ("_accepted_at", "_counters", "_key", "_listener", "_observer", "_writer", "count")

    def __init__(
        self,
        writer: EventLogWriter | None,
        key: ConversationKey,
        listener: EventCallback | None,
        observer: EngineObserver | None,
        accepted_at: float,
        counters: TurnCounters | None = None,
    ) -> None:
        self._writer = writer
        self._key = key
        self._listener = listener
        self._observer = observer
        self._accepted_at = accepted_at
        self._counters = counters
        self.count = 0

    def publish(self, event: JSONObject) -> None:
        self.count += 1
        if self.count == 1:
            seconds = max(0.0, time.time() - self._accepted_at)
            if self._observer is not None:
                self._observer.first_token(seconds)
            if self._counters is not None:
                self._counters.record_first_token(seconds)
        if self._listener is not None:
            self._listener(event)
        if self._writer is not None:
            self._writer.add(self._key, event)

    async def drain(self) -> None:
        """Wait until every emitted token is in the store (so the reply event comes after them)."""
        self._listener = None  # the turn is sealed: nothing more goes to its caller
        if self._writer is not None:
            await self._writer.flushed(self._key)
