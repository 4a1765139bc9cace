"""The paths and port the rendered Deployment probes are ones a real ``statefleet serve`` answers, with the
environment the Deployment gives it (STATEFLEET_* variables, as Kubernetes passes them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from statefleet.testing import ServeProcess, free_port

from ._support import RENDERED, ROOT


def rendered_deployment() -> dict[str, Any]:
    return dict(yaml.safe_load((RENDERED / "09-deployment-support-v1.yaml").read_text()))


@pytest.fixture
def serve_as_rendered(tmp_path: Path) -> Iterator[ServeProcess]:
    """``statefleet serve`` with the Deployment's plain environment (the Secret's store URL: an in-memory store)."""
    container = rendered_deployment()["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    env.update({"STATEFLEET_PORT": str(port), "STATEFLEET_HOST": "127.0.0.1", "POD_IP": "127.0.0.1",
                "STATEFLEET_ADVERTISE": f"127.0.0.1:{port}", "STATEFLEET_STORE": "memory://", "TMPDIR": str(tmp_path)})
    env.pop("STATEFLEET_APP")
    serve = ServeProcess(str(ROOT / "examples" / "support_agent.py") + ":agent", "memory://",
                         log=tmp_path / "serve.log", env=env, port=port)
    try:
        serve.wait_ready()
        yield serve
    finally:
        serve.stop()


def test_every_probe_of_the_deployment_answers_200_on_a_real_server(serve_as_rendered: ServeProcess) -> None:
    container = rendered_deployment()["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    with httpx.Client(timeout=5) as client:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert ports[get["port"]] == 8000  # the port the server is told to listen on (STATEFLEET_PORT)
            response = client.get(f"{serve_as_rendered.url}{get['path']}")
            assert response.status_code == 200, (probe, get["path"], response.text, serve_as_rendered.log_tail())
