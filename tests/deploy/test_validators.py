"""Each offline validator of tests/deploy/validate.py catches what it should: known-good objects pass, known-bad ones
fail with the field and the rule named. The samples are written here, like the objects `statefleet k8s render`
produces (a Deployment, Istio routing, a KEDA ScaledObject, a Gateway API HTTPRoute, a ServiceMonitor)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from .validate import (
    K8S_VERSIONS,
    MIN_K8S_VERSION,
    NEWEST_K8S_VERSION,
    ROOT,
    CheckovReport,
    InvalidManifest,
    ToolMissing,
    _tool,
    checkov,
    checkov_violations,
    crd_versions,
    evaluate_cel_rules,
    go_regex,
    kustomize_build,
    skip_annotations,
    structural_to_jsonschema,
    validate_core,
    validate_crd_object,
    validate_object,
)

Obj = dict[str, Any]
NS = "statefleet"
LABELS = {"app.kubernetes.io/name": "statefleet", "app.kubernetes.io/instance": "agent", "version": "v1"}
IMAGE = "ghcr.io/example/statefleet@sha256:" + "0" * 64


def deployment() -> Obj:
    """A hardened Deployment, the shape the renderer produces (it passes checkov with no skip)."""
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "agent-v1", "namespace": NS, "labels": LABELS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "serviceAccountName": "agent",
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 45,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "statefleet",
                        "image": IMAGE,
                        "imagePullPolicy": "Always",
                        "args": ["serve", "--port", "8080", "--store-file", "/etc/statefleet/store/url"],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "startupProbe": probe,
                        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}},
                        "livenessProbe": probe,
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                      "limits": {"cpu": "1", "memory": "512Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                         {"name": "store", "mountPath": "/etc/statefleet/store", "readOnly": True}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {}},
                                {"name": "store", "secret": {"secretName": "agent-store"}}],
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": LABELS}}
                        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
                    ],
                },
            },
        },
    }


def core_objects() -> list[Obj]:
    meta = {"namespace": NS, "labels": LABELS}
    return [
        deployment(),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "agent", **meta},
         "spec": {"selector": LABELS, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agent", **meta},
         "automountServiceAccountToken": False},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "agent-v1", **meta},
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": LABELS}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny", **meta},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "agent-v1", **meta},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent-v1"},
                  "minReplicas": 2, "maxReplicas": 10,
                  "metrics": [{"type": "Pods", "pods": {"metric": {"name": "statefleet_turns_in_flight"},
                                                        "target": {"type": "AverageValue", "averageValue": "4"}}}],
                  "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                             "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}}}},
    ]


def virtual_service() -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "agent", "namespace": NS},
        "spec": {
            "hosts": ["agent.statefleet.svc.cluster.local"],
            "http": [{
                "route": [
                    {"destination": {"host": "agent", "subset": "v1", "port": {"number": 80}}, "weight": 90},
                    {"destination": {"host": "agent", "subset": "v2", "port": {"number": 80}}, "weight": 10},
                ],
                "timeout": "3600s",
                "retries": {"attempts": 2, "perTryTimeout": "2s",
                            "retryOn": "connect-failure,refused-stream,reset-before-request"},
            }],
        },
    }


def destination_rule() -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "agent", "namespace": NS},
        "spec": {
            "host": "agent",
            "trafficPolicy": {
                "connectionPool": {"tcp": {"maxConnections": 1000, "connectTimeout": "2s"},
                                   "http": {"http1MaxPendingRequests": 1000, "maxRequestsPerConnection": 0}},
                "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s",
                                     "maxEjectionPercent": 50},
            },
            "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")],
        },
    }


def scaled_object() -> Obj:
    query = "sum(statefleet_fleet_backlog)"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "agent-v1", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"name": "agent-v1"},
            "minReplicaCount": 2,
            "maxReplicaCount": 20,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": 300, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}}}},
            "triggers": [
                {"type": "prometheus", "metadata": {"serverAddress": "http://prometheus:9090", "query": query,
                                                     "threshold": "10"}},
                {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}},
            ],
        },
    }


def http_route() -> Obj:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "agent", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "agent", "kind": "Service", "group": "", "port": 80}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": "agent-v1", "port": 80, "weight": 90},
                                {"name": "agent-v2", "port": 80, "weight": 10}],
                "timeouts": {"request": "0s"},
            }],
        },
    }


def service_monitor() -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "agent", "namespace": NS, "labels": {"release": "prometheus"}},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "statefleet"}},
                 "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]},
    }


def prometheus_rule() -> Obj:
    return dict(yaml.safe_load((ROOT / "deploy" / "observability" / "prometheus-rules.yaml").read_text()))


def crd_objects() -> list[Obj]:
    return [virtual_service(), destination_rule(), scaled_object(), http_route(), service_monitor(), prometheus_rule()]


def problems(call: Any, obj: Obj) -> str:
    with pytest.raises(InvalidManifest) as caught:
        call(obj)
    return "\n".join(caught.value.problems)


# ---- kubernetes-validate, strict, for the version range


def test_the_version_range_runs_from_1_30_to_the_newest_the_package_ships() -> None:
    assert K8S_VERSIONS[0] == MIN_K8S_VERSION == "1.30"
    assert NEWEST_K8S_VERSION == K8S_VERSIONS[-1]
    assert tuple(int(p) for p in NEWEST_K8S_VERSION.split(".")) >= (1, 37)  # kubernetes-validate>=1.37
    assert len(K8S_VERSIONS) == int(NEWEST_K8S_VERSION.split(".")[1]) - 30 + 1  # every minor version between


@pytest.mark.parametrize("obj", core_objects(), ids=lambda o: o["kind"])
def test_good_core_objects_pass_every_version(obj: Obj) -> None:
    assert validate_core(obj).versions == K8S_VERSIONS
    assert validate_object(obj).validator == "kubernetes-validate"


def test_an_unknown_field_in_a_deployment_is_caught() -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    found = problems(validate_core, obj)
    assert "spec.template.spec.containers[0]" in found
    assert "'imagePullPolicyy' was unexpected" in found
    assert f"Kubernetes 1.30-{NEWEST_K8S_VERSION}" in found


def test_an_unknown_top_level_field_is_caught() -> None:
    obj = deployment()
    obj["spec"]["replica"] = 2
    assert "'replica' was unexpected" in problems(validate_core, obj)


def test_a_wrong_type_is_caught() -> None:
    obj = deployment()
    obj["spec"]["replicas"] = "2"
    found = problems(validate_core, obj)
    assert "spec.replicas: '2' is not of type 'integer'" in found


def test_a_field_newer_than_the_oldest_version_fails_only_there() -> None:
    """Pod-level resources are in the schema from 1.32 on: the range is really checked version by version."""
    obj = deployment()
    obj["spec"]["template"]["spec"]["resources"] = {"limits": {"cpu": "2"}}
    found = problems(validate_core, obj)
    assert "Kubernetes 1.30-1.31 (2 versions): spec.template.spec" in found
    assert "'resources' was unexpected" in found


def test_an_api_removed_in_the_range_is_caught() -> None:
    hpa = copy.deepcopy(core_objects()[-1])
    hpa["apiVersion"] = "autoscaling/v2beta2"  # removed in Kubernetes 1.26
    assert "no schema" in problems(validate_core, hpa)


def test_names_and_labels_the_api_server_would_refuse_are_caught() -> None:
    service = copy.deepcopy(core_objects()[1])
    service["metadata"]["name"] = "9agent"  # a Service name is a DNS-1035 label
    service["metadata"]["labels"] = {"version": "v1+build"}
    found = problems(validate_core, service)
    assert "metadata.name: '9agent' is not a DNS-1035 label" in found
    assert "metadata.labels['version']: value 'v1+build' is not a valid label value" in found


# ---- CRD objects: strict structural schema + CEL


def test_the_carried_crds_cover_the_kinds_the_renderer_uses() -> None:
    served = {(api, kind) for (api, kind), crd in crd_versions().items() if crd.served}
    for api, kind in [("networking.istio.io/v1", "VirtualService"), ("networking.istio.io/v1", "DestinationRule"),
                      ("networking.istio.io/v1", "Gateway"), ("security.istio.io/v1", "PeerAuthentication"),
                      ("security.istio.io/v1", "AuthorizationPolicy"), ("keda.sh/v1alpha1", "ScaledObject"),
                      ("gateway.networking.k8s.io/v1", "HTTPRoute"), ("monitoring.coreos.com/v1", "ServiceMonitor"),
                      ("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")]:
        assert (api, kind) in served, (api, kind)


@pytest.mark.parametrize("obj", crd_objects(), ids=lambda o: o["kind"])
def test_good_crd_objects_pass(obj: Obj) -> None:
    report = validate_crd_object(obj)
    assert report.rules_skipped == ()
    assert validate_object(obj).validator == "crd"


def test_the_checked_in_prometheus_rule_passes_and_a_misspelt_field_fails() -> None:
    validate_crd_object(prometheus_rule())
    broken = prometheus_rule()
    broken["spec"]["groups"][1]["rules"][0]["expresion"] = "up"
    assert "spec.groups[1].rules[0]: Additional properties are not allowed ('expresion' was unexpected)" in problems(
        validate_crd_object, broken)


def test_cel_rules_are_evaluated_on_the_good_objects() -> None:
    assert validate_crd_object(http_route()).rules_evaluated >= 10
    assert validate_crd_object(virtual_service()).rules_evaluated >= 2  # timeout, perTryTimeout
    assert validate_crd_object(scaled_object()).rules_evaluated == 1


def test_an_istio_virtual_service_with_an_unknown_field_is_caught() -> None:
    obj = virtual_service()
    obj["spec"]["http"][0]["retries"]["retryOnn"] = "5xx"
    found = problems(validate_crd_object, obj)
    assert "spec.http[0].retries: Additional properties are not allowed ('retryOnn' was unexpected)" in found


def test_an_istio_timeout_of_zero_breaks_its_cel_rule() -> None:
    """Istio's CRD wants every duration ≥ 1ms: ``timeout: 0s`` (the old "no timeout" idiom) is refused."""
    obj = virtual_service()
    obj["spec"]["http"][0]["timeout"] = "0s"
    found = problems(validate_crd_object, obj)
    assert "spec.http[0].timeout: must be a valid duration greater than 1ms" in found


def test_an_istio_wrong_type_is_caught() -> None:
    obj = destination_rule()
    obj["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] = "five"
    assert "spec.trafficPolicy.outlierDetection.consecutive5xxErrors" in problems(validate_crd_object, obj)


def test_a_keda_scaled_object_missing_a_required_field_is_caught() -> None:
    obj = scaled_object()
    del obj["spec"]["triggers"]
    assert "spec: 'triggers' is a required property" in problems(validate_crd_object, obj)


def test_a_keda_min_above_max_breaks_its_cel_rule() -> None:
    obj = scaled_object()
    obj["spec"]["minReplicaCount"] = 30
    assert "spec: minReplicaCount must be less than or equal to maxReplicaCount" in problems(validate_crd_object, obj)


def test_an_http_route_path_that_is_not_absolute_breaks_its_cel_rule() -> None:
    obj = http_route()
    obj["spec"]["rules"][0]["matches"][0]["path"]["value"] = "api/v1"
    found = problems(validate_crd_object, obj)
    assert "spec.rules[0].matches[0].path: value must be an absolute path and start with '/'" in found


def test_an_http_route_service_backend_without_a_port_breaks_its_cel_rule() -> None:
    """The rule reads ``group`` and ``kind``, which only the schema's defaults fill in: defaults are applied."""
    obj = http_route()
    del obj["spec"]["rules"][0]["backendRefs"][1]["port"]
    found = problems(validate_crd_object, obj)
    assert "spec.rules[0].backendRefs[1]: Must have port for Service reference" in found


def test_an_http_route_backend_weight_out_of_range_is_caught() -> None:
    obj = http_route()
    obj["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1_000_001
    assert "spec.rules[0].backendRefs[0].weight: 1000001 is greater than the maximum" in problems(
        validate_crd_object, obj)


def test_a_service_monitor_with_an_unknown_field_is_caught() -> None:
    obj = service_monitor()
    obj["spec"]["endpoints"][0]["intervall"] = "15s"
    found = problems(validate_crd_object, obj)
    assert "spec.endpoints[0]: Additional properties are not allowed ('intervall' was unexpected)" in found


def test_crd_metadata_is_checked_as_strict_object_meta() -> None:
    obj = service_monitor()
    obj["metadata"]["label"] = {"release": "prometheus"}
    assert "metadata: Additional properties are not allowed ('label' was unexpected)" in problems(
        validate_crd_object, obj)


def test_an_object_no_carried_crd_serves_is_an_error() -> None:
    obj = http_route()
    obj["kind"] = "GRPCRoute"
    assert "no CRD in" in problems(validate_crd_object, obj)
    obj = virtual_service()
    obj["apiVersion"] = "networking.istio.io/v2"
    assert "no CRD in" in problems(validate_crd_object, obj)
    with pytest.raises(InvalidManifest, match="no schema"):
        validate_object(obj)  # not a CRD the project carries, not a core kind either


def test_go_regexps_are_translated_and_enforced() -> None:
    assert go_regex("^(?i)(abort|warn)?$") == "(?i)^(abort|warn)?$"
    rule = prometheus_rule()
    rule["spec"]["groups"][0]["partial_response_strategy"] = "Warn"
    validate_crd_object(rule)
    rule["spec"]["groups"][0]["partial_response_strategy"] = "ignore"
    assert "partial_response_strategy: 'ignore' does not match" in problems(validate_crd_object, rule)


# ---- the translation and the CEL evaluation, on small schemas


def test_the_translation_closes_objects_unless_the_schema_keeps_unknown_fields() -> None:
    schema = {"type": "object", "properties": {
        "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"a": {"type": "string"}}},
        "map": {"type": "object", "additionalProperties": {"type": "string"}},
        "port": {"x-kubernetes-int-or-string": True},
        "nullable": {"type": "string", "nullable": True},
        "list": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                 "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "embedded": {"type": "object", "x-kubernetes-embedded-resource": True,
                     "x-kubernetes-preserve-unknown-fields": True},
    }}
    import jsonschema

    validator = jsonschema.Draft202012Validator(structural_to_jsonschema(schema))
    good = {"closed": {"a": "x"}, "open": {"b": 1}, "map": {"k": "v"}, "port": "http", "nullable": None,
            "list": [{"name": "a"}, {"name": "b"}], "embedded": {"apiVersion": "v1", "kind": "Pod", "spec": {}}}
    assert list(validator.iter_errors(good)) == []
    assert not validator.is_valid({**good, "port": 80.5})
    assert not validator.is_valid({**good, "closed": {"b": "x"}})
    assert not validator.is_valid({**good, "extra": 1})
    assert not validator.is_valid({**good, "map": {"k": 1}})
    assert not validator.is_valid({**good, "embedded": {"spec": {}}})  # embedded resources need apiVersion and kind
    from .validate import _StrictValidator

    strict = _StrictValidator(structural_to_jsonschema(schema))
    assert any("same map key" in e.message for e in strict.iter_errors({**good, "list": [{"name": "a"}] * 2}))


def test_transition_rules_are_skipped_with_a_reason_and_broken_rules_fail() -> None:
    schema = {"type": "object", "properties": {"replicas": {"type": "integer", "x-kubernetes-validations": [
        {"rule": "self >= oldSelf", "message": "may not shrink"},
        {"rule": "self <= 100", "message": "at most 100"},
        {"rule": "self.frobnicate()", "message": "an unknown function"},
    ]}}}
    outcome = evaluate_cel_rules({"replicas": 200}, schema)
    assert outcome.evaluated == 2
    assert [s.rule for s in outcome.skipped] == ["self >= oldSelf"]
    assert "oldSelf" in outcome.skipped[0].reason
    assert any(p.startswith("replicas: at most 100") for p in outcome.problems)
    assert any("could not be evaluated" in p and "frobnicate" in p for p in outcome.problems)


def test_the_kubernetes_cel_library_functions_work() -> None:
    def holds(rule: str, value: Any) -> bool:
        outcome = evaluate_cel_rules(value, {"type": "string", "x-kubernetes-validations": [{"rule": rule}]})
        assert outcome.evaluated == 1
        return not outcome.problems

    assert holds("url(self).getScheme() in ['http', 'https']", "https://example.com/x")
    assert not holds("url(self).getScheme() in ['http', 'https']", "ftp://example.com/x")
    assert not holds("isURL(self)", "not a url")
    assert holds("url(self).getHostname() == 'example.com' && url(self).getPort() == '8443'", "https://example.com:8443")
    assert holds("self.startsWith('unix://') ? self.substring(7, 8) == '/' : true", "unix:///var/run/sock")
    assert not holds("self.startsWith('unix://') ? self.substring(7, 8) == '/' : true", "unix://relative")
    assert holds("self.lowerAscii().split(',').size() == 2", "A,B")
    assert holds("duration(self) >= duration('1ms')", "1h30m")


def test_reserved_property_names_are_escaped_as_kubernetes_does() -> None:
    schema = {"type": "object", "properties": {"namespace": {"type": "string"}},
              "x-kubernetes-validations": [{"rule": "has(self.__namespace__) && self.__namespace__ == 'a'"}]}
    assert evaluate_cel_rules({"namespace": "a"}, schema).problems == []
    assert evaluate_cel_rules({"namespace": "b"}, schema).problems != []


# ---- kubectl kustomize


def write_dir(directory: Path, objects: list[Obj]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for obj in objects:
        name = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        (directory / name).write_text(yaml.safe_dump(obj, sort_keys=False))
        names.append(name)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": names}))
    return directory


def test_kustomize_builds_a_directory_and_reports_a_broken_one(tmp_path: Path) -> None:
    objects = [deployment(), virtual_service()]
    built = kustomize_build(write_dir(tmp_path / "good", objects))
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built) == [("Deployment", "agent-v1"),
                                                                          ("VirtualService", "agent")]
    broken = write_dir(tmp_path / "broken", objects)
    (broken / "deployment-agent-v1.yaml").unlink()
    with pytest.raises(InvalidManifest, match=r"deployment-agent-v1\.yaml"):
        kustomize_build(broken)


def test_a_missing_tool_fails_loudly() -> None:
    with pytest.raises(ToolMissing, match="never skipped"):
        _tool("statefleet-no-such-tool", "it does not exist")


# ---- checkov (one run for these tests)


def insecure_deployment() -> Obj:
    obj = deployment()
    obj["metadata"]["name"] = "insecure"
    pod = obj["spec"]["template"]["spec"]
    del pod["containers"][0]["resources"]  # CKV_K8S_10/11/12/13
    del pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"]  # CKV_K8S_22
    obj["metadata"]["annotations"] = {
        "checkov.io/skip1": "CKV_K8S_22=the sample writes to its root filesystem on purpose",
    }
    return obj


@pytest.fixture(scope="module")
def checkov_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CheckovReport, list[Obj]]:
    objects = [deployment(), insecure_deployment(), *core_objects()[1:]]
    return checkov(write_dir(tmp_path_factory.mktemp("checkov"), objects)), objects


def test_checkov_passes_the_hardened_deployment(checkov_run: tuple[CheckovReport, list[Obj]]) -> None:
    report, _ = checkov_run
    assert report.resources >= 2 and report.passed > 50
    assert [f for f in report.failed if f.resource == f"Deployment.{NS}.agent-v1"] == []


def test_checkov_reports_what_is_missing_and_honours_reasoned_skips(
    checkov_run: tuple[CheckovReport, list[Obj]],
) -> None:
    report, objects = checkov_run
    failed = {f.check_id for f in report.failed if f.resource == f"Deployment.{NS}.insecure"}
    assert {"CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13"} <= failed
    assert "CKV_K8S_22" not in failed  # skipped by its annotation, with a reason
    assert report.skipped >= 1
    left = checkov_violations(report, objects)
    assert {f.check_id for f in left} == failed
    allowed = {check: "the sample leaves out resources on purpose" for check in failed}
    assert checkov_violations(report, objects, allowed) == []
    only_here = {f"{check}@Deployment.{NS}.insecure": "this object only" for check in failed}
    assert checkov_violations(report, objects, only_here) == []


def test_a_skip_or_an_allowance_without_a_reason_is_refused(checkov_run: tuple[CheckovReport, list[Obj]]) -> None:
    report, objects = checkov_run
    with pytest.raises(InvalidManifest, match="no written reason"):
        checkov_violations(report, objects, {"CKV_K8S_10": " "})
    unreasoned = insecure_deployment()
    unreasoned["metadata"]["annotations"]["checkov.io/skip2"] = "CKV_K8S_10"
    with pytest.raises(InvalidManifest, match="skips CKV_K8S_10 without a written reason"):
        skip_annotations([unreasoned])
    assert skip_annotations([insecure_deployment()]) == {
        (f"Deployment.{NS}.insecure", "CKV_K8S_22"): "the sample writes to its root filesystem on purpose"}
