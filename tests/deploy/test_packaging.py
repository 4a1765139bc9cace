"""``pip install statefleet`` is the runtime (what the container image carries); the load tester, its HTML report,
the mock LLM and the status view come with ``statefleet[loadtest]``. Checked on the wheel built from this checkout
(offline: ``pip wheel --no-build-isolation`` with the hatchling of the dev extra), on what its requirements pull in,
and on processes in which the load tester's packages cannot be imported."""

from __future__ import annotations

import email.parser
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from statefleet.testing import ServeProcess

ROOT = Path(__file__).parents[2]
AGENT = f"{ROOT / 'tests' / 'serve' / 'agents.py'}:echo"
#: What only the load tester, its report, the mock LLM and the status view use.
LOADTEST_ONLY = {"hdrhistogram", "matplotlib", "rich"}
#: What the runtime needs (the k8s renderer's config is pydantic; aiohttp forwards messages between versions).
RUNTIME = {"redis", "click", "uvicorn", "httpx", "prometheus-client", "opentelemetry-api", "opentelemetry-sdk",
           "orjson", "pydantic", "aiohttp"}
#: Installed first thing in the processes below (as a sitecustomize): the load tester's packages cannot be
#: imported, as after `pip install statefleet`.
BLOCKER = '''
import sys

BLOCKED = {"hdrh", "matplotlib", "rich"}


class RefuseLoadTesterPackages:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (the test plays a base install)", name=name)
        return None


sys.meta_path.insert(0, RefuseLoadTesterPackages())
'''


@pytest.fixture(scope="module")
def requires_dist(tmp_path_factory: pytest.TempPathFactory) -> list[Requirement]:
    """The Requires-Dist of the wheel built from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "--quiet", "--wheel-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("statefleet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.BytesParser().parsebytes(archive.read(name))
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def wanted(marker: Marker | None, extras: set[str]) -> bool:
    """Whether a requirement with ``marker`` is installed on this machine when ``extras`` are asked for."""
    if marker is None:
        return True
    return any(marker.evaluate({"extra": extra}) for extra in extras | {""})


def unconditional(requirements: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements if wanted(r.marker, set())}


def test_the_wheel_requires_the_runtime_and_none_of_the_load_testers_packages(
    requires_dist: list[Requirement],
) -> None:
    base = unconditional(requires_dist)
    assert base >= RUNTIME
    assert not base & LOADTEST_ONLY


def test_the_loadtest_extra_brings_them_and_dev_includes_it(requires_dist: list[Requirement]) -> None:
    def under(extra: str) -> set[str]:
        return {canonicalize_name(r.name) for r in requires_dist if r.marker and wanted(r.marker, {extra})}

    assert under("loadtest") >= LOADTEST_ONLY
    # dev names statefleet[loadtest] (hatchling writes its requirements out), so `pip install -e .[dev]` alone
    # runs the tests too; ./dev asks for both
    assert under("dev") >= LOADTEST_ONLY


def test_nothing_the_base_install_pulls_in_brings_them_back(requires_dist: list[Requirement]) -> None:
    # What `pip install statefleet` installs on this machine: the closure of the unconditional requirements over
    # the metadata of the installed distributions (markers evaluated here, extras followed)
    seen: set[str] = set()
    todo = [(r.name, set(r.extras)) for r in requires_dist if wanted(r.marker, set())]
    while todo:
        name, extras = todo.pop()
        key = f"{canonicalize_name(name)}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} (required by the base install) is not installed here; run ./dev test")
        for line in requires:
            requirement = Requirement(line)
            if wanted(requirement.marker, extras):
                todo.append((requirement.name, set(requirement.extras)))
    installed = {key.partition("[")[0] for key in seen}
    assert installed >= RUNTIME
    assert not installed & LOADTEST_ONLY, f"pulled in by the base install: {installed & LOADTEST_ONLY}"


@pytest.fixture
def base_install_env(tmp_path: Path) -> dict[str, str]:
    """Environment variables under which Python processes cannot import the load tester's packages."""
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, cwd=ROOT)


def test_the_blocker_blocks(base_install_env: dict[str, str]) -> None:
    done = run_python(base_install_env, "-c", "import matplotlib")
    assert done.returncode == 1 and "the test plays a base install" in done.stderr


def test_the_runtime_imports_without_the_load_testers_packages(base_install_env: dict[str, str]) -> None:
    code = ("import statefleet, statefleet.server, statefleet.server.runner, statefleet.store, statefleet.engine, "
            "statefleet.observability, statefleet.cli, statefleet.demo, statefleet.testing\n"
            "import sys\n"
            "print(sorted(m for m in sys.modules if m.partition('.')[0] in {'hdrh', 'matplotlib', 'rich'}))")
    done = run_python(base_install_env, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture
def served_without_the_load_tester(base_install_env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:
    serve = ServeProcess(AGENT, f"sqlite:///{tmp_path / 'state.db'}", log=tmp_path / "serve.log", env=base_install_env)
    try:
        serve.wait_ready()
        yield serve
    finally:
        serve.stop()


def test_serve_runs_a_turn_without_the_load_testers_packages(served_without_the_load_tester: ServeProcess) -> None:
    serve = served_without_the_load_tester
    response = httpx.post(f"{serve.url}/v1/conversations/c/messages", json={"text": "hi"}, timeout=30)
    assert response.status_code == 200 and response.json()["turn"] == 1
    assert httpx.get(f"{serve.url}/metrics", timeout=10).status_code == 200
    assert "Traceback" not in serve.log_tail()


@pytest.mark.parametrize(("argv", "what"), [
    (["loadtest", "http://127.0.0.1:1", "--duration", "1s"], "statefleet loadtest needs the load tester's"),
    (["loadtest", "--help"], "statefleet loadtest needs the load tester's"),
    (["mock-llm", "--port", "0"], "statefleet mock-llm needs the mock LLM's"),
    (["status", "http://127.0.0.1:1", "--once"], "statefleet status needs the status view's"),
])
def test_a_command_that_needs_the_extra_names_it(base_install_env: dict[str, str], argv: list[str],
                                                 what: str) -> None:
    done = run_python(base_install_env, "-m", "statefleet", *argv)
    assert done.returncode == 2, done.stderr
    assert what in done.stderr and "pip install 'statefleet[loadtest]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_help_lists_every_command_without_the_extra(base_install_env: dict[str, str]) -> None:
    done = run_python(base_install_env, "-m", "statefleet", "--help")
    assert done.returncode == 0, done.stderr
    for command in ("serve", "demo", "status", "loadtest", "mock-llm"):
        assert command in done.stdout
    assert "Not installed: pip install 'statefleet[loadtest]'" in done.stdout
