"""What every route of one server shares: its engine, settings and draining state."""

from __future__ import annotations

import asyncio
import logging
import time

from .. import errors
from ..agent import Agent
from ..store import Store, open_store
from ..turns import Engine
from .settings import ServerSettings

log = logging.getLogger(__name__)


class ServerState:
    """The engine a server runs, opened at startup and stopped (drained) at shutdown."""

    def __init__(self, agent: Agent, store: Store | str, settings: ServerSettings) -> None:
        self.agent = agent
        self.settings = settings
        self._store_source = store
        self._engine: Engine | None = None
        self._lock = asyncio.Lock()
        #: Set when the server begins to drain: open event streams end, new work is refused.
        self.closing = asyncio.Event()
        self.started_at = 0.0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise errors.Overloaded("this instance has not started yet; the ASGI lifespan starts it")
        return self._engine

    @property
    def started(self) -> bool:
        return self._engine is not None

    @property
    def draining(self) -> bool:
        return self.closing.is_set()

    async def start(self) -> None:
        """Open the store (when given by URL) and start the engine; safe to call more than once."""
        async with self._lock:
            if self._engine is not None:
                return
            source = self._store_source
            store = await open_store(source) if isinstance(source, str) else source
            engine = Engine(self.agent, store, self.settings.engine)
            engine.address = self.settings.advertise_address
            await engine.start()
            self.started_at = time.time()
            self._engine = engine
            log.info("instance %r serves agent %r version %r", engine.instance_id, self.agent.name,
                     self.agent.version)

    def drain(self) -> None:
        """Stop taking new work: ``/readyz`` fails, new messages get 503, event streams end."""
        self.closing.set()

    async def stop(self) -> None:
        """Drain, let running turns finish within ``drain_timeout``, hand back the rest, close what we opened."""
        self.drain()
        async with self._lock:
            engine, self._engine = self._engine, None
            if engine is None:
                return
            await engine.stop(self.settings.drain_timeout)
            if isinstance(self._store_source, str):
                await engine.store.close()
