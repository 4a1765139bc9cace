"""Rendering as a tool: the checked-in output is what the example renders to, byte for byte; renders are
reproducible; a weights-only change touches only the routing objects; kustomize builds every variant."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from statefleet.k8s import load_config, render, render_files, render_stream, write_directory
from statefleet.k8s.render import HEADER, KUSTOMIZATION

from ._support import (
    EXAMPLE,
    REFRESH,
    RENDERED,
    ROOT,
    VARIANTS,
    changed,
    config_of,
    example,
    statefleet,
    variant_config,
)


def test_the_checked_in_render_is_what_the_example_renders_to() -> None:
    fresh = render_files(render(load_config(EXAMPLE)))
    stale = f"deploy/k8s is not what deploy/statefleet.yaml renders to; refresh it with `{REFRESH}`"
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in RENDERED.iterdir()}
    assert sorted(on_disk) == sorted(fresh), stale
    for name, text in fresh.items():
        assert on_disk[name] == text, f"{name}: {stale}"


def test_two_renders_by_the_cli_are_byte_identical(tmp_path: Path) -> None:
    for out in ("first", "second"):
        done = statefleet("k8s", "render", "--config", str(EXAMPLE), "--out", str(tmp_path / out))
        assert done.returncode == 0, done.stderr
    first, second = sorted((tmp_path / "first").iterdir()), sorted((tmp_path / "second").iterdir())
    assert [path.name for path in first] == [path.name for path in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    streams = [statefleet("k8s", "render", "--config", str(EXAMPLE), "--out", "-").stdout for _ in range(2)]
    assert streams[0] == streams[1] and streams[0].startswith(HEADER)


def test_stdout_holds_every_object_of_the_directory() -> None:
    done = statefleet("k8s", "render", "--config", str(EXAMPLE), "--out", "-")
    assert done.returncode == 0, done.stderr
    documents = list(yaml.safe_load_all(done.stdout))
    on_disk = [yaml.safe_load((RENDERED / name).read_text())
               for name in yaml.safe_load((RENDERED / KUSTOMIZATION).read_text())["resources"]]
    assert documents == on_disk


@pytest.mark.parametrize("name", list(VARIANTS))
def test_renders_are_identical_for_every_variant(name: str) -> None:
    assert render_files(render(variant_config(name))) == render_files(render(variant_config(name)))


def test_files_are_numbered_in_apply_order_and_listed_by_the_kustomization() -> None:
    files = render_files(render(load_config(EXAMPLE)))
    kustomization = yaml.safe_load(files[KUSTOMIZATION])
    assert kustomization["resources"] == sorted(name for name in files if name != KUSTOMIZATION)
    kinds = [yaml.safe_load(files[name])["kind"] for name in kustomization["resources"]]
    assert kinds[0] == "Namespace"
    assert kinds.index("StatefulSet") < kinds.index("Deployment")  # the store before the agent
    assert kinds.index("Deployment") < kinds.index("ScaledObject")
    for name in kustomization["resources"]:
        body = yaml.safe_load(files[name])
        assert name.split("-", 1)[1] == f"{body['kind'].lower()}-{body['metadata']['name']}.yaml"


@pytest.mark.parametrize(("mesh", "routing_kind"), [("example (Istio, KEDA, self-hosted Redis)", "VirtualService"),
                                                    ("Linkerd with Gateway API", "HTTPRoute")])
def test_changing_only_the_weights_changes_only_the_routing_objects(mesh: str, routing_kind: str) -> None:
    before = render_files(render(variant_config(mesh)))
    data = changed(example(), VARIANTS[mesh])
    after = render_files(render(config_of(changed(data, {"versions.0.weight": 50, "versions.1.weight": 50}))))
    assert sorted(before) == sorted(after)
    differing = sorted(name for name in before if before[name] != after[name])
    assert differing, "the weights changed nothing"
    assert all(yaml.safe_load(after[name])["kind"] == routing_kind for name in differing), differing
    for name in differing:
        assert "weight: 50" in after[name] and "weight: 90" in before[name]


def test_write_directory_replaces_its_own_files_and_leaves_others(tmp_path: Path) -> None:
    # Given a directory rendered with a self-hosted Redis, and a file of the user's
    write_directory(render(load_config(EXAMPLE)), tmp_path)
    (tmp_path / "secrets.yaml").write_text("# mine\n")
    assert any("statefulset" in path.name for path in tmp_path.iterdir())

    # When it is rendered again for a managed Redis
    write_directory(render(variant_config("external Redis (Sentinel ports)")), tmp_path)

    # Then the Redis objects' files are gone, the user's file stays, and the kustomization lists what is there
    names = {path.name for path in tmp_path.iterdir()}
    assert not any("redis" in name for name in names), names
    assert "secrets.yaml" in names
    listed = yaml.safe_load((tmp_path / KUSTOMIZATION).read_text())["resources"]
    assert sorted(listed) == sorted(names - {KUSTOMIZATION, "secrets.yaml"})


def test_the_shipped_rules_and_dashboard_are_those_of_deploy_observability() -> None:
    assets = ROOT / "src" / "statefleet" / "k8s" / "assets"
    for name in ("prometheus-rules.yaml", "grafana-dashboard.json"):
        source = ROOT / "deploy" / "observability" / name
        assert (assets / name).read_bytes() == source.read_bytes(), (
            f"src/statefleet/k8s/assets/{name} differs from deploy/observability/{name}: copy it over, then "
            f"`{REFRESH}`")


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl (with kustomize) is needed to check the rendered directories; install it"
    return kubectl


def test_kubectl_kustomize_builds_the_checked_in_directory() -> None:
    built = subprocess.run([_kubectl(), "kustomize", str(RENDERED)], capture_output=True, text=True, timeout=120,
                           check=False)
    assert built.returncode == 0, built.stderr
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(built.stdout)]
    assert len(names) == len(yaml.safe_load((RENDERED / KUSTOMIZATION).read_text())["resources"])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_kubectl_kustomize_builds_every_variant(name: str, tmp_path: Path) -> None:
    write_directory(render(variant_config(name)), tmp_path)
    built = subprocess.run([_kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120,
                           check=False)
    assert built.returncode == 0, built.stderr


def test_render_stream_is_one_document_per_object() -> None:
    objects = render(load_config(EXAMPLE))
    documents = list(yaml.safe_load_all(render_stream(objects)))
    assert [doc for doc in documents if doc] == [item.body for item in objects]
