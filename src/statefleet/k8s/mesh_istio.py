"""Istio: Gateway, VirtualService (pinned versions, then the weighted split), DestinationRule (version subsets,
circuit breaking), STRICT mTLS, an AuthorizationPolicy, and the sidecar's start and drain settings.

Retries are limited to failures where the request never reached the agent (a replayed ``POST`` would be a
second turn), and no route has a timeout: Istio's default is none, and a turn streamed over SSE or a
WebSocket lives as long as the conversation needs.
"""

from __future__ import annotations

import json
from typing import Any

from .config import FleetConfig, Istio
from .manifest import Manifest, manifest
from .names import (
    agent_labels,
    agent_name,
    agent_selector,
    cookie_regex,
    istio_principal,
    metadata,
    service_host,
)

NETWORKING = "networking.istio.io/v1"
SECURITY = "security.istio.io/v1"
#: Envoy retry conditions under which the agent never saw the request.
RETRY_ON = "connect-failure,refused-stream,reset-before-request"
#: The sidecar's port for xDS and certificates on istiod.
ISTIOD_PORT = 15012
#: The sidecar's merged Prometheus endpoint (the agent's /metrics plus Envoy's), outside mTLS.
MERGED_METRICS_PORT = 15020
MERGED_METRICS_PATH = "/stats/prometheus"


def _istio(config: FleetConfig) -> Istio:
    assert isinstance(config.mesh, Istio)
    return config.mesh


def pod_labels(config: FleetConfig) -> dict[str, str]:
    return {"sidecar.istio.io/inject": "true"}


def pod_annotations(config: FleetConfig) -> dict[str, str]:
    """The sidecar starts before the agent and keeps serving through preStop and the whole drain."""
    proxy = {"holdApplicationUntilProxyStarts": True,
             "terminationDrainDuration": f"{config.server.stop_seconds}s"}
    return {"proxy.istio.io/config": json.dumps(proxy, sort_keys=True, separators=(",", ":"))}


def render_istio(config: FleetConfig) -> list[Manifest]:
    out = []
    if _istio(config).gateway is not None:
        out.append(gateway(config))
    out += [virtual_service(config), destination_rule(config), peer_authentication(config),
            authorization_policy(config)]
    return out


def gateway(config: FleetConfig) -> Manifest:
    ingress = _istio(config).gateway
    assert ingress is not None
    servers: list[dict[str, Any]]
    if ingress.tls_secret is not None:
        servers = [
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": list(ingress.hosts),
             "tls": {"mode": "SIMPLE", "credentialName": ingress.tls_secret}},
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": list(ingress.hosts),
             "tls": {"httpsRedirect": True}},
        ]
    else:
        servers = [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": list(ingress.hosts)}]
    return manifest(NETWORKING, "Gateway", metadata(agent_name(config), config.agent.namespace, agent_labels(config)),
                    spec={"selector": dict(ingress.pod_labels), "servers": servers})


def virtual_service(config: FleetConfig) -> Manifest:
    """Pinned conversations go to their version (header, then cookie); new ones follow the weights."""
    mesh, host, port = _istio(config), service_host(config), config.server.port
    retries = {"attempts": mesh.retry_attempts, "retryOn": RETRY_ON} if mesh.retry_attempts else {"attempts": 0}
    header, cookie = config.routing.version_header.lower(), config.routing.version_cookie
    routes: list[dict[str, Any]] = []
    for version in config.versions:
        routes.append({
            "name": f"pinned-{version.name}",
            "match": [{"headers": {header: {"exact": version.name}}},
                      {"headers": {"cookie": {"regex": cookie_regex(cookie, version.name)}}}],
            "route": [{"destination": {"host": host, "subset": version.name, "port": {"number": port}}}],
            "retries": retries,
        })
    routes.append({
        "name": "new-conversations",
        "route": [{"destination": {"host": host, "subset": version.name, "port": {"number": port}},
                   "weight": version.weight} for version in config.versions],
        "retries": retries,
    })
    hosts = [*(mesh.gateway.hosts if mesh.gateway else []), host]
    gateways = [f"{config.agent.namespace}/{agent_name(config)}", "mesh"] if mesh.gateway else ["mesh"]
    return manifest(NETWORKING, "VirtualService",
                    metadata(agent_name(config), config.agent.namespace, agent_labels(config)), routing=True,
                    spec={"hosts": hosts, "gateways": gateways, "http": routes})


def destination_rule(config: FleetConfig) -> Manifest:
    mesh = _istio(config)
    pool, outlier = mesh.connection_pool, mesh.outlier_detection
    policy = {
        # Turns last seconds and streams minutes: send each request to the pod with the fewest.
        "loadBalancer": {"simple": "LEAST_REQUEST"},
        "connectionPool": {
            "tcp": {"maxConnections": pool.max_connections, "connectTimeout": f"{pool.connect_timeout_seconds:g}s",
                    "tcpKeepalive": {"time": "300s", "interval": "30s"}},
            "http": {"http1MaxPendingRequests": pool.max_pending_requests, "http2MaxRequests": pool.max_requests,
                     # Retries are the VirtualService's, on unsent requests only; cap them fleet-wide too.
                     "maxRetries": max(1, pool.max_requests // 10)},
        },
        "outlierDetection": {"consecutive5xxErrors": outlier.consecutive_5xx,
                             "interval": f"{outlier.interval_seconds}s",
                             "baseEjectionTime": f"{outlier.base_ejection_seconds}s",
                             "maxEjectionPercent": outlier.max_ejection_percent},
        "tls": {"mode": "ISTIO_MUTUAL"},
    }
    subsets = [{"name": version.name, "labels": {"version": version.name}} for version in config.versions]
    return manifest(NETWORKING, "DestinationRule",
                    metadata(agent_name(config), config.agent.namespace, agent_labels(config)),
                    spec={"host": service_host(config), "trafficPolicy": policy, "subsets": subsets})


def peer_authentication(config: FleetConfig) -> Manifest:
    return manifest(SECURITY, "PeerAuthentication",
                    metadata(agent_name(config), config.agent.namespace, agent_labels(config)),
                    spec={"selector": {"matchLabels": agent_selector(config)}, "mtls": {"mode": "STRICT"}})


def authorization_policy(config: FleetConfig) -> Manifest:
    """Only the ingress gateway, the agent's own pods (forwarding) and the configured clients may call."""
    mesh, namespace = _istio(config), config.agent.namespace
    principals = [istio_principal(config, namespace, agent_name(config))]
    if mesh.gateway is not None:
        principals.append(istio_principal(config, mesh.gateway.namespace, mesh.gateway.service_account))
    namespaces: list[str] = []
    for client in config.network.clients:
        client_namespace = client.namespace or namespace
        if client.service_account is not None:
            principals.append(istio_principal(config, client_namespace, client.service_account))
        elif client_namespace not in namespaces:
            namespaces.append(client_namespace)
    to = [{"operation": {"ports": [str(config.server.port)]}}]
    rules = [{"from": [{"source": {"principals": principals}}], "to": to}]
    if namespaces:
        rules.append({"from": [{"source": {"namespaces": namespaces}}], "to": to})
    return manifest(SECURITY, "AuthorizationPolicy", metadata(agent_name(config), namespace, agent_labels(config)),
                    spec={"selector": {"matchLabels": agent_selector(config)}, "action": "ALLOW", "rules": rules})
