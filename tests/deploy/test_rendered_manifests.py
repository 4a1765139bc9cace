"""The checked-in rendered deployment (deploy/k8s/, from `statefleet k8s render --config deploy/statefleet.yaml`)
passes every offline validator: each object kubernetes-validate strict for Kubernetes 1.30 to the newest the package
ships, or its CRD's schema (unknown fields rejected) and CEL rules; `kubectl kustomize deploy/k8s` builds exactly
those objects; checkov reports no failed check that a written reason does not account for (checkov runs once)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from .validate import (
    K8S_VERSIONS,
    ROOT,
    CheckovReport,
    InvalidManifest,
    checkov,
    checkov_violations,
    crd_for,
    kustomize_build,
    load_objects,
    skip_annotations,
    validate_core,
    validate_crd_object,
    validate_object,
)

Obj = dict[str, Any]
#: STATEFLEET_RENDERED points the same tests at another render (e.g. a fresh one while working on the renderer).
RENDERED = Path(os.environ.get("STATEFLEET_RENDERED", ROOT / "deploy" / "k8s"))
#: Failed checkov checks accepted here, each with its written reason: "CKV_K8S_xx" (every object) or
#: "CKV_K8S_xx@Kind.namespace.name". Empty: the renderer states its exceptions on the objects themselves, as
#: `checkov.io/skip<N>: CKV_K8S_xx=<reason>` annotations, where whoever applies the manifests reads them too.
CHECKOV_ALLOWED: dict[str, str] = {}


def rendered_files() -> list[Path]:
    return sorted(p for p in RENDERED.glob("*.y*ml") if p.name not in ("kustomization.yaml", "kustomization.yml"))


def rendered_objects() -> list[tuple[str, Obj]]:
    """``(file[#index], object)`` for every object in deploy/k8s/ but the kustomization."""
    found = []
    for path in rendered_files():
        objects = load_objects(path.read_text())
        for index, obj in enumerate(objects):
            found.append((path.name if len(objects) == 1 else f"{path.name}#{index}", obj))
    return found


def identity(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("apiVersion")), str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name")))


OBJECTS = rendered_objects()
MISSING = f"{RENDERED} holds no rendered objects (statefleet k8s render --config deploy/statefleet.yaml --out DIR)"


def test_the_rendered_deployment_is_checked_in() -> None:
    assert (RENDERED / "kustomization.yaml").is_file(), MISSING
    assert OBJECTS, MISSING


@pytest.mark.parametrize(
    "obj", [obj for _, obj in OBJECTS] or [None], ids=[name for name, _ in OBJECTS] or ["deploy-k8s-missing"]
)
def test_every_rendered_object_passes_its_schema(obj: Obj | None) -> None:
    """Core kinds: kubernetes-validate strict in every version of the range; CRD kinds: the CRD schema and its CEL
    rules (a kind neither knows fails)."""
    assert obj is not None, MISSING
    if crd_for(obj) is None:
        assert validate_core(obj).versions == K8S_VERSIONS
    else:
        report = validate_crd_object(obj)
        assert report.warnings == (), report.warnings  # e.g. a deprecated API version
        assert all(skip.reason for skip in report.rules_skipped)


def test_the_kustomization_lists_every_rendered_file() -> None:
    kustomization = yaml.safe_load((RENDERED / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources") or [])
    assert listed == {p.name for p in rendered_files()}


@pytest.fixture(scope="module")
def built() -> list[Obj]:
    return kustomize_build(RENDERED)


def test_kubectl_kustomize_builds_exactly_the_rendered_objects(built: list[Obj]) -> None:
    assert sorted(map(identity, built)) == sorted(identity(obj) for _, obj in OBJECTS)


def test_every_built_object_passes_its_schema(built: list[Obj]) -> None:
    """What `kubectl apply -k` would send, validated as well (the kustomization could add labels or a namespace)."""
    failures = []
    for obj in built:
        try:
            validate_object(obj)
        except InvalidManifest as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def checkov_report() -> CheckovReport:
    return checkov(RENDERED)


def test_checkov_finds_no_failure_without_a_written_reason(checkov_report: CheckovReport) -> None:
    objects = [obj for _, obj in OBJECTS]
    skip_annotations(objects)  # every skip annotation names its check and gives a reason
    left = checkov_violations(checkov_report, objects, CHECKOV_ALLOWED)
    by_check: dict[str, list[str]] = {}
    for finding in left:
        keys = f" at {', '.join(finding.keys)}" if finding.keys else ""
        by_check.setdefault(f"{finding.check_id} {finding.name!r}", []).append(f"{finding.resource}{keys}")
    assert not left, (
        f"checkov {checkov_report.version}: {len(left)} failed checks that no written reason accounts for (fix the "
        "render, or have it carry a checkov.io/skip<N>: CKV_K8S_xx=<reason> annotation on the object):\n"
        + "\n".join(f"  {check}:\n" + "\n".join(f"    {r}" for r in found) for check, found in by_check.items())
    )
    assert checkov_report.resources >= 1 and checkov_report.passed > 0
