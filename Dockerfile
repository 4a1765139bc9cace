# syntax=docker/dockerfile:1
#
# statefleet serve: the runtime only (`pip install statefleet`, no load tester, no matplotlib), run by an
# unprivileged numeric user on a read-only root filesystem. Nothing is written outside /tmp, which Kubernetes
# mounts as an emptyDir (the Deployments `statefleet k8s render` writes do); elsewhere run it the same way:
#
#   docker build -t statefleet .
#   docker run --read-only --tmpfs /tmp -p 8000:8000 -e STATEFLEET_STORE=redis://redis:6379/0 statefleet
#
# The image serves the example support agent (examples/support_agent.py, the agent of deploy/statefleet.yaml).
# Your agent goes in an image of its own, on top of this one:
#
#   FROM statefleet
#   COPY my_agent/ /app/my_agent/
#   ENV STATEFLEET_APP=my_agent.bot:agent
#
# Every `statefleet serve` option is an environment variable (STATEFLEET_STORE, STATEFLEET_WORKERS,
# STATEFLEET_DRAIN_TIMEOUT, ...) or an argument after the image name (`docker run statefleet --workers 2`).
# Linted by hadolint in the test suite (tests/deploy/test_image.py); no rule is ignored.

# One base for both stages: the virtualenv built in the first runs on the interpreter of the second.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/

# A wheel of this checkout (hatchling is fetched into pip's isolated build environment), then that wheel with its
# runtime dependencies into a virtualenv. Every dependency ships wheels for linux/amd64 and arm64: no compiler.
RUN python -m venv /opt/statefleet \
    && /opt/statefleet/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/statefleet/bin/pip install --no-cache-dir /tmp/wheels/statefleet-*.whl \
    && /opt/statefleet/bin/statefleet --version

FROM ${PYTHON_IMAGE} AS runtime

# The same numbers as the Deployments' runAsUser/runAsGroup/fsGroup; a passwd entry so that tools that look the
# user up by id find a name and a home (/tmp, the one writable place).
RUN groupadd --system --gid 10001 statefleet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin statefleet

COPY --from=build /opt/statefleet /opt/statefleet
COPY examples/__init__.py examples/support_agent.py /app/examples/

# Writes (Python's tempfile, the metrics of several workers, anything that wants a home or a cache) go to /tmp.
# Bytecode was compiled when the wheel was installed; nothing tries to write more of it at run time.
ENV PATH=/opt/statefleet/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    XDG_DATA_HOME=/tmp/.local/share \
    XDG_STATE_HOME=/tmp/.local/state \
    STATEFLEET_APP=examples.support_agent:agent \
    STATEFLEET_HOST=0.0.0.0 \
    STATEFLEET_PORT=8000

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Kubernetes ignores HEALTHCHECK (its probes are in the Deployment); Docker and Compose use it. Liveness only:
# /healthz never touches the store, so a Redis outage does not mark the container unhealthy.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STATEFLEET_PORT', '8000') + '/healthz', timeout=2)"]

# SIGTERM starts the ordered drain: /readyz fails, running turns get STATEFLEET_DRAIN_TIMEOUT (25 s) to finish, the
# rest is handed to the fleet, exit 0. Exec form, so statefleet is PID 1 and gets the signal itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["statefleet", "serve"]
# The agent comes from STATEFLEET_APP; arguments given to `docker run` are more `statefleet serve` options.
CMD []
