"""A self-hosted Redis for the fleet: one server in a StatefulSet, its data on a PersistentVolume.

AOF with ``appendfsync everysec`` (a crash loses at most the last second; a restart loses nothing) and
``noeviction`` (Redis refuses writes when full rather than silently dropping conversations). For failover,
use a managed Redis or Sentinel (``store.redis.mode: external``; docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from . import _checkov
from .config import FleetConfig, SelfHostedRedis
from .manifest import Manifest, manifest
from .names import REDIS_PORT, metadata, redis_labels, redis_name, redis_selector

#: A high numeric user, as for the agent (the official image runs as any user; fsGroup opens /data to it).
REDIS_USER = 10001


def _redis(config: FleetConfig) -> SelfHostedRedis:
    assert isinstance(config.store.redis, SelfHostedRedis)
    return config.store.redis


def render_redis(config: FleetConfig) -> list[Manifest]:
    return [service_account(config), headless_service(config), stateful_set(config), disruption_budget(config)]


def service_account(config: FleetConfig) -> Manifest:
    return manifest("v1", "ServiceAccount", metadata(redis_name(config), config.agent.namespace, redis_labels(config)),
                    automountServiceAccountToken=False)


def headless_service(config: FleetConfig) -> Manifest:
    """``<agent>-redis-0.<agent>-redis`` and ``<agent>-redis``: the address the store URL names."""
    port = {"name": "tcp-redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}
    return manifest("v1", "Service", metadata(redis_name(config), config.agent.namespace, redis_labels(config)),
                    spec={"clusterIP": "None", "publishNotReadyAddresses": False, "selector": redis_selector(config),
                          "ports": [port]})


def disruption_budget(config: FleetConfig) -> Manifest:
    """One server: a node drain waits until you move it (``kubectl delete pod``) at a moment you choose."""
    return manifest("policy/v1", "PodDisruptionBudget",
                    metadata(redis_name(config), config.agent.namespace, redis_labels(config)),
                    spec={"minAvailable": 1, "selector": {"matchLabels": redis_selector(config)}})


def stateful_set(config: FleetConfig) -> Manifest:
    redis = _redis(config)
    password = {"secretKeyRef": {"name": redis.password_secret.name, "key": redis.password_secret.key}}
    ping = ["sh", "-c", "redis-cli -h 127.0.0.1 ping | grep -qx PONG"]
    container: dict[str, Any] = {
        "name": "redis",
        "image": redis.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--port", str(REDIS_PORT), "--dir", "/data", "--appendonly", "yes", "--appendfsync", "everysec",
                 "--maxmemory-policy", "noeviction", "--requirepass", "$(REDIS_PASSWORD)"],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "env": [{"name": "REDIS_PASSWORD", "valueFrom": password},
                {"name": "REDISCLI_AUTH", "valueFrom": password}],
        "resources": {"requests": {"cpu": redis.resources.requests.cpu, "memory": redis.resources.requests.memory},
                      "limits": redis.resources.effective_limits()},
        # Loading a large AOF answers LOADING for minutes: startup allows it, liveness only needs the socket.
        "startupProbe": {"exec": {"command": ping}, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 120},
        "readinessProbe": {"exec": {"command": ping}, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "timeoutSeconds": 3,
                          "failureThreshold": 6},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "runAsUser": REDIS_USER, "runAsGroup": REDIS_USER, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod = {
        "serviceAccountName": redis_name(config),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # Redis rewrites and fsyncs the AOF on SIGTERM before it exits.
        "terminationGracePeriodSeconds": 60,
        "securityContext": {"runAsNonRoot": True, "runAsUser": REDIS_USER, "runAsGroup": REDIS_USER,
                            "fsGroup": REDIS_USER, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    claim_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                  "resources": {"requests": {"storage": redis.storage}}}
    if redis.storage_class is not None:
        claim_spec["storageClassName"] = redis.storage_class
    spec = {
        "serviceName": redis_name(config),
        "replicas": 1,
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": redis_selector(config)},
        "template": {"metadata": {"labels": redis_labels(config),
                                  "annotations": {"kubectl.kubernetes.io/default-container": "redis"}},
                     "spec": pod},
        "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": redis_labels(config)}, "spec": claim_spec}],
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
    }
    skips = _checkov.pod_skips([redis.image], redis.resources.limits.cpu)
    return manifest("apps/v1", "StatefulSet", metadata(redis_name(config), config.agent.namespace,
                                                      redis_labels(config), _checkov.skip_annotations(skips)),
                    spec=spec)
