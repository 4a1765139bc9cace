"""From a :class:`FleetConfig` to an ordered list of objects, and from those to files.

The order is fixed (namespace and identities first, then the store, the agent, its network, autoscaling, the
mesh and monitoring), every file is named ``NN-kind-name.yaml`` after its position, and keys keep the order
the builders give them, so the same config always renders the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from . import _yaml
from .autoscaling import render_autoscaling
from .config import FleetConfig, GatewayApi, Istio, SelfHostedRedis
from .manifest import Manifest
from .mesh_gateway_api import render_gateway_api
from .mesh_istio import render_istio
from .monitoring import render_monitoring
from .network import render_network
from .redis import render_redis
from .workload import render_workload

#: The first line of every file the renderer writes; only such files are ever replaced or removed.
HEADER = "# Rendered by `statefleet k8s render`: edit the config and render again rather than this file.\n"
KUSTOMIZATION = "kustomization.yaml"


def render(config: FleetConfig) -> list[Manifest]:
    """Every object of the fleet, in apply order."""
    objects = render_workload(config)
    if isinstance(config.store.redis, SelfHostedRedis):
        # After the namespace and the agent's identity, before the agent's Deployments.
        objects[2:2] = render_redis(config)
    objects += render_network(config)
    objects += render_autoscaling(config)
    if isinstance(config.mesh, Istio):
        objects += render_istio(config)
    elif isinstance(config.mesh, GatewayApi):
        objects += render_gateway_api(config)
    objects += render_monitoring(config)
    return objects


def file_names(objects: list[Manifest]) -> list[str]:
    """``NN-kind-name.yaml`` for each object, numbered in order."""
    width = max(2, len(str(len(objects) - 1)))
    return [f"{index:0{width}d}-{item.kind.lower()}-{item.name}.yaml" for index, item in enumerate(objects)]


def render_files(objects: list[Manifest]) -> dict[str, str]:
    """File name → contents: one file per object, and the kustomization listing them in order."""
    names = file_names(objects)
    files = {name: HEADER + _yaml.dump(item.body) for name, item in zip(names, objects, strict=True)}
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": names}
    files[KUSTOMIZATION] = HEADER + _yaml.dump(kustomization)
    return files


def render_stream(objects: list[Manifest]) -> str:
    """All objects as one multi-document YAML (for ``kubectl apply -f -``)."""
    return HEADER + "".join(f"---\n{_yaml.dump(item.body)}" for item in objects)


def write_directory(objects: list[Manifest], directory: Path) -> list[Path]:
    """Write a kustomize-ready directory; files an earlier render wrote and this one does not are removed.

    Files without the renderer's header line are left alone.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = render_files(objects)
    for stale in sorted(directory.glob("*.yaml")):
        if stale.name not in files and _rendered_here(stale):
            stale.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _rendered_here(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline() == HEADER
    except (OSError, UnicodeDecodeError):
        return False
