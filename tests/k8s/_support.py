"""Configs for the renderer's tests: the checked-in example, and variants of it built by changing a few keys."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from statefleet.k8s import FleetConfig, Manifest, parse_config, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "statefleet.yaml"
RENDERED = ROOT / "deploy" / "k8s"
REFRESH = "statefleet k8s render --config deploy/statefleet.yaml --out deploy/k8s"


def example() -> dict[str, Any]:
    """The example config as plain data, to change before parsing."""
    return dict(yaml.safe_load(EXAMPLE.read_text()))


def changed(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each dotted path in ``changes`` set (``None`` deletes the key); list items by index."""
    out = copy.deepcopy(data)
    for path, value in changes.items():
        node: Any = out
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key: Any = int(last) if isinstance(node, list) else last
        if value is None:
            del node[key]
        else:
            node[key] = value
    return out


def config_of(data: dict[str, Any]) -> FleetConfig:
    return parse_config(yaml.safe_dump(data), source="test.yaml")


def variant(**changes: Any) -> FleetConfig:
    """The example with ``changes`` (``server__drain_timeout_seconds=60`` sets server.drain_timeout_seconds)."""
    return config_of(changed(example(), {path.replace("__", "."): value for path, value in changes.items()}))


#: Configs that exercise every branch of the renderer; every test over "all variants" renders each.
VARIANTS: dict[str, dict[str, Any]] = {
    "example (Istio, KEDA, self-hosted Redis)": {},
    "hpa on the Prometheus adapter": {"autoscaling": {"kind": "hpa", "in_flight_per_pod": 100,
                                                      "backlog_per_pod": 150}},
    "external Redis (Sentinel ports)": {"store.redis": {"mode": "external", "egress": [
        {"cidrs": ["10.20.0.0/16"], "ports": [6379, 26379]}]}},
    "Linkerd with Gateway API": {"mesh": {"kind": "gateway-api", "gateway": {
        "name": "public", "namespace": "gateways", "section_name": "https", "hosts": ["support.example.com"],
        "pods": {"namespace": "gateways", "pod_labels": {"gateway.networking.k8s.io/gateway-name": "public"}}}}},
    "no mesh, an ingress controller as client": {"mesh": {"kind": "none"}, "network.clients": [
        {"namespace": "ingress-nginx", "pod_labels": {"app.kubernetes.io/name": "ingress-nginx"}}]},
    "Istio inside the mesh only, no TLS, clients by account": {
        "mesh": {"kind": "istio", "retry_attempts": 0},
        "network.clients": [{"namespace": "web", "service_account": "frontend"}, {"namespace": "jobs"}]},
    "long drain, grace computed": {"server.drain_timeout_seconds": 120, "server.pre_stop_seconds": 10,
                                   "server.termination_grace_period_seconds": None},
    "fractional drain, no preStop, grace exactly enough": {
        "server.drain_timeout_seconds": 0.5, "server.pre_stop_seconds": 0,
        "server.termination_grace_period_seconds": 1, "server.workers": 4},
    "three versions, digests, CPU limits": {
        "versions": [
            {"name": "v1", "image": "registry.example.com/support-agent@sha256:" + "a" * 64, "weight": 80,
             "replicas": {"min": 2, "max": 20}},
            {"name": "v2", "image": "registry.example.com/support-agent:1.5.0@sha256:" + "b" * 64, "weight": 15,
             "replicas": {"min": 1, "max": 5}, "app": "examples.support_agent_v2:agent"},
            {"name": "v3-rc1", "image": "localhost:5000/support-agent:2.0.0-rc1", "weight": 5,
             "replicas": {"min": 1, "max": 2}},
        ],
        "server.resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    },
}


def variant_config(name: str) -> FleetConfig:
    return config_of(changed(example(), VARIANTS[name]))


def of_kind(objects: list[Manifest], kind: str) -> list[dict[str, Any]]:
    return [item.body for item in objects if item.kind == kind]


def render_variant(name: str) -> list[Manifest]:
    return render(variant_config(name))


def statefleet(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statefleet", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=ROOT)
