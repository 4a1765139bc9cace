"""Metrics, tracing and logging.

- ``hooks``: what the engine tells observers; ``metrics`` and ``tracing`` implement it.
- ``backend_call``: how a handler calls an LLM or a tool, measured and traced (``backends``).
- ``logs``: the CLI's logging setup, with the running turn's ids on every line.

Tracing (``statefleet.observability.tracing``) imports OpenTelemetry; it is only imported when enabled
(``tracing_enabled()`` reads the OTEL_* variables without it).
"""

from ._otel_env import tracing_enabled
from .backends import BackendCall, BackendError, backend_call

__all__ = ["BackendCall", "BackendError", "backend_call", "tracing_enabled"]
