"""How the HTTP server behaves: limits, timings and how it presents itself in the fleet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine import EngineSettings
from ..errors import ConfigError


@dataclass(frozen=True)
class ServerSettings:
    """Settings of one HTTP server; the engine it runs has its own ``EngineSettings``."""

    #: How the engine runs turns.
    engine: EngineSettings = field(default_factory=EngineSettings)
    #: Largest request body (bytes) read; larger bodies get 413 without being buffered.
    max_body_bytes: int = 128 * 1024
    #: How long (s) a request waits for its reply before 504 (the message is still processed).
    turn_timeout: float = 300.0
    #: On shutdown, how long (s) running turns may take before they are handed back to the fleet.
    drain_timeout: float = 25.0
    #: How often (s) ``/events`` streams look for new events in the store.
    events_poll_interval: float = 0.025
    #: An idle ``/events`` stream reads the store less and less often, down to once per this (s); events this
    #: instance appends wake it at once, other instances' within this.
    events_poll_max: float = 0.25
    #: A comment is sent on idle event streams this often (s), so proxies keep them open.
    heartbeat_interval: float = 15.0
    #: Seconds in the ``Retry-After`` header of 503 answers.
    retry_after: int = 1
    #: How long (s) ``/readyz`` waits for the store to answer a ping.
    ready_timeout: float = 2.0
    #: The address peers reach this instance at (host:port); None: the address the request came in on.
    advertise_address: str | None = None
    #: A message posted without an ``Idempotency-Key`` takes the request's ``x-request-id`` (set once by
    #: Envoy/Istio at the edge and kept on its retries) as its key, so a proxy's retry never runs a second turn.
    request_id_idempotency: bool = True
    #: Where an instance of another version is reached when the fleet registry lists none (a per-version
    #: Service), ``{version}`` standing for the version: ``http://support-{version}:8000``. None: the registry only.
    version_url_template: str | None = None
    #: A message is passed on at most this many times between versions (against loops while the fleet settles).
    max_forward_hops: int = 2
    #: Export Prometheus metrics at ``/metrics`` (see docs/observability.md).
    metrics: bool = True
    #: OpenTelemetry tracing: None follows the OTEL_* variables (off unless they name an exporter).
    tracing: bool | None = None
    #: A ``TracerProvider`` to trace with instead of one built from OTEL_* (embedding, tests); turns tracing on.
    tracer_provider: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("turn_timeout", "drain_timeout", "events_poll_interval", "events_poll_max", "heartbeat_interval",
                     "ready_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"server setting {name}={value!r} must be a positive number of seconds")
        template = self.version_url_template
        if template is not None and (not template.startswith(("http://", "https://")) or "{version}" not in template):
            raise ConfigError(f"version URL template {template!r} must be an http(s):// URL with {{version}} in it, "
                              "e.g. http://support-{version}:8000")
        for name in ("max_body_bytes", "retry_after", "max_forward_hops"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"server setting {name}={value!r} must be a positive int")
