"""NetworkPolicies: the namespace denies everything, then each workload is opened for exactly what it needs.

The agent takes requests from the mesh gateway, the configured clients, its peers (forwarding) and
Prometheus; it reaches DNS, the store, its peers, the configured backends and the mesh's control plane.
The self-hosted Redis takes connections from the agent only.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .config import EgressRule, ExternalRedis, FleetConfig, GatewayApi, Istio, PodSource
from .manifest import Manifest, manifest
from .mesh_istio import ISTIOD_PORT, MERGED_METRICS_PORT
from .names import (
    REDIS_PORT,
    agent_labels,
    agent_name,
    agent_selector,
    common_labels,
    metadata,
    redis_labels,
    redis_name,
    redis_selector,
)

#: Linkerd's proxy: meshed connections arrive on 4143; its admin (metrics) port is 4191.
LINKERD_INBOUND_PORT = 4143
LINKERD_ADMIN_PORT = 4191
#: Linkerd's control plane: destination, identity and policy.
LINKERD_CONTROL_PORTS = (8086, 8080, 8090)


def render_network(config: FleetConfig) -> list[Manifest]:
    out = [default_deny(config), agent_policy(config)]
    if not isinstance(config.store.redis, ExternalRedis):
        out.append(redis_policy(config))
    return out


def default_deny(config: FleetConfig) -> Manifest:
    """Nothing in the namespace talks to anything unless a policy below says so."""
    return manifest("networking.k8s.io/v1", "NetworkPolicy",
                    metadata("default-deny", config.agent.namespace, common_labels(config)),
                    spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def peer(source: PodSource, own_namespace: str) -> dict[str, Any]:
    """A NetworkPolicy peer for pods of ``source`` (its own namespace when it names none)."""
    out: dict[str, Any] = {}
    if source.namespace is not None and source.namespace != own_namespace:
        out["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": source.namespace}}
    out["podSelector"] = {"matchLabels": dict(source.pod_labels)}
    return out


def _ports(numbers: list[int] | tuple[int, ...], protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": number} for number in numbers]


def _ip_blocks(rule: EgressRule) -> list[dict[str, Any]]:
    blocks = []
    for cidr in rule.cidrs:
        block: dict[str, Any] = {"cidr": cidr}
        inside = [excluded for excluded in rule.exclude if _within(excluded, cidr)]
        if inside:
            block["except"] = inside
        blocks.append({"ipBlock": block})
    return blocks


def _within(inner: str, outer: str) -> bool:
    a, b = ipaddress.ip_network(inner), ipaddress.ip_network(outer)
    if isinstance(a, ipaddress.IPv4Network) and isinstance(b, ipaddress.IPv4Network):
        return a.subnet_of(b)
    if isinstance(a, ipaddress.IPv6Network) and isinstance(b, ipaddress.IPv6Network):
        return a.subnet_of(b)
    return False


def _mesh_ports(config: FleetConfig) -> list[int]:
    """Where meshed traffic for the app port arrives (the app port itself, plus Linkerd's inbound)."""
    ports = [config.server.port]
    if isinstance(config.mesh, GatewayApi) and config.mesh.linkerd:
        ports.append(LINKERD_INBOUND_PORT)
    return ports


def _control_plane_egress(config: FleetConfig, namespace: str) -> list[dict[str, Any]]:
    if isinstance(config.mesh, Istio):
        return [{"to": [peer(config.mesh.control_plane, namespace)], "ports": _ports([ISTIOD_PORT])}]
    if isinstance(config.mesh, GatewayApi) and config.mesh.control_plane is not None:
        return [{"to": [peer(config.mesh.control_plane, namespace)], "ports": _ports(LINKERD_CONTROL_PORTS)}]
    return []


def _dns_egress(config: FleetConfig, namespace: str) -> dict[str, Any]:
    return {"to": [peer(config.network.dns, namespace)], "ports": _ports([53], "UDP") + _ports([53], "TCP")}


def agent_policy(config: FleetConfig) -> Manifest:
    namespace = config.agent.namespace
    app_ports = _ports(_mesh_ports(config))
    myself = {"podSelector": {"matchLabels": agent_selector(config)}}
    callers: list[dict[str, Any]] = []
    if isinstance(config.mesh, Istio) and config.mesh.gateway is not None:
        gateway = config.mesh.gateway
        callers.append(peer(PodSource(namespace=gateway.namespace, pod_labels=gateway.pod_labels), namespace))
    if isinstance(config.mesh, GatewayApi) and config.mesh.gateway is not None:
        callers.append(peer(config.mesh.gateway.pods, namespace))
    callers += [peer(client, namespace) for client in config.network.clients]
    callers.append(myself)
    scrape_ports = [MERGED_METRICS_PORT] if isinstance(config.mesh, Istio) else [config.server.port]
    if isinstance(config.mesh, GatewayApi) and config.mesh.linkerd:
        scrape_ports.append(LINKERD_ADMIN_PORT)
    ingress = [
        {"from": callers, "ports": app_ports},
        {"from": [peer(config.monitoring.prometheus, namespace)], "ports": _ports(scrape_ports)},
    ]

    egress = [_dns_egress(config, namespace)]
    if isinstance(config.store.redis, ExternalRedis):
        egress += [{"to": _ip_blocks(rule), "ports": _ports(rule.ports)} for rule in config.store.redis.egress]
    else:
        egress.append({"to": [{"podSelector": {"matchLabels": redis_selector(config)}}],
                       "ports": _ports([REDIS_PORT, *_mesh_ports(config)[1:]])})
    egress.append({"to": [myself], "ports": app_ports})
    egress += [{"to": _ip_blocks(backend), "ports": _ports(backend.ports)} for backend in config.network.backends]
    egress += _control_plane_egress(config, namespace)
    return manifest("networking.k8s.io/v1", "NetworkPolicy", metadata(agent_name(config), namespace,
                                                                      agent_labels(config)),
                    spec={"podSelector": {"matchLabels": agent_selector(config)}, "policyTypes": ["Ingress", "Egress"],
                          "ingress": ingress, "egress": egress})


def redis_policy(config: FleetConfig) -> Manifest:
    namespace = config.agent.namespace
    ports = [REDIS_PORT, *_mesh_ports(config)[1:]]
    ingress = [{"from": [{"podSelector": {"matchLabels": agent_selector(config)}}], "ports": _ports(ports)}]
    egress = [_dns_egress(config, namespace), *_control_plane_egress(config, namespace)]
    return manifest("networking.k8s.io/v1", "NetworkPolicy", metadata(redis_name(config), namespace,
                                                                      redis_labels(config)),
                    spec={"podSelector": {"matchLabels": redis_selector(config)}, "policyTypes": ["Ingress", "Egress"],
                          "ingress": ingress, "egress": egress})
