"""The fleet config refuses what would break a deployment, and every refusal names the field and what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from statefleet.errors import ConfigError
from statefleet.k8s import parse_config

from ._support import EXAMPLE, changed, config_of, example, statefleet

BROKEN: list[tuple[str, dict[str, Any], str, str]] = [
    # (what, changes to the example, the field path the error names, words of the reason)
    ("unknown top-level key", {"replicas": 3}, "replicas", "unknown key"),
    ("misspelt key", {"server.drain_timeout": 30}, "server.drain_timeout", "did you mean 'drain_timeout_seconds'"),
    ("weights not adding up to 100", {"versions.1.weight": 5}, "versions", "add up to 95"),
    ("negative weight", {"versions.0.weight": -10}, "versions[0].weight", "greater than or equal to 0"),
    ("drain longer than the grace period", {"server.drain_timeout_seconds": 40},
     "server.termination_grace_period_seconds", "shorter than pre_stop_seconds + drain_timeout_seconds (5 + 40"),
    ("missing store", {"store": None}, "store", "missing"),
    ("store URL written inline", {"store.url": "redis://:hunter2@redis:6379/0"}, "store", "url is not accepted"),
    ("bad quantity", {"server.resources.requests.memory": "lots"}, "server.resources.requests.memory",
     "not a Kubernetes quantity"),
    ("memory in millibytes", {"server.resources.limits.memory": "512m"}, "server.resources.limits.memory",
     "did you mean 512Mi"),
    ("limit below its request", {"server.resources.limits.memory": "256Mi"}, "server.resources.limits",
     "memory limit 256Mi is below its request 512Mi"),
    ("duplicate version", {"versions.1.name": "v1"}, "versions", "'v1' appears twice"),
    ("version that is not a label", {"versions.1.name": "V2"}, "versions[1].name", "a-z, 0-9 and '-'"),
    ("image on latest", {"versions.0.image": "registry.example.com/support-agent:latest"}, "versions[0].image",
     "pinned to a tag other than latest"),
    ("image without a tag", {"versions.0.image": "registry.example.com/support-agent"}, "versions[0].image",
     "pinned"),
    ("max replicas below min", {"versions.0.replicas": {"min": 5, "max": 2}}, "versions[0].replicas.max",
     "below min (5)"),
    ("a version that may scale to zero", {"versions.1.replicas.min": 0}, "versions[1].replicas.min",
     "greater than or equal to 1"),
    ("host bits in a CIDR", {"network.backends.0.cidrs": ["10.0.0.1/8"]}, "network.backends[0].cidrs[0]",
     "not a CIDR block"),
    ("an exception outside its block", {"network.backends.0.cidrs": ["203.0.113.0/24"]},
     "network.backends[0].exclude", "inside none of cidrs"),
    ("unknown mesh", {"mesh.kind": "consul"}, "mesh", "consul"),
    ("unknown key of one mesh", {"mesh.retries": 3}, "mesh.retries", "did you mean 'retry_attempts'"),
    ("KEDA without Prometheus", {"autoscaling.prometheus_url": None}, "autoscaling.prometheus_url", "missing"),
    ("Prometheus address that is not a URL", {"autoscaling.prometheus_url": "prometheus:9090"},
     "autoscaling.prometheus_url", "should match pattern"),
    ("in-flight target above what a pod admits", {"autoscaling.in_flight_per_pod": 1000},
     "autoscaling.in_flight_per_pod", "above what a pod admits"),
    ("backlog target below the in-flight one", {"autoscaling.backlog_per_pod": 50}, "autoscaling.backlog_per_pod",
     "below in_flight_per_pod"),
    ("environment the renderer owns", {"server.env": {"STATEFLEET_STORE": "redis://redis:6379/0"}}, "server.env",
     "STATEFLEET_STORE is set by the renderer"),
    ("privileged port", {"server.port": 80}, "server.port", "greater than or equal to 1024"),
    ("Secret name that is not a DNS name", {"store.url_secret.name": "Support_Store"}, "store.url_secret.name",
     "lower-case labels"),
    ("host name without a domain", {"mesh.gateway.hosts": ["support"]}, "mesh.gateway.hosts[0]",
     "not a fully qualified host name"),
    ("agent name too long for its Services", {"agent.name": "a" * 41}, "agent.name", "at most 40"),
    ("self-hosted Redis without a password", {"store.redis.password_secret": None}, "store.redis.password_secret",
     "missing"),
    ("bad label key", {"monitoring.labels": {"bad key": "x"}}, "monitoring.labels", "label key 'bad key'"),
    ("unknown Redis mode", {"store.redis.mode": "cluster"}, "store.redis", "cluster"),
]


@pytest.mark.parametrize(("changes", "field", "reason"), [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_a_broken_config_is_refused_naming_the_field(changes: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(changed(example(), changes))
    problems = str(caught.value).splitlines()[1:]
    assert any(line.strip().startswith(f"{field}:") and reason in line for line in problems), str(caught.value)


def test_there_are_at_least_twelve_broken_configs() -> None:
    assert len(BROKEN) >= 12


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(changed(example(), {"agent.nmae": "x", "server.port": 80, "store.url_secret.key": "a key"}))
    message = str(caught.value)
    assert "(3 problems)" in message
    for field in ("agent.nmae", "server.port", "store.url_secret.key"):
        assert f"\n  {field}: " in message


def test_a_key_written_twice_is_refused_with_its_line() -> None:
    text = EXAMPLE.read_text().replace("  workers: 1\n", "  workers: 1\n  workers: 4\n")
    with pytest.raises(ConfigError, match=r"key 'workers' appears twice in one mapping \(first on line \d+\)"):
        parse_config(text)


@pytest.mark.parametrize(("text", "words"), [("- a\n- b\n", "must be a mapping of sections"),
                                             ("agent: [\n", "not valid YAML")])
def test_a_file_that_is_not_a_config_is_refused(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(text)


def test_the_example_is_valid_and_keeps_its_stated_choices() -> None:
    config = parse_config(EXAMPLE.read_text())
    assert [(version.name, version.weight) for version in config.versions] == [("v1", 90), ("v2", 10)]
    assert (config.mesh.kind, config.autoscaling.kind, config.store.redis.mode) == ("istio", "keda", "self-hosted")
    assert config.grace_seconds >= config.server.pre_stop_seconds + config.server.drain_timeout_seconds


def test_the_grace_period_defaults_to_the_stop_time_plus_a_margin() -> None:
    config = config_of(changed(example(), {"server.termination_grace_period_seconds": None,
                                           "server.drain_timeout_seconds": 42.5, "server.pre_stop_seconds": 7}))
    assert config.grace_seconds == 50 + 5


def test_the_cli_exits_2_naming_the_field(tmp_path: Any) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text(EXAMPLE.read_text().replace("weight: 10", "weight: 20"))
    done = statefleet("k8s", "render", "--config", str(bad), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert "versions: weights add up to 110 (v1 90 + v2 20); they must add up to 100" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_cli_exits_2_on_a_missing_file(tmp_path: Any) -> None:
    done = statefleet("k8s", "render", "--config", str(tmp_path / "nope.yaml"), "--out", "-")
    assert done.returncode == 2 and "cannot read the config" in done.stderr and "nope.yaml" in done.stderr


def test_whole_numbers_are_taken_as_the_text_kubernetes_wants() -> None:
    config = config_of(changed(example(), {"server.resources.requests.cpu": 2,
                                           "monitoring.dashboard": {"labels": {"grafana_dashboard": 1}},
                                           "server.env": {"WORKER_COUNT": 3}}))
    assert config.server.resources.requests.cpu == "2"
    assert config.monitoring.dashboard.labels == {"grafana_dashboard": "1"}
    assert config.server.env == {"WORKER_COUNT": "3"}
    with pytest.raises(ConfigError, match=r"monitoring.dashboard.labels.grafana_dashboard: .*got True"):
        config_of(changed(example(), {"monitoring.dashboard": {"labels": {"grafana_dashboard": True}}}))


def test_the_cli_exits_2_when_it_cannot_write(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    done = statefleet("k8s", "render", "--config", str(EXAMPLE), "--out", str(blocker / "k8s"))
    assert done.returncode == 2 and "cannot write the manifests" in done.stderr, done.stderr
