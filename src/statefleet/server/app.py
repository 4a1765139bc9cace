"""The ASGI application: a router built once, the lifespan that starts and drains the engine.

>>> app = create_app(agent, "sqlite:///state.db")
>>> uvicorn.run(app, port=8000)
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from .. import errors
from ..agent import Agent
from ..engine import Engine
from ..store import Store
from ._http import send_error
from ._state import ServerState
from ._types import Handler, Message, Receive, Scope, Send
from .admin import AdminRoutes
from .errors import MethodNotAllowed, RouteNotFound
from .events import EventStream
from .health import HealthRoutes
from .routes import ConversationRoutes
from .settings import ServerSettings
from .websocket import WebSocketRoute

log = logging.getLogger(__name__)

CONVERSATIONS = "/v1/conversations/"
_PREFIX_LEN = len(CONVERSATIONS)


class UpgradeRequired(errors.StatefleetClientError):
    """A plain HTTP request to the WebSocket route."""

    code = "upgrade_required"
    status = 426


class StatefleetApp:
    """An ASGI 3 application serving one agent. Build it with ``create_app``."""

    def __init__(self, agent: Agent, store: Store | str, settings: ServerSettings | None = None) -> None:
        self.settings = settings or ServerSettings()
        self.state = ServerState(agent, store, self.settings)
        conversations = ConversationRoutes(self.state)
        health = HealthRoutes(self.state)
        admin = AdminRoutes(self.state)
        self._websocket = WebSocketRoute(self.state)
        self._static: dict[str, dict[str, Handler]] = {
            "/healthz": {"GET": health.healthz},
            "/readyz": {"GET": health.readyz},
            "/v1/fleet": {"GET": health.fleet},
            "/openapi.json": {"GET": health.openapi},
            "/v1/admin/routing": {"GET": admin.get_routing, "PUT": admin.put_routing},
        }
        if self.state.metrics is not None:
            self._static["/metrics"] = {"GET": health.metrics}
        # Keyed by what follows /v1/conversations/{id}: "" for the conversation itself.
        self._conversation: dict[str, dict[str, Handler]] = {
            "": {"GET": conversations.get_conversation, "DELETE": conversations.delete_conversation},
            "messages": {"POST": conversations.post_message},
            "events": {"GET": EventStream(self.state)},
            "ws": {"GET": _upgrade_required},
        }
        self._retry_after = self.settings.retry_after
        self._observed = self.state.metrics is not None or self.state.tracing
        #: Route templates for metrics and span names: never the raw path (ids would explode cardinality).
        self._templates = {tail: CONVERSATIONS + "{id}" + ("/" + tail if tail else "") for tail in self._conversation}

    @property
    def engine(self) -> Engine:
        """The running engine (after startup)."""
        return self.state.engine

    def drain(self) -> None:
        """Begin shutdown: ``/readyz`` fails, new messages get 503, event streams end; running turns go on.

        Call it on SIGTERM before the server stops taking connections; the lifespan shutdown then stops the
        engine within ``drain_timeout``.
        """
        self.state.drain()

    async def startup(self) -> None:
        await self.state.start()

    async def shutdown(self) -> None:
        await self.state.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._ws(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def route_template(self, path: str) -> str:
        """The route ``path`` matches, with ids templated (``/v1/conversations/{id}/messages``), or ``other``."""
        if path in self._static:
            return path
        if path.startswith(CONVERSATIONS):
            _id, slash, tail = path[_PREFIX_LEN:].partition("/")
            template = self._templates.get(tail if slash else "")
            if template is not None:
                return template
        return "other"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._observed:
            await self._observed_http(scope, receive, send)
        else:
            await self._route_http(scope, receive, send)

    async def _observed_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``_route_http`` with the request counted and timed (metrics) and as a server span (tracing)."""
        start = perf_counter()
        state = self.state
        route = self.route_template(scope["path"])
        method: str = scope["method"]
        status = 0
        span: Any = None
        if state.tracer is not None:
            from ..observability.tracing import ServerSpan

            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                       if k in (b"traceparent", b"tracestate")}
            span = ServerSpan(state.tracer, f"{method} {route}", headers, {
                "http.request.method": method, "http.route": route, "url.path": scope["path"]})

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if span is not None:
                    span.status(status)
            await send(message)

        error: BaseException | None = None
        try:
            await self._route_http(scope, receive, send_observed)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if span is not None:
                span.end(error)
            if state.metrics is not None:
                # 499 (as nginx logs it): the client went away before any response started.
                state.metrics.http_request(route, method, status or 499, perf_counter() - start)

    async def _route_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        conversation_id = ""
        methods = self._static.get(path)
        if methods is None and path.startswith(CONVERSATIONS):
            conversation_id, slash, tail = path[_PREFIX_LEN:].partition("/")
            if not slash or tail:
                methods = self._conversation.get(tail)
        try:
            if methods is None:
                raise RouteNotFound(f"no route {path!r}; see /openapi.json")
            handler = methods.get(scope["method"])
            if handler is None:
                allow = ", ".join(methods).encode()
                exc = MethodNotAllowed(f"{scope['method']} is not allowed on {path!r}; use {allow.decode()}")
                await send_error(send, exc, self._retry_after, [(b"allow", allow)])
                return
            if not self.state.started:
                await self.state.start()
            await handler(scope, receive, send, conversation_id)
        except errors.StatefleetError as exc:
            await send_error(send, exc, self._retry_after)
        except Exception:
            # Handlers only raise before the response started; streaming handlers report their own failures.
            log.exception("%s %s failed", scope["method"], path)
            await send_error(send, errors.StatefleetError("internal error; see the server log"), self._retry_after)

    async def _ws(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith(CONVERSATIONS) and path.endswith("/ws"):
            conversation_id, slash, tail = path[_PREFIX_LEN:].partition("/")
            if slash and tail == "ws":
                if not self.state.started:
                    await self.state.start()
                await self._websocket(scope, receive, send, conversation_id)
                return
        await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except errors.StatefleetError as exc:
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    log.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _upgrade_required(scope: Scope, receive: Receive, send: Send, conversation_id: str) -> None:
    raise UpgradeRequired("this route speaks WebSocket; send an Upgrade: websocket request")


def create_app(agent: Agent, store: Store | str, settings: ServerSettings | None = None) -> StatefleetApp:
    """An ASGI app serving ``agent`` on ``store`` (a ``Store``, or a URL opened at startup and closed at shutdown).

    The app owns an ``Engine``: the ASGI lifespan starts it and, at shutdown, drains it within
    ``settings.drain_timeout``.
    """
    return StatefleetApp(agent, store, settings)
