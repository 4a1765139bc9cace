"""Autoscaling each version on what an agent is busy with: turns in flight per pod, and the backlog.

``statefleet_inbox_backlog`` counts conversations with accepted messages fleet-wide (every instance reports
the same value), and a message can only run on its conversation's version; each version is given the share of
the backlog that its in-flight turns have of the agent's. CPU scales too, at a high utilisation, so that the
fleet still grows when Prometheus is out of reach. Scaling up is quick; scaling down removes a small share of
pods per period (at least a minute, or the grace period) after a stabilisation window, so pods that drain
finish their turns before the next ones go.
"""

from __future__ import annotations

from typing import Any

from ._yaml import dump
from .config import FleetConfig, Hpa, Keda, Version
from .manifest import Manifest, manifest
from .names import agent_labels, metadata, version_labels, version_name

KEDA = "keda.sh/v1alpha1"


def render_autoscaling(config: FleetConfig) -> list[Manifest]:
    if isinstance(config.autoscaling, Keda):
        return [scaled_object(config, version) for version in config.versions]
    return [adapter_rules(config), *(horizontal_pod_autoscaler(config, version) for version in config.versions)]


def _matchers(**labels: str) -> str:
    return ",".join(f'{name}="{value}"' for name, value in labels.items())


def in_flight_query(config: FleetConfig, version: Version) -> str:
    """Turns running on the version's pods (KEDA divides it by the replicas)."""
    return (f"sum(statefleet_turns_in_flight{{"
            f"{_matchers(namespace=config.agent.namespace, agent=config.agent.name, version=version.name)}}})")


def backlog_share_query(config: FleetConfig, version: Version) -> str:
    """The fleet backlog times the version's share of the agent's turns in flight."""
    namespace, agent = config.agent.namespace, config.agent.name
    backlog = f"max(statefleet_inbox_backlog{{{_matchers(namespace=namespace, app_kubernetes_io_name=agent)}}})"
    mine = f"sum(statefleet_turns_in_flight{{{_matchers(namespace=namespace, agent=agent, version=version.name)}}})"
    everyone = f"clamp_min(sum(statefleet_turns_in_flight{{{_matchers(namespace=namespace, agent=agent)}}}), 1)"
    return f"{backlog} * {mine} / {everyone}"


def behavior(config: FleetConfig) -> dict[str, Any]:
    scaling = config.autoscaling
    period = max(60, config.grace_seconds)
    return {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30},
                                 {"type": "Pods", "value": 4, "periodSeconds": 30}]},
        "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds, "selectPolicy": "Max",
                      "policies": [{"type": "Percent", "value": scaling.scale_down_percent, "periodSeconds": period},
                                   {"type": "Pods", "value": 1, "periodSeconds": period}]},
    }


def _target(config: FleetConfig, version: Version) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": version_name(config, version)}


def scaled_object(config: FleetConfig, version: Version) -> Manifest:
    keda = config.autoscaling
    assert isinstance(keda, Keda)
    name = version_name(config, version)

    def prometheus(trigger: str, query: str, threshold: int) -> dict[str, Any]:
        return {"type": "prometheus", "name": trigger, "metricType": "AverageValue",
                "metadata": {"serverAddress": keda.prometheus_url, "query": query, "threshold": str(threshold)}}

    triggers = [
        prometheus("in-flight-turns", in_flight_query(config, version), keda.in_flight_per_pod),
        prometheus("backlog", backlog_share_query(config, version), keda.backlog_per_pod),
        {"type": "cpu", "name": "cpu-fallback", "metricType": "Utilization",
         "metadata": {"value": str(keda.cpu_fallback_utilization)}},
    ]
    spec = {
        "scaleTargetRef": _target(config, version),
        "minReplicaCount": version.replicas.min,
        "maxReplicaCount": version.replicas.max,
        "pollingInterval": keda.polling_interval_seconds,
        "advanced": {"horizontalPodAutoscalerConfig": {"name": name, "behavior": behavior(config)}},
        "triggers": triggers,
    }
    return manifest(KEDA, "ScaledObject", metadata(name, config.agent.namespace, version_labels(config, version)),
                    spec=spec)


def backlog_metric_name(config: FleetConfig) -> str:
    """The Prometheus adapter's external metric for one agent's backlog share."""
    return f"statefleet_{config.agent.name.replace('-', '_')}_backlog_share"


def horizontal_pod_autoscaler(config: FleetConfig, version: Version) -> Manifest:
    hpa = config.autoscaling
    assert isinstance(hpa, Hpa)
    metrics = [
        {"type": "Pods", "pods": {"metric": {"name": "statefleet_turns_in_flight"},
                                  "target": {"type": "AverageValue", "averageValue": str(hpa.in_flight_per_pod)}}},
        {"type": "External", "external": {
            "metric": {"name": backlog_metric_name(config),
                       "selector": {"matchLabels": {"agent": config.agent.name, "version": version.name}}},
            "target": {"type": "AverageValue", "averageValue": str(hpa.backlog_per_pod)}}},
        {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": hpa.cpu_fallback_utilization}}},
    ]
    spec = {"scaleTargetRef": _target(config, version), "minReplicas": version.replicas.min,
            "maxReplicas": version.replicas.max, "metrics": metrics, "behavior": behavior(config)}
    return manifest("autoscaling/v2", "HorizontalPodAutoscaler",
                    metadata(version_name(config, version), config.agent.namespace, version_labels(config, version)),
                    spec=spec)


def adapter_rules(config: FleetConfig) -> Manifest:
    """The prometheus-adapter rules the HPAs read; merge ``rules``/``externalRules`` into the adapter's config."""
    namespace, agent = config.agent.namespace, config.agent.name
    series = f"statefleet_turns_in_flight{{{_matchers(namespace=namespace, agent=agent)}}}"
    everyone = f"clamp_min(sum(statefleet_turns_in_flight{{{_matchers(namespace=namespace, agent=agent)}}}), 1)"
    backlog = f"max(statefleet_inbox_backlog{{{_matchers(namespace=namespace, app_kubernetes_io_name=agent)}}})"
    rules = {
        "rules": [{
            "seriesQuery": series,
            "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
            "name": {"matches": "^statefleet_turns_in_flight$", "as": "statefleet_turns_in_flight"},
            "metricsQuery": "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})",
        }],
        "externalRules": [{
            "seriesQuery": series,
            "resources": {"overrides": {"namespace": {"resource": "namespace"}}},
            "name": {"matches": "^statefleet_turns_in_flight$", "as": backlog_metric_name(config)},
            # <<.LabelMatchers>> holds the HPA's selector (agent, version) and the namespace.
            "metricsQuery": f"{backlog} * sum(<<.Series>>{{<<.LabelMatchers>>}}) / {everyone}",
        }],
    }
    return manifest("v1", "ConfigMap",
                    metadata(f"{agent}-prometheus-adapter-rules", namespace, agent_labels(config)),
                    data={"statefleet-rules.yaml": dump(rules)})
