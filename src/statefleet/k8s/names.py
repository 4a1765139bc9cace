"""The names and labels every rendered object agrees on, in one place.

Other parts of statefleet build on these: forwarding reaches a version through its Service
(:func:`version_url_template`, ``http://<agent>-{version}:<port>``), and the mesh routes a pinned conversation
by the header and cookie named in the config's ``routing`` section.
"""

from __future__ import annotations

from typing import Any

from .config import FleetConfig, Version

#: The environment variable carrying :func:`version_url_template` into every agent pod.
VERSION_URL_TEMPLATE_ENV = "STATEFLEET_VERSION_URL_TEMPLATE"
#: The container port's name; Services and probes refer to it.
HTTP_PORT_NAME = "http"
#: Where a pod's liveness probe looks: the process answers, whatever the store does.
LIVENESS_PATH = "/healthz"
#: Where readiness looks: the store answers and the instance is not draining.
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"
REDIS_PORT = 6379


def agent_name(config: FleetConfig) -> str:
    """The agent's Service (every version behind it), ServiceAccount and most single objects."""
    return config.agent.name


def version_name(config: FleetConfig, version: Version) -> str:
    """One version's Deployment, Service, PodDisruptionBudget and autoscaler."""
    return f"{config.agent.name}-{version.name}"


def redis_name(config: FleetConfig) -> str:
    """The self-hosted Redis' StatefulSet, headless Service and the rest of its objects."""
    return f"{config.agent.name}-redis"


def service_host(config: FleetConfig) -> str:
    """The agent Service's cluster DNS name."""
    return f"{config.agent.name}.{config.agent.namespace}.svc.cluster.local"


def version_url_template(config: FleetConfig) -> str:
    """Where an instance reaches a version it forwards to; ``{version}`` is replaced by the version's name."""
    return f"http://{config.agent.name}-{{version}}:{config.server.port}"


def common_labels(config: FleetConfig) -> dict[str, str]:
    """Labels on every object of the fleet."""
    return {"app.kubernetes.io/part-of": config.agent.name, "app.kubernetes.io/managed-by": "statefleet"}


def agent_selector(config: FleetConfig) -> dict[str, str]:
    """Selects the agent's pods, every version."""
    return {"app.kubernetes.io/name": config.agent.name, "app.kubernetes.io/component": "agent"}


def version_selector(config: FleetConfig, version: Version) -> dict[str, str]:
    """Selects one version's pods (the ``version`` label is also the mesh's subset key)."""
    return {**agent_selector(config), "version": version.name}


def agent_labels(config: FleetConfig) -> dict[str, str]:
    """Labels on the objects of the agent as a whole."""
    return {**agent_selector(config), "app.kubernetes.io/instance": config.agent.name, **common_labels(config)}


def version_labels(config: FleetConfig, version: Version) -> dict[str, str]:
    """Labels on one version's objects and pods (``app``/``version`` are also what Istio's telemetry reads)."""
    return {**agent_labels(config), "app.kubernetes.io/version": version.name, "app": config.agent.name,
            "version": version.name}


def redis_selector(config: FleetConfig) -> dict[str, str]:
    return {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": redis_name(config)}


def redis_labels(config: FleetConfig) -> dict[str, str]:
    return {**redis_selector(config), "app.kubernetes.io/component": "store", **common_labels(config)}


def metadata(name: str, namespace: str | None, labels: dict[str, str],
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """An object's metadata, keys in the usual order."""
    out: dict[str, Any] = {"name": name}
    if namespace is not None:
        out["namespace"] = namespace
    out["labels"] = dict(labels)
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def cookie_regex(cookie: str, value: str) -> str:
    """An RE2 full match of a Cookie header that holds ``cookie=value`` among others."""
    return rf"^(.*;\s*)?{_re2_escape(cookie)}={_re2_escape(value)}(;.*)?$"


def _re2_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in r".^$|?*+()[]{}\\" else char for char in text)


def istio_principal(config: FleetConfig, namespace: str, service_account: str) -> str:
    """The SPIFFE-style identity Istio gives a ServiceAccount's pods."""
    trust_domain = getattr(config.mesh, "trust_domain", "cluster.local")
    return f"{trust_domain}/ns/{namespace}/sa/{service_account}"
