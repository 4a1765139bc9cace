"""Kubernetes manifests for a fleet, rendered from one config file (``statefleet k8s render``).

>>> from statefleet.k8s import load_config, render, write_directory
>>> objects = render(load_config("deploy/statefleet.yaml"))       # doctest: +SKIP
>>> write_directory(objects, Path("deploy/k8s"))                   # doctest: +SKIP

The config's schema is :class:`FleetConfig` (``config.py``); each family of objects has its module
(``workload``, ``network``, ``autoscaling``, ``redis``, ``mesh_istio``, ``mesh_gateway_api``, ``monitoring``),
and ``names`` holds the names and labels they share. docs/kubernetes.md walks through a deployment.
"""

from __future__ import annotations

from .config import FleetConfig
from .loading import load_config, parse_config
from .manifest import Manifest
from .names import version_url_template
from .render import render, render_files, render_stream, write_directory

__all__ = [
    "FleetConfig",
    "Manifest",
    "load_config",
    "parse_config",
    "render",
    "render_files",
    "render_stream",
    "version_url_template",
    "write_directory",
]
