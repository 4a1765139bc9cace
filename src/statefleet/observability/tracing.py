"""OpenTelemetry tracing: a span per HTTP request, per turn (accept, handler, commit), store call and backend call.

Off by default, and then this module is never imported: no tracer call runs on the hot path. It is on when
the standard variables ask for an exporter: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``; ``none`` is off)
or an ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``. ``OTEL_SDK_DISABLED=true`` wins. The OTLP exporter
(``pip install statefleet[otel]``) reads its own ``OTEL_EXPORTER_OTLP_*`` settings; the sampler follows
``OTEL_TRACES_SAMPLER``.

The trace tree of a message sent over HTTP::

    POST /v1/conversations/{id}/messages        (server span; honours an inbound traceparent)
      turn                                      (the message, from acceptance until its caller has the reply)
        store.accept
        handler                                 (on whichever instance holds the lease)
          backend llm                           (client span; its traceparent goes to the backend)
        store.commit

The turn's ``traceparent`` is stored with the message, so the instance that runs it — possibly another one,
possibly after a takeover — continues the same trace. A message run again after a takeover (attempt > 1)
starts a new trace whose ``turn.retry`` span links to the original turn.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..errors import ConfigError, StatefleetClientError
from ..store.base import ConversationKey, Store
from ._otel_env import tracing_enabled
from .store_metrics import StoreProxy

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from .backends import BackendCall

_PROPAGATOR = TraceContextTextMapPropagator()
_EMPTY = Context()
__all__ = ["TracedStore", "TracingObserver", "provider_from_env", "tracing_enabled"]
TRACER_NAME = "statefleet"


def provider_from_env(service: str, version: str, instance_id: str,
                      environ: Mapping[str, str] = os.environ) -> TracerProvider:
    """A tracer provider exporting (in batches) to the exporters ``OTEL_TRACES_EXPORTER`` names (default otlp)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    attributes: dict[str, str] = {"service.version": version, "service.instance.id": instance_id}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = name.strip().lower()
        exporter: SpanExporter
        if name in ("", "none"):
            continue
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            exporter = _otlp_exporter(environ)
        else:
            raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r} is not supported; use otlp, console or none")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    try:
        if protocol == "grpc":
            module = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
        else:
            module = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
        exporter = importlib.import_module(module).OTLPSpanExporter
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else "statefleet[otel]"
        raise ConfigError(f"OTLP trace export over {protocol} needs {package}; pip install it, or set "
                          "OTEL_TRACES_EXPORTER=none") from None
    return exporter()


def traceparent(ctx: Context | None = None) -> str | None:
    """The W3C ``traceparent`` of the span current in ``ctx`` (the current context when None)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier.get("traceparent")


def context_from(headers: Mapping[str, str]) -> Context:
    """The trace context carried by ``traceparent``/``tracestate`` headers (empty when there is none)."""
    return _PROPAGATOR.extract(headers, context=_EMPTY)


def _fail(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


class _MessageSpan:
    """The ``turn`` span of a message being sent; current in the sender's task until ``end``."""

    __slots__ = ("_span", "_token", "traceparent")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        ctx = trace.set_span_in_context(span)
        self._token = otel_context.attach(ctx)
        self.traceparent = traceparent(ctx)

    def end(self, error: BaseException | None) -> None:
        if error is not None:
            if isinstance(error, StatefleetClientError):
                self._span.set_attribute("statefleet.error", error.code)
            else:
                _fail(self._span, error)
        otel_context.detach(self._token)
        self._span.end()


class _TurnTrace:
    __slots__ = ("handler", "handler_open", "parent", "root", "token")

    def __init__(self, root: trace.Span | None, parent: Context, handler: trace.Span, token: Token[Context]) -> None:
        self.root = root
        self.parent = parent
        self.handler = handler
        self.handler_open = True
        self.token = token


class TracingObserver:
    """The engine's hooks as spans (see the module docstring for the tree)."""

    def __init__(self, tracer: trace.Tracer, instance_id: str, version: str) -> None:
        self.tracer = tracer
        self.instance_id = instance_id
        self.version = version
        self._turns: dict[ConversationKey, _TurnTrace] = {}

    def message_received(self, key: ConversationKey, message_id: str) -> _MessageSpan:
        span = self.tracer.start_span("turn", attributes={
            "statefleet.conversation_id": key.id, "statefleet.tenant": key.tenant,
            "statefleet.message_id": message_id, "statefleet.instance": self.instance_id,
        })
        return _MessageSpan(span)

    def message_accepted(self, kind: str, seconds: float) -> None:
        trace.get_current_span().set_attribute("statefleet.accepted", kind)

    def turn_started(self, key: ConversationKey, message_id: str, attempt: int, trace_: str | None) -> None:
        attributes: dict[str, str | int] = {"statefleet.conversation_id": key.id, "statefleet.tenant": key.tenant,
                      "statefleet.message_id": message_id, "statefleet.attempt": attempt,
                      "statefleet.instance": self.instance_id, "statefleet.version": self.version}
        origin = context_from({"traceparent": trace_}) if trace_ else None
        root: trace.Span | None = None
        if attempt <= 1 and origin is not None:
            parent = origin
        else:
            links = []
            if origin is not None:
                links.append(Link(trace.get_current_span(origin).get_span_context(),
                                  {"statefleet.link": "original turn"}))
            root = self.tracer.start_span("turn.retry" if attempt > 1 else "turn", context=_EMPTY, links=links,
                                          attributes=attributes)
            parent = trace.set_span_in_context(root, _EMPTY)
        handler = self.tracer.start_span("handler", context=parent, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(handler, parent))
        old = self._turns.pop(key, None)
        if old is not None:  # a previous turn of this conversation ended without a hook: close it
            if old.handler_open:
                old.handler.end()
            if old.root is not None:
                old.root.end()
        self._turns[key] = _TurnTrace(root, parent, handler, token)

    def handler_finished(self, key: ConversationKey, seconds: float, error: BaseException | None) -> None:
        turn = self._turns.get(key)
        if turn is None:
            return
        if error is not None:
            if isinstance(error, BaseException) and not isinstance(error, Exception):
                turn.handler.set_attribute("statefleet.cancelled", True)
            else:
                _fail(turn.handler, error)
        turn.handler.end()
        turn.handler_open = False
        otel_context.detach(turn.token)
        turn.token = otel_context.attach(turn.parent)  # the commit is the handler's sibling

    def _close(self, key: ConversationKey, attribute: str, value: str) -> None:
        turn = self._turns.pop(key, None)
        if turn is None:
            return
        if turn.handler_open:
            turn.handler.end()
        otel_context.detach(turn.token)
        if turn.root is not None:
            turn.root.set_attribute(attribute, value)
            turn.root.end()

    def turn_finished(
        self, key: ConversationKey, *, outcome: str, attempt: int, handler_seconds: float, total_seconds: float,
        commit_seconds: float,
    ) -> None:
        self._close(key, "statefleet.outcome", outcome)

    def turn_abandoned(self, key: ConversationKey, reason: str) -> None:
        self._close(key, "statefleet.abandoned", reason)

    def first_token(self, seconds: float) -> None:
        trace.get_current_span().add_event("first_token", {"statefleet.seconds_since_accept": seconds})

    def takeover(self, key: ConversationKey, previous_owner: str | None, attempt: int) -> None:
        span = self.tracer.start_span("lease.takeover", context=_EMPTY, attributes={
            "statefleet.conversation_id": key.id, "statefleet.tenant": key.tenant,
            "statefleet.instance": self.instance_id, "statefleet.previous_owner": previous_owner or "",
            "statefleet.attempt": attempt,
        })
        span.end()

    def store_reset(self, previous_epoch: str, epoch: str) -> None:
        span = self.tracer.start_span("store.reset", context=_EMPTY, attributes={
            "statefleet.instance": self.instance_id, "statefleet.previous_epoch": previous_epoch,
            "statefleet.epoch": epoch,
        })
        span.end()

    def backend_call(self, call: BackendCall) -> AbstractContextManager[object]:
        return self._backend_span(call)

    @contextmanager
    def _backend_span(self, call: BackendCall) -> Iterator[None]:
        with self.tracer.start_as_current_span(f"backend {call.backend}", kind=SpanKind.CLIENT,
                                               attributes={"statefleet.backend": call.backend},
                                               record_exception=False, set_status_on_exception=False) as span:
            parent = traceparent()
            if parent is not None:
                call.headers["traceparent"] = parent
            try:
                yield
            finally:
                span.set_attribute("statefleet.outcome", call.outcome)
                if call.outcome != "ok":
                    span.set_status(Status(StatusCode.ERROR, call.outcome))


# -- store calls -------------------------------------------------------------------------------------------

#: Operations traced when a span is current (a request or a turn); polls (receipt, read_events, renew) and
#: the background loops' calls are not, so an idle stream or a long turn does not flood the trace.
TRACED_OPERATIONS = frozenset(("accept", "commit", "release", "reclaim", "load", "delete", "append_events"))
_Method = Callable[..., Coroutine[Any, Any, Any]]


def _traced(op: str) -> _Method:
    if op not in TRACED_OPERATIONS:
        async def forward(self: TracedStore, *args: Any, **kwargs: Any) -> Any:
            return await getattr(self.inner, op)(*args, **kwargs)

        return forward

    async def call(self: TracedStore, *args: Any, **kwargs: Any) -> Any:
        if not trace.get_current_span().get_span_context().is_valid:
            return await getattr(self.inner, op)(*args, **kwargs)
        with self.tracer.start_as_current_span(f"store.{op}", kind=SpanKind.CLIENT, attributes={
            "db.system": self.system, "db.operation.name": op,
        }):
            return await getattr(self.inner, op)(*args, **kwargs)

    return call


class TracedStore(StoreProxy):
    """``inner``, with the turn path's operations as client spans."""

    def __init__(self, inner: Store, tracer: trace.Tracer) -> None:
        super().__init__(inner)
        self.tracer = tracer
        self.system = type(inner).__name__.removesuffix("Store").lower() or "store"

    accept = _traced("accept")
    commit = _traced("commit")
    renew = _traced("renew")
    release = _traced("release")
    reclaim = _traced("reclaim")
    expired_leases = _traced("expired_leases")
    receipt = _traced("receipt")
    load = _traced("load")
    delete = _traced("delete")
    append_events = _traced("append_events")
    read_events = _traced("read_events")
    backlog = _traced("backlog")
    register_instance = _traced("register_instance")
    deregister_instance = _traced("deregister_instance")
    instances = _traced("instances")
    ping = _traced("ping")


# -- HTTP requests -----------------------------------------------------------------------------------------


class ServerSpan:
    """The span of one HTTP request (or WebSocket session), current while the request runs."""

    __slots__ = ("_token", "span")

    def __init__(self, tracer: trace.Tracer, name: str, headers: Mapping[str, str], attributes: dict[str, Any]) -> None:
        parent = context_from(headers)
        self.span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    def status(self, code: int) -> None:
        self.span.set_attribute("http.response.status_code", code)
        if code >= 500:
            self.span.set_status(Status(StatusCode.ERROR))

    def end(self, error: BaseException | None = None) -> None:
        if error is not None and isinstance(error, Exception):
            _fail(self.span, error)
        otel_context.detach(self._token)
        self.span.end()

    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")
