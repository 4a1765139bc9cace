"""Canary releases: analysis that steps a candidate version's routing weight up while it stays healthy.

``run_canary`` drives a ``CanaryPlan`` against a ``MetricsSource`` (the fleet registry's counters, or
Prometheus) and a ``WeightsControl`` (the routing weights in the store); ``statefleet canary run`` is its
command line.
"""

from __future__ import annotations

from .analysis import CanaryPlan, CanaryResult, Decision, WeightsControl, run_canary
from .sources import MetricsQueryFailed, MetricsSource, PrometheusSource, RegistrySource

__all__ = [
    "CanaryPlan",
    "CanaryResult",
    "Decision",
    "MetricsQueryFailed",
    "MetricsSource",
    "PrometheusSource",
    "RegistrySource",
    "WeightsControl",
    "run_canary",
]
