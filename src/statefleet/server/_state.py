"""What every route of one server shares: its engine, settings, draining state and telemetry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AbstractContextManager
from typing import Any

from .. import errors
from ..agent import Agent
from ..engine import Engine
from ..observability import tracing_enabled
from ..observability.hooks import EngineObserver, fan_out
from ..observability.metrics import Metrics, MetricsObserver
from ..observability.store_metrics import MeteredStore
from ..store import Store, open_store
from .forwarding import Forwarder
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
        #: Prometheus metrics of this process; None with ``settings.metrics`` off.
        self.metrics = Metrics(agent.name, agent.version) if settings.metrics else None
        #: Whether requests, turns, store and backend calls are traced (the tracer exists after ``start``).
        self.tracing = settings.tracer_provider is not None or (
            tracing_enabled() if settings.tracing is None else settings.tracing)
        self.tracer: Any = None
        self._provider: Any = None
        self._sampler: asyncio.Task[None] | None = None
        #: Passes messages of another version's conversations on (made at start, with the instance id).
        self.forwarder: Forwarder | None = None

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

    def stream(self, kind: str) -> AbstractContextManager[None]:
        """Count an open stream (``sse`` or ``websocket``) for the block, when metrics are on."""
        return contextlib.nullcontext() if self.metrics is None else self.metrics.open_stream(kind)

    async def start(self) -> None:
        """Open the store (when given by URL) and start the engine; safe to call more than once."""
        async with self._lock:
            if self._engine is not None:
                return
            source = self._store_source
            store = await open_store(source) if isinstance(source, str) else source
            if self.metrics is not None:
                store = MeteredStore(store, self.metrics)
            engine = Engine(self.agent, store, self.settings.engine)
            engine.observer = self._observer(engine)
            engine.address = self.settings.advertise_address
            self.forwarder = Forwarder(engine.instance_id, self.settings.version_url_template,
                                       self.settings.max_forward_hops, self.settings.turn_timeout + 30.0)
            await engine.start()
            if self.metrics is not None:
                self._sampler = asyncio.create_task(self.metrics.sample_forever(engine))
            self.started_at = time.time()
            self._engine = engine
            log.info("instance %r serves agent %r version %r", engine.instance_id, self.agent.name,
                     self.agent.version, extra={"instance": engine.instance_id, "version": self.agent.version})

    def _observer(self, engine: Engine) -> EngineObserver | None:
        metrics = None if self.metrics is None else MetricsObserver(self.metrics)
        if not self.tracing:
            return metrics
        from ..observability import tracing  # imports OpenTelemetry: only when tracing is on

        provider = self.settings.tracer_provider
        if provider is None:
            provider = self._provider = tracing.provider_from_env(self.agent.name, self.agent.version,
                                                                  engine.instance_id)
        self.tracer = provider.get_tracer(tracing.TRACER_NAME)
        engine.store = tracing.TracedStore(engine.store, self.tracer)
        return fan_out(metrics, tracing.TracingObserver(self.tracer, engine.instance_id, self.agent.version))

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
            if self._sampler is not None:
                self._sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sampler
                self._sampler = None
            if self.metrics is not None:
                self.metrics.flush()  # this worker's last counts, before it exits
            if self.forwarder is not None:
                await self.forwarder.close()
            if isinstance(self._store_source, str):
                await engine.store.close()
            if self._provider is not None:
                self._provider.shutdown()  # flushes the spans still batched
                self._provider = None
