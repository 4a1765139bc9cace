"""Probes and fleet info: ``/healthz``, ``/readyz``, ``/v1/fleet``, and the OpenAPI document."""

from __future__ import annotations

import asyncio

from .. import errors
from .._json import dumps
from ..observability.metrics import CONTENT_TYPE
from ._http import send_json
from ._state import ServerState
from ._types import Receive, Scope, Send
from .errors import Draining
from .fleet import fleet_instances, request_address
from .openapi import openapi_document

_OK = dumps({"status": "ok"})
_READY = dumps({"status": "ready"})


class HealthRoutes:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._openapi = dumps(openapi_document(state.agent))

    async def healthz(self, scope: Scope, receive: Receive, send: Send, _id: str) -> None:
        """Alive while the process runs, even while draining."""
        await send_json(send, 200, _OK)

    async def readyz(self, scope: Scope, receive: Receive, send: Send, _id: str) -> None:
        """Ready when the store answers and this instance is not draining."""
        state = self.state
        if state.draining or state.engine.draining:
            raise Draining("this instance is draining")
        reset = state.engine.epoch.last_reset
        if reset is not None and state.engine.epoch.holding:
            raise errors.StoreLostData(
                f"the store lost its data (epoch {reset.previous!r} became {reset.current!r}); not ready for "
                f"{state.engine.epoch.hold:.0f} s after it was noticed")
        try:
            await asyncio.wait_for(state.engine.store.ping(), state.settings.ready_timeout)
        except TimeoutError:
            raise errors.StoreUnavailable(
                f"the store did not answer a ping within {state.settings.ready_timeout} s") from None
        except errors.StoreUnavailable:
            raise
        except Exception as exc:
            raise errors.StoreUnavailable(f"the store did not answer a ping: {exc!r}") from None
        await send_json(send, 200, _READY)

    async def fleet(self, scope: Scope, receive: Receive, send: Send, _id: str) -> None:
        state = self.state
        address = state.settings.advertise_address or request_address(scope)
        await send_json(send, 200, dumps(await fleet_instances(state.engine, address)))

    async def openapi(self, scope: Scope, receive: Receive, send: Send, _id: str) -> None:
        await send_json(send, 200, self._openapi)

    async def metrics(self, scope: Scope, receive: Receive, send: Send, _id: str) -> None:
        """Prometheus text exposition: this process's (every worker's) metrics and the fleet-wide gauges."""
        metrics = self.state.metrics
        assert metrics is not None  # the route exists only with metrics on
        engine = self.state.engine
        metrics.sample(engine)
        await metrics.fleet.refresh(engine.store)
        body = metrics.render()
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
