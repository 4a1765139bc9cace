"""Where a turn's streamed tokens go: to the local caller at once, and to the store's event log in batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .observability.hooks import EngineObserver
from .store.base import ConversationKey, JSONObject

if TYPE_CHECKING:
    from .turns import Engine

log = logging.getLogger(__name__)

EventCallback = Callable[[JSONObject], None]


class EventPublisher:
    """Streams one turn's tokens to its local caller at once, and to the store's event log in batches."""

    __slots__ = ("_accepted_at", "_buffer", "_engine", "_flushing", "_key", "_listener", "_observer", "count")

    def __init__(
        self,
        engine: Engine,
        key: ConversationKey,
        listener: EventCallback | None,
        observer: EngineObserver | None,
        accepted_at: float,
    ) -> None:
        self._engine = engine
        self._key = key
        self._listener = listener
        self._observer = observer
        self._accepted_at = accepted_at
        self._buffer: list[JSONObject] = []
        self._flushing: asyncio.Task[None] | None = None
        self.count = 0

    def publish(self, event: JSONObject) -> None:
        self.count += 1
        if self.count == 1 and self._observer is not None:
            self._observer.first_token(max(0.0, time.time() - self._accepted_at))
        if self._listener is not None:
            self._listener(event)
        if self._engine.settings.publish_tokens:
            self._buffer.append(event)
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            try:
                await self._engine.store.append_events(self._key, batch, limits=self._engine.limits)
            except Exception:
                log.warning("could not publish %d events of %r", len(batch), str(self._key), exc_info=True)
            else:
                self._engine.events_appended(self._key)

    async def drain(self) -> None:
        """Wait until every emitted token is in the store (so the reply event comes after them)."""
        if self._flushing is not None:
            await asyncio.shield(self._flushing)
