"""Whether tracing is asked for, read from the standard OTEL_* variables without importing OpenTelemetry."""

from __future__ import annotations

import os
from collections.abc import Mapping


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``OTEL_TRACES_EXPORTER`` names an exporter (not ``none``) or an OTLP endpoint is set;
    ``OTEL_SDK_DISABLED=true`` wins."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return any(e.strip().lower() not in ("", "none") for e in exporters.split(","))
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
