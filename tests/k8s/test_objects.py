"""What the rendered objects promise, for every variant of the config: pods that stop without losing a turn,
locked down, their store URL only in a Secret; routing that never replays a request the agent saw; autoscaling
on the agent's own signals; each object valid against its real schema (tests/deploy/validate.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import yaml

from deploy.validate import validate_object
from observability.promql import metric_names
from statefleet.k8s import Manifest, version_url_template
from statefleet.k8s.config import FleetConfig, Keda
from statefleet.observability.metrics import Metrics

from ._support import ROOT, VARIANTS, of_kind, render_variant, variant_config

ALL = list(VARIANTS)
EXAMPLE = ALL[0]
SAFE_RETRIES = {"connect-failure", "refused-stream", "reset-before-request"}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def stop_seconds(pod: dict[str, Any]) -> float:
    """preStop sleep + the drain timeout the container is given."""
    container = pod["containers"][0]
    drain = float(env_of(container)["STATEFLEET_DRAIN_TIMEOUT"]["value"])
    return float(container["lifecycle"]["preStop"]["sleep"]["seconds"]) + drain


@pytest.mark.parametrize("name", ALL)
def test_grace_covers_pre_stop_and_drain_and_sidecars_outlive_the_drain(name: str) -> None:
    deployments = of_kind(render_variant(name), "Deployment")
    assert deployments
    for deployment in deployments:
        template = deployment["spec"]["template"]
        pod = template["spec"]
        assert pod["terminationGracePeriodSeconds"] >= stop_seconds(pod), deployment["metadata"]["name"]
        annotations = template["metadata"]["annotations"]
        if "proxy.istio.io/config" in annotations:
            proxy = json.loads(annotations["proxy.istio.io/config"])
            drain = float(proxy["terminationDrainDuration"].removesuffix("s"))
            assert stop_seconds(pod) <= drain <= pod["terminationGracePeriodSeconds"]
            assert proxy["holdApplicationUntilProxyStarts"] is True
        if "linkerd.io/inject" in annotations:
            wait = float(annotations["config.alpha.linkerd.io/proxy-wait-before-exit-seconds"])
            assert stop_seconds(pod) <= wait <= pod["terminationGracePeriodSeconds"]
            assert annotations["config.linkerd.io/proxy-await"] == "enabled"


@pytest.mark.parametrize("name", ALL)
def test_probes_mean_what_they_say(name: str) -> None:
    for deployment in of_kind(render_variant(name), "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        # Liveness (and startup) never depend on the store; readiness does, and fails while draining.
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        liveness = container["livenessProbe"]
        # A restart takes at least 30 s of failed looks: a slow event loop is not a dead one.
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30


@pytest.mark.parametrize("name", ALL)
def test_pods_are_locked_down(name: str) -> None:
    objects = render_variant(name)
    pods = [item["spec"]["template"]["spec"] for item in of_kind(objects, "Deployment") + of_kind(objects,
                                                                                                  "StatefulSet")]
    for pod in pods:
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsUser"] >= 10000 and context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "memory" in container["resources"]["limits"] and "cpu" in container["resources"]["requests"]
    for account in of_kind(objects, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    agent_pod = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert {"name": "tmp", "mountPath": "/tmp"} in agent_pod["containers"][0]["volumeMounts"]
    assert {spread["topologyKey"] for spread in agent_pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}


@pytest.mark.parametrize("name", ALL)
def test_the_store_url_comes_only_from_its_secret(name: str) -> None:
    config = variant_config(name)
    objects = render_variant(name)
    for deployment in of_kind(objects, "Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["STATEFLEET_STORE"] == {"name": "STATEFLEET_STORE", "valueFrom": {"secretKeyRef": {
            "name": config.store.url_secret.name, "key": config.store.url_secret.key}}}
    text = "".join(yaml.safe_dump(item.body) for item in objects)
    assert "redis://" not in text and "rediss://" not in text
    assert not of_kind(objects, "Secret")


@pytest.mark.parametrize("name", ALL)
def test_every_version_gets_its_deployment_service_pdb_and_autoscaler(name: str) -> None:
    config, objects = variant_config(name), render_variant(name)
    autoscaler = "ScaledObject" if config.autoscaling.kind == "keda" else "HorizontalPodAutoscaler"
    for version in config.versions:
        service = version_url_template(config).format(version=version.name).split("//")[1].split(":")[0]
        assert service == f"{config.agent.name}-{version.name}"
        for kind in ("Deployment", "Service", "PodDisruptionBudget", autoscaler):
            assert service in [body["metadata"]["name"] for body in of_kind(objects, kind)], (kind, service)
        deployment = next(body for body in of_kind(objects, "Deployment") if body["metadata"]["name"] == service)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["version"] == labels["app.kubernetes.io/version"] == version.name
        assert labels["app.kubernetes.io/name"] == config.agent.name
        assert "replicas" not in deployment["spec"]  # the autoscaler owns it
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == version.image
        assert env_of(container)["STATEFLEET_APP"]["value"] == (version.app or config.agent.app)


@pytest.mark.parametrize("name", ALL)
def test_every_object_is_valid_against_its_schema(name: str) -> None:
    for item in render_variant(name):
        validate_object(item.body)


def routing_weights(config: FleetConfig, objects: list[Manifest]) -> list[dict[str, int]]:
    found = []
    for body in of_kind(objects, "VirtualService"):
        routes = {route["name"]: route for route in body["spec"]["http"]}
        found.append({d["destination"]["subset"]: d["weight"] for d in routes["new-conversations"]["route"]})
    for body in of_kind(objects, "HTTPRoute"):
        rules = {rule["name"]: rule for rule in body["spec"]["rules"]}
        prefix = f"{config.agent.name}-"
        refs = rules["new-conversations"]["backendRefs"]
        found.append({ref["name"].removeprefix(prefix): ref["weight"] for ref in refs})
    return found


@pytest.mark.parametrize("name", ALL)
def test_routes_split_new_conversations_by_the_weights_and_pin_the_rest(name: str) -> None:
    config, objects = variant_config(name), render_variant(name)
    weights = routing_weights(config, objects)
    if config.mesh.kind == "none":
        assert weights == []
        return
    assert weights and all(found == {v.name: v.weight for v in config.versions} for found in weights)
    for body in of_kind(objects, "VirtualService"):
        pinned = [route for route in body["spec"]["http"] if route["name"].startswith("pinned-")]
        assert [route["route"][0]["destination"]["subset"] for route in pinned] == [v.name for v in config.versions]
        for route in pinned:
            version = route["name"].removeprefix("pinned-")
            assert route["match"][0]["headers"]["x-statefleet-version"] == {"exact": version}
    for body in of_kind(objects, "HTTPRoute"):
        for rule in body["spec"]["rules"]:
            assert rule["timeouts"] == {"request": "0s"}  # no timeout: streams live on


@pytest.mark.parametrize("name", [n for n in ALL if variant_config(n).mesh.kind == "istio"])
def test_istio_retries_only_what_never_reached_the_agent_and_never_times_out_a_stream(name: str) -> None:
    objects = render_variant(name)
    for route in of_kind(objects, "VirtualService")[0]["spec"]["http"]:
        assert "timeout" not in route  # Istio's default: none (a "0s" is refused by the CRD)
        retries = route["retries"]
        assert "perTryTimeout" not in retries
        if retries["attempts"]:
            assert set(retries["retryOn"].split(",")) <= SAFE_RETRIES
    (peer,) = of_kind(objects, "PeerAuthentication")
    assert peer["spec"]["mtls"] == {"mode": "STRICT"}
    (policy,) = of_kind(objects, "AuthorizationPolicy")
    principals = policy["spec"]["rules"][0]["from"][0]["source"]["principals"]
    assert "cluster.local/ns/support/sa/support" in principals  # peers, for forwarding
    (rule,) = of_kind(objects, "DestinationRule")
    assert [subset["labels"] for subset in rule["spec"]["subsets"]] == [
        {"version": v.name} for v in variant_config(name).versions]
    assert {"outlierDetection", "connectionPool"} <= set(rule["spec"]["trafficPolicy"])


def test_istio_gateway_serves_tls_and_the_policy_admits_its_identity() -> None:
    objects = render_variant(EXAMPLE)
    (gateway,) = of_kind(objects, "Gateway")
    https = gateway["spec"]["servers"][0]
    assert https["tls"] == {"mode": "SIMPLE", "credentialName": "support-example-com-tls"}
    assert gateway["spec"]["servers"][1]["tls"] == {"httpsRedirect": True}
    policy = of_kind(objects, "AuthorizationPolicy")[0]
    assert ("cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
            in policy["spec"]["rules"][0]["from"][0]["source"]["principals"])


def test_clients_without_an_account_are_admitted_by_namespace() -> None:
    policy = of_kind(render_variant("Istio inside the mesh only, no TLS, clients by account"),
                     "AuthorizationPolicy")[0]
    assert "cluster.local/ns/web/sa/frontend" in policy["spec"]["rules"][0]["from"][0]["source"]["principals"]
    assert policy["spec"]["rules"][1]["from"][0]["source"] == {"namespaces": ["jobs"]}


def exported_metrics() -> set[str]:
    metrics = Metrics("support", "v1")
    metrics.fleet._backlog = 0  # as after a scrape read the store
    return {family.name for family in metrics.registry.collect()}


def test_keda_scales_on_in_flight_turns_and_the_backlog_with_cpu_as_fallback() -> None:
    objects = render_variant(EXAMPLE)
    config = variant_config(EXAMPLE)
    for scaled in of_kind(objects, "ScaledObject"):
        triggers = {trigger["name"]: trigger for trigger in scaled["spec"]["triggers"]}
        assert set(triggers) == {"in-flight-turns", "backlog", "cpu-fallback"}
        assert "statefleet_turns_in_flight" in triggers["in-flight-turns"]["metadata"]["query"]
        assert "statefleet_inbox_backlog" in triggers["backlog"]["metadata"]["query"]
        for trigger in ("in-flight-turns", "backlog"):
            assert triggers[trigger]["metricType"] == "AverageValue"
            assert isinstance(config.autoscaling, Keda)
            assert triggers[trigger]["metadata"]["serverAddress"] == config.autoscaling.prometheus_url
            assert metric_names(triggers[trigger]["metadata"]["query"]) <= exported_metrics()
        assert int(triggers["cpu-fallback"]["metadata"]["value"]) >= 80
        assert_scales_down_slowly(scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"], config)


def assert_scales_down_slowly(behavior: dict[str, Any], config: FleetConfig) -> None:
    down = behavior["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 60
    for policy in down["policies"]:
        # No pod leaves before the previous ones could finish their drain.
        assert policy["periodSeconds"] >= config.grace_seconds
        assert (policy["type"] == "Pods" and policy["value"] == 1) or policy["type"] == "Percent"


def test_hpa_variant_reads_the_adapter_metrics_it_renders_the_rules_for() -> None:
    config = variant_config("hpa on the Prometheus adapter")
    objects = render_variant("hpa on the Prometheus adapter")
    assert not of_kind(objects, "ScaledObject")
    (rules_map,) = [body for body in of_kind(objects, "ConfigMap") if "adapter" in body["metadata"]["name"]]
    rules = yaml.safe_load(rules_map["data"]["statefleet-rules.yaml"])
    external = {rule["name"]["as"] for rule in rules["externalRules"]}
    pods = {rule["name"]["as"] for rule in rules["rules"]}
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert len(hpas) == len(config.versions)
    for hpa in hpas:
        metrics = {metric["type"]: metric for metric in hpa["spec"]["metrics"]}
        assert metrics["Pods"]["pods"]["metric"]["name"] in pods
        assert metrics["Pods"]["pods"]["target"]["averageValue"] == "100"
        assert metrics["External"]["external"]["metric"]["name"] in external
        assert metrics["External"]["external"]["metric"]["selector"]["matchLabels"]["version"] == \
            hpa["metadata"]["labels"]["version"]
        assert metrics["Resource"]["resource"]["name"] == "cpu"
        assert_scales_down_slowly(hpa["spec"]["behavior"], config)
    for rule in rules["rules"] + rules["externalRules"]:
        query = rule["metricsQuery"].replace("<<.Series>>", "statefleet_turns_in_flight")
        query = query.replace("<<.LabelMatchers>>", 'version="v1"').replace("<<.GroupBy>>", "pod")
        assert metric_names(query) <= exported_metrics(), query


def test_self_hosted_redis_keeps_its_data() -> None:
    objects = render_variant(EXAMPLE)
    (statefulset,) = of_kind(objects, "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(container["args"])
    assert "--appendonly yes" in args and "--appendfsync everysec" in args and "--maxmemory-policy noeviction" in args
    assert "$(REDIS_PASSWORD)" in args
    assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "support-store", "key": "redis-password"}
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert "tcpSocket" in container["livenessProbe"]  # a loading AOF is alive
    (service,) = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "support-redis"]
    assert service["spec"]["clusterIP"] == "None"
    assert "support-redis" in [pdb["metadata"]["name"] for pdb in of_kind(objects, "PodDisruptionBudget")]


def egress_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    return {(port["protocol"], port["port"]) for rule in policy["spec"]["egress"] for port in rule["ports"]}


@pytest.mark.parametrize("name", ALL)
def test_network_policies_deny_by_default_and_open_only_what_is_needed(name: str) -> None:
    config, objects = variant_config(name), render_variant(name)
    policies = {body["metadata"]["name"]: body for body in of_kind(objects, "NetworkPolicy")}
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    agent = policies[config.agent.name]
    assert agent["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {("UDP", 53), ("TCP", 53), ("TCP", config.server.port)} <= egress_ports(agent)
    for backend in config.network.backends:
        blocks = [peer["ipBlock"]["cidr"] for rule in agent["spec"]["egress"] for peer in rule["to"]
                  if "ipBlock" in peer]
        assert set(backend.cidrs) <= set(blocks)
    callers = agent["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": config.agent.name,
                                            "app.kubernetes.io/component": "agent"}}} in callers  # peers
    if config.store.redis.mode == "self-hosted":
        assert ("TCP", 6379) in egress_ports(agent)
        redis = policies[f"{config.agent.name}-redis"]
        assert redis["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": config.agent.name, "app.kubernetes.io/component": "agent"}}}]
    else:
        assert f"{config.agent.name}-redis" not in policies
        assert not of_kind(objects, "StatefulSet")
        assert {("TCP", 6379), ("TCP", 26379)} <= egress_ports(agent)
        assert any(peer.get("ipBlock") == {"cidr": "10.20.0.0/16"} for rule in agent["spec"]["egress"]
                   for peer in rule["to"])


def test_linkerd_variant_injects_the_proxy_and_routes_with_gateway_api_only() -> None:
    objects = render_variant("Linkerd with Gateway API")
    kinds = {item.kind for item in objects}
    assert not kinds & {"VirtualService", "DestinationRule", "Gateway", "PeerAuthentication", "AuthorizationPolicy"}
    (namespace,) = of_kind(objects, "Namespace")
    assert namespace["metadata"]["annotations"] == {"linkerd.io/inject": "enabled"}
    routes = {body["metadata"]["name"]: body for body in of_kind(objects, "HTTPRoute")}
    assert routes["support"]["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "support",
                                                         "port": 8000}]
    assert routes["support-ingress"]["spec"]["parentRefs"][0]["name"] == "public"
    assert routes["support-ingress"]["spec"]["hostnames"] == ["support.example.com"]
    agent = next(body for body in of_kind(objects, "NetworkPolicy") if body["metadata"]["name"] == "support")
    assert {"protocol": "TCP", "port": 4143} in agent["spec"]["ingress"][0]["ports"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}},
            "podSelector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "public"}}} in \
        agent["spec"]["ingress"][0]["from"]


def test_monitoring_scrapes_every_pod_and_ships_the_alerts_and_dashboard() -> None:
    objects = render_variant(EXAMPLE)
    (monitor,) = of_kind(objects, "PodMonitor")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["portNumber"], endpoint["path"]) == (15020, "/stats/prometheus")  # Istio's merged metrics
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (rule,) = of_kind(objects, "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "deploy" / "observability" / "prometheus-rules.yaml").read_text())
    assert rule["spec"] == shipped["spec"]
    (board,) = [body for body in of_kind(objects, "ConfigMap") if "dashboard" in body["metadata"]["name"]]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(board["data"]["statefleet-support.json"])
    assert dashboard == json.loads((ROOT / "deploy" / "observability" / "grafana-dashboard.json").read_text())
    plain = of_kind(render_variant("no mesh, an ingress controller as client"), "PodMonitor")[0]
    assert plain["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def test_the_grace_period_is_rounded_up_never_down() -> None:
    config = variant_config("fractional drain, no preStop, grace exactly enough")
    assert config.grace_seconds == 1 >= math.ceil(config.server.drain_timeout_seconds)
