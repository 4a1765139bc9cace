"""Gateway API HTTPRoutes (Linkerd and other GAMMA meshes): the same pinned routes and weighted split as Istio's.

One route attaches to the agent's Service (traffic inside the mesh), one to the Gateway named in the config
(traffic from outside). Neither sets a timeout ("0s": none, so streams live on) nor a retry: Linkerd retries
only requests it never sent, and a replayed ``POST`` would be a second turn.
"""

from __future__ import annotations

from typing import Any

from .config import FleetConfig, GatewayApi
from .manifest import Manifest, manifest
from .names import agent_labels, agent_name, cookie_regex, metadata, version_name

GATEWAY_API = "gateway.networking.k8s.io/v1"


def _mesh(config: FleetConfig) -> GatewayApi:
    assert isinstance(config.mesh, GatewayApi)
    return config.mesh


def linkerd_pod_annotations(config: FleetConfig) -> dict[str, str]:
    """Linkerd's proxy: started before the agent, and serving it until preStop and the drain are over."""
    return {"linkerd.io/inject": "enabled", "config.linkerd.io/proxy-await": "enabled",
            "config.alpha.linkerd.io/proxy-wait-before-exit-seconds": str(config.server.stop_seconds)}


def render_gateway_api(config: FleetConfig) -> list[Manifest]:
    mesh = _mesh(config)
    port = config.server.port
    out = [http_route(config, agent_name(config),
                      [{"group": "", "kind": "Service", "name": agent_name(config), "port": port}], hostnames=[])]
    if mesh.gateway is not None:
        parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                  "name": mesh.gateway.name, "namespace": mesh.gateway.namespace}
        if mesh.gateway.section_name is not None:
            parent["sectionName"] = mesh.gateway.section_name
        out.append(http_route(config, f"{agent_name(config)}-ingress", [parent], hostnames=list(mesh.gateway.hosts)))
    return out


def http_route(config: FleetConfig, name: str, parents: list[dict[str, Any]], hostnames: list[str]) -> Manifest:
    port, header, cookie = config.server.port, config.routing.version_header, config.routing.version_cookie
    no_timeout = {"request": "0s"}
    rules: list[dict[str, Any]] = []
    for version in config.versions:
        backend = {"name": version_name(config, version), "port": port}
        rules.append({
            "name": f"pinned-{version.name}",
            "matches": [
                {"headers": [{"type": "Exact", "name": header, "value": version.name}]},
                {"headers": [{"type": "RegularExpression", "name": "Cookie",
                              "value": cookie_regex(cookie, version.name)}]},
            ],
            "backendRefs": [backend],
            "timeouts": no_timeout,
        })
    rules.append({
        "name": "new-conversations",
        "backendRefs": [{"name": version_name(config, version), "port": port, "weight": version.weight}
                        for version in config.versions],
        "timeouts": no_timeout,
    })
    spec: dict[str, Any] = {"parentRefs": parents}
    if hostnames:
        spec["hostnames"] = hostnames
    spec["rules"] = rules
    return manifest(GATEWAY_API, "HTTPRoute", metadata(name, config.agent.namespace, agent_labels(config)),
                    routing=True, spec=spec)
