"""deploy/observability: the PrometheusRule against its CRD schema, every PromQL expression parsed (with the
promql-parser package), and every metric the rules and the dashboard name is one statefleet exports."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from statefleet.observability.metrics import Metrics

from .promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "deploy" / "observability"
#: The CRD schemas the project carries (deploy/schemas/, copied verbatim with their sources), or where
#: STATEFLEET_SCHEMAS points. Missing schemas fail the test: never skipped.
SCHEMAS = Path(os.environ.get("STATEFLEET_SCHEMAS", ROOT / "deploy" / "schemas"))
#: Series Prometheus itself makes.
BUILTIN = {"up"}


def exported_names() -> set[str]:
    """Every series name a statefleet process exports (counters with _total, histograms' _bucket/_count/_sum)."""
    metrics = Metrics("agent", "v1")
    metrics.fleet._backlog = 0  # as after a scrape read the store
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
    return names


def strict(schema: Any) -> Any:
    """The CRD's OpenAPI schema as JSON Schema that, like a strict API server, rejects unknown fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def rule_file() -> dict[str, Any]:
    return dict(yaml.safe_load((ASSETS / "prometheus-rules.yaml").read_text()))


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_file()["spec"]["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads((ASSETS / "grafana-dashboard.json").read_text()))


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by values Prometheus would see."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?(\w+)\}?", "v1", expr)


def test_prometheus_rule_is_valid_against_the_crd_schema() -> None:
    crd = yaml.safe_load((SCHEMAS / "prometheus-operator-prometheusrules.yaml").read_text())
    rule = rule_file()
    version = next(v for v in crd["spec"]["versions"] if v["name"] == rule["apiVersion"].split("/")[1])
    assert rule["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert rule["kind"] == crd["spec"]["names"]["kind"]
    # Not check_schema: the CRD's patterns are Go regexps (``^(?i)…``), which Python's re rejects as a format.
    jsonschema.Draft202012Validator(strict(version["schema"]["openAPIV3Schema"])).validate(rule)
    for item in rules():
        assert ("alert" in item) != ("record" in item), item


def test_the_strict_schema_catches_a_misspelt_field() -> None:
    crd = yaml.safe_load((SCHEMAS / "prometheus-operator-prometheusrules.yaml").read_text())
    schema = strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    broken = rule_file()
    broken["spec"]["groups"][1]["rules"][0]["expresion"] = "up"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


def test_the_alerts_cover_what_an_sre_needs() -> None:
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    for wanted in ("StatefleetTurnErrorRatioHigh", "StatefleetTurnLatencySLOBurn", "StatefleetTimeToFirstTokenSLOBurn",
                   "StatefleetBacklogGrowing", "StatefleetTakeoversSpiking", "StatefleetFencingRejections",
                   "StatefleetInstanceDown", "StatefleetStoreLatencyHigh"):
        assert wanted in alerts


@pytest.mark.parametrize("expr", [str(rule["expr"]) for rule in rules()])
def test_every_rule_expression_parses_and_names_exported_metrics(expr: str) -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    names = metric_names(expr)
    assert names, expr
    assert names <= exported_names() | recorded | BUILTIN, names - exported_names()


@pytest.mark.parametrize("expr", dashboard_queries())
def test_every_dashboard_query_parses_and_names_exported_metrics(expr: str) -> None:
    names = metric_names(grafana_to_promql(expr))
    assert names, expr
    assert names <= exported_names(), names - exported_names()


def test_dashboard_shows_the_fleet() -> None:
    board = dashboard()
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for word in ("turns per second", "heatmap", "first token", "backlog", "in flight", "takeovers", "streams"):
        assert word in titles, word
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["query"]["query"])
            assert metric is not None and metric.group(1) in exported_names()


def test_a_broken_expression_is_caught() -> None:
    with pytest.raises(ValueError):
        metric_names("sum(rate(statefleet_turns_total[5m])")
    assert metric_names("rate(a_total[5m]) / on (x) group_left b") == {"a_total", "b"}
