"""The agent's workload: its Namespace, ServiceAccount, Services, and per version a Deployment and a PDB.

A pod is built to stop without losing a turn: readiness fails as soon as it drains (or when the store is
unreachable), the ``preStop`` sleep lets endpoints forget it before SIGTERM, and the grace period covers the
sleep plus the drain. Liveness never looks at the store, so a Redis blip makes pods unready, never restarted.
"""

from __future__ import annotations

from typing import Any

from . import _checkov, mesh_gateway_api, mesh_istio
from .config import FleetConfig, GatewayApi, Istio, Version
from .manifest import Manifest, manifest
from .names import (
    HTTP_PORT_NAME,
    LIVENESS_PATH,
    METRICS_PATH,
    READINESS_PATH,
    VERSION_URL_TEMPLATE_ENV,
    agent_labels,
    agent_name,
    agent_selector,
    common_labels,
    metadata,
    version_labels,
    version_name,
    version_selector,
    version_url_template,
)

#: The unprivileged user and group the container runs as (the image's numeric user).
RUN_AS = 10001


def render_workload(config: FleetConfig) -> list[Manifest]:
    """Namespace, ServiceAccount, the agent's Service, then per version its Service, Deployment and PDB."""
    out = [namespace(config), service_account(config), agent_service(config)]
    out += [version_service(config, version) for version in config.versions]
    out += [deployment(config, version) for version in config.versions]
    out += [disruption_budget(config, version) for version in config.versions]
    return out


def namespace(config: FleetConfig) -> Manifest:
    level = config.agent.pod_security
    labels = {**common_labels(config), "pod-security.kubernetes.io/enforce": level,
              "pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/warn": "restricted"}
    annotations: dict[str, str] = {}
    if isinstance(config.mesh, Istio):
        labels["istio-injection"] = "enabled"
    elif isinstance(config.mesh, GatewayApi) and config.mesh.linkerd:
        annotations["linkerd.io/inject"] = "enabled"
    return manifest("v1", "Namespace", metadata(config.agent.namespace, None, labels, annotations))


def service_account(config: FleetConfig) -> Manifest:
    """The pods' identity (Istio's mTLS principal); no API token: statefleet never calls the Kubernetes API."""
    return manifest("v1", "ServiceAccount", metadata(agent_name(config), config.agent.namespace, agent_labels(config)),
                    automountServiceAccountToken=False)


def _service(config: FleetConfig, name: str, labels: dict[str, str], selector: dict[str, str]) -> Manifest:
    port = {"name": HTTP_PORT_NAME, "port": config.server.port, "targetPort": HTTP_PORT_NAME, "protocol": "TCP",
            "appProtocol": "http"}
    return manifest("v1", "Service", metadata(name, config.agent.namespace, labels),
                    spec={"type": "ClusterIP", "selector": selector, "ports": [port]})


def agent_service(config: FleetConfig) -> Manifest:
    """Every version behind one name: what clients and the mesh route call."""
    return _service(config, agent_name(config), agent_labels(config), agent_selector(config))


def version_service(config: FleetConfig, version: Version) -> Manifest:
    """One version: where the mesh sends its share and where instances forward a pinned conversation."""
    return _service(config, version_name(config, version), version_labels(config, version),
                    version_selector(config, version))


def disruption_budget(config: FleetConfig, version: Version) -> Manifest:
    """One pod of a version at a time during voluntary disruptions; unready pods may always go."""
    return manifest("policy/v1", "PodDisruptionBudget",
                    metadata(version_name(config, version), config.agent.namespace, version_labels(config, version)),
                    spec={"maxUnavailable": 1, "selector": {"matchLabels": version_selector(config, version)},
                          "unhealthyPodEvictionPolicy": "AlwaysAllow"})


def deployment(config: FleetConfig, version: Version) -> Manifest:
    """One version's pods. No ``replicas``: the autoscaler owns it, so re-applying never resets the fleet."""
    labels = version_labels(config, version)
    pod_labels, pod_annotations = dict(labels), _pod_annotations(config)
    if isinstance(config.mesh, Istio):
        pod_labels.update(mesh_istio.pod_labels(config))
    spec = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": version_selector(config, version)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {"metadata": {"labels": pod_labels, "annotations": pod_annotations},
                     "spec": pod_spec(config, version)},
    }
    skips = _checkov.pod_skips([version.image], config.server.resources.limits.cpu)
    return manifest("apps/v1", "Deployment", metadata(version_name(config, version), config.agent.namespace, labels,
                                                      _checkov.skip_annotations(skips)),
                    spec=spec)


def _pod_annotations(config: FleetConfig) -> dict[str, str]:
    # prometheus.io/*: where the metrics are; Istio merges them into its own scrape endpoint under mTLS.
    annotations = {"kubectl.kubernetes.io/default-container": "agent", "prometheus.io/scrape": "true",
                   "prometheus.io/port": str(config.server.port), "prometheus.io/path": METRICS_PATH}
    if isinstance(config.mesh, Istio):
        annotations.update(mesh_istio.pod_annotations(config))
    elif isinstance(config.mesh, GatewayApi) and config.mesh.linkerd:
        annotations.update(mesh_gateway_api.linkerd_pod_annotations(config))
    return annotations


def pod_spec(config: FleetConfig, version: Version) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": agent_name(config),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": config.grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "topologySpreadConstraints": [
            _spread(config, version, "topology.kubernetes.io/zone"),
            _spread(config, version, "kubernetes.io/hostname"),
        ],
    }
    if config.agent.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in config.agent.image_pull_secrets]
    spec["containers"] = [container(config, version)]
    spec["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    return spec


def _spread(config: FleetConfig, version: Version, key: str) -> dict[str, Any]:
    # ScheduleAnyway: a missing zone never leaves a pod pending; pod-template-hash spreads each rollout anew.
    return {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": version_selector(config, version)},
            "matchLabelKeys": ["pod-template-hash"]}


def container(config: FleetConfig, version: Version) -> dict[str, Any]:
    server = config.server
    probe = {"httpGet": {"path": LIVENESS_PATH, "port": HTTP_PORT_NAME}}
    return {
        "name": "agent",
        "image": version.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": server.port, "protocol": "TCP"}],
        "env": environment(config, version),
        "resources": {"requests": {"cpu": server.resources.requests.cpu, "memory": server.resources.requests.memory},
                      "limits": server.resources.effective_limits()},
        # Started: the process serves HTTP (the store may still be coming up; readiness waits for it).
        "startupProbe": {**probe, "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 60},
        # Ready: the store answers and the instance is not draining; failing only takes it out of endpoints.
        "readinessProbe": {"httpGet": {"path": READINESS_PATH, "port": HTTP_PORT_NAME}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 2, "successThreshold": 1},
        # Alive: the event loop answers. Never the store: a Redis outage must not restart every pod.
        "livenessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "lifecycle": {"preStop": {"sleep": {"seconds": server.pre_stop_seconds}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def environment(config: FleetConfig, version: Version) -> list[dict[str, Any]]:
    """``statefleet serve``'s settings; the store URL only as a reference to its Secret."""
    server, secret = config.server, config.store.url_secret
    env: list[dict[str, Any]] = [
        {"name": "STATEFLEET_APP", "value": version.app or config.agent.app},
        {"name": "STATEFLEET_STORE", "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}},
        {"name": "STATEFLEET_HOST", "value": "0.0.0.0"},
        {"name": "STATEFLEET_PORT", "value": str(server.port)},
        {"name": "STATEFLEET_WORKERS", "value": str(server.workers)},
        {"name": "STATEFLEET_MAX_IN_FLIGHT", "value": str(server.max_in_flight)},
        {"name": "STATEFLEET_DRAIN_TIMEOUT", "value": f"{server.drain_timeout_seconds:g}"},
        {"name": "STATEFLEET_LEASE_TTL", "value": f"{server.lease_ttl_seconds:g}"},
        {"name": "STATEFLEET_LOG_LEVEL", "value": server.log_level},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        # Peers reach this instance at its pod address (fleet registry), or a version through its Service.
        {"name": "STATEFLEET_ADVERTISE", "value": f"$(POD_IP):{server.port}"},
        {"name": VERSION_URL_TEMPLATE_ENV, "value": version_url_template(config)},
        {"name": "TMPDIR", "value": "/tmp"},
    ]
    env += [{"name": name, "value": value} for name, value in sorted(server.env.items())]
    env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
            for name, ref in sorted(server.secret_env.items())]
    return env
