"""Monitoring: a PodMonitor for every agent pod, the alert rules, and the Grafana dashboard as a ConfigMap.

Under Istio's STRICT mTLS a Prometheus outside the mesh cannot reach the agent's port, so the PodMonitor scrapes
the sidecar's merged endpoint (the agent's ``/metrics``, which the sidecar reads from the ``prometheus.io``
annotations, alongside Envoy's), keeping only the statefleet series. Without Istio it scrapes ``/metrics``.
The rules and the dashboard are those of ``deploy/observability/``, shipped in the package.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from . import _yaml
from .config import FleetConfig, Istio
from .manifest import Manifest, manifest
from .mesh_istio import MERGED_METRICS_PATH, MERGED_METRICS_PORT
from .names import HTTP_PORT_NAME, METRICS_PATH, agent_labels, agent_name, agent_selector, metadata

MONITORING = "monitoring.coreos.com/v1"
#: The pod label every scraped series carries as ``app_kubernetes_io_name`` (the backlog has no ``agent``).
TARGET_LABEL = "app.kubernetes.io/name"


def asset(name: str) -> str:
    """A file of ``statefleet.k8s.assets`` (copies of deploy/observability/)."""
    return resources.files("statefleet.k8s.assets").joinpath(name).read_text(encoding="utf-8")


def render_monitoring(config: FleetConfig) -> list[Manifest]:
    return [pod_monitor(config), prometheus_rule(config), dashboard(config)]


def _labels(config: FleetConfig) -> dict[str, str]:
    return {**agent_labels(config), **config.monitoring.labels}


def pod_monitor(config: FleetConfig) -> Manifest:
    interval = f"{config.monitoring.scrape_interval_seconds}s"
    endpoint: dict[str, Any]
    if isinstance(config.mesh, Istio):
        endpoint = {"portNumber": MERGED_METRICS_PORT, "path": MERGED_METRICS_PATH, "interval": interval,
                    "metricRelabelings": [{"action": "keep", "sourceLabels": ["__name__"], "regex": "statefleet_.*"}]}
    else:
        endpoint = {"port": HTTP_PORT_NAME, "path": METRICS_PATH, "interval": interval}
    spec = {"selector": {"matchLabels": agent_selector(config)}, "podTargetLabels": [TARGET_LABEL],
            "podMetricsEndpoints": [endpoint]}
    return manifest(MONITORING, "PodMonitor", metadata(agent_name(config), config.agent.namespace, _labels(config)),
                    spec=spec)


def prometheus_rule(config: FleetConfig) -> Manifest:
    """The alerts and recording rules of docs/observability.md."""
    rule = _yaml.load(asset("prometheus-rules.yaml"))
    return manifest(MONITORING, "PrometheusRule", metadata(agent_name(config), config.agent.namespace,
                                                          _labels(config)),
                    spec=rule["spec"])


def dashboard(config: FleetConfig) -> Manifest:
    board = config.monitoring.dashboard
    return manifest("v1", "ConfigMap",
                    metadata(f"{agent_name(config)}-grafana-dashboard", board.namespace or config.agent.namespace,
                             {**agent_labels(config), **board.labels}),
                    data={f"statefleet-{agent_name(config)}.json": asset("grafana-dashboard.json")})
