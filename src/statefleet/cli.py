"""The ``statefleet`` command. Every option also reads a ``STATEFLEET_*`` environment variable.

Exit codes: 0 ok, 2 bad usage or configuration (including a command whose extra is not installed), 3 startup
failure (store unreachable, port taken).

``pip install statefleet`` is the runtime (``serve``, ``demo``); ``loadtest``, ``mock-llm`` and ``status`` need
the ``loadtest`` extra, and say so when it is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import sys

import click

from .errors import ConfigError, StatefleetError
from .observability.logs import configure_logging

EXIT_CONFIG = 2
EXIT_STARTUP = 3

LOADTEST_EXTRA = "pip install 'statefleet[loadtest]'"
#: The distribution behind each module a tool command needs beyond the base install.
_DISTRIBUTIONS = {"aiohttp": "aiohttp", "hdrh": "hdrhistogram", "matplotlib": "matplotlib", "rich": "rich"}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "STATEFLEET"})
@click.version_option(package_name="statefleet")
def main() -> None:
    """Serve stateful conversational agents from many interchangeable instances."""


def _at_least_one(_ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"{value} would refuse every message; give a number of requests of at least 1 "
                                 f"(or leave {param.envvar} unset for the default)")
    return value


@main.command()
@click.argument("app", envvar="STATEFLEET_APP")
@click.option("--store", envvar="STATEFLEET_STORE", default="sqlite:///.statefleet/state.db", show_default=True,
              help="State store URL: sqlite:///path, redis://host:port/db, rediss://..., "
                   "redis+sentinel://s1:26379,s2:26379/mymaster/0, redis+cluster://n1:7000,n2:7000/, memory://")
@click.option("--host", envvar="STATEFLEET_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="STATEFLEET_PORT", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", envvar="STATEFLEET_WORKERS", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Processes sharing the port; each is its own instance of the fleet.")
@click.option("--drain-timeout", envvar="STATEFLEET_DRAIN_TIMEOUT", type=click.FloatRange(0.1, 3600),
              default=25.0, show_default=True, help="Seconds in-flight turns get on SIGTERM before hand-over.")
@click.option("--lease-ttl", envvar="STATEFLEET_LEASE_TTL", type=click.FloatRange(0.2, 600), default=3.0,
              show_default=True, help="Seconds before a dead instance's conversations are taken over.")
@click.option("--advertise", envvar="STATEFLEET_ADVERTISE", default=None,
              help="host:port peers reach this instance at (default: the bound address).")
@click.option("--log-level", envvar="STATEFLEET_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--metrics/--no-metrics", envvar="STATEFLEET_METRICS", default=True, show_default=True,
              help="Prometheus metrics at /metrics. Tracing follows the OTEL_* variables (off by default).")
@click.option("--tune-gc/--no-tune-gc", envvar="STATEFLEET_TUNE_GC", default=True, show_default=True,
              help="Keep live objects out of the garbage collector's scans and collect in full every 10 min "
                   "(no event-loop pauses growing with the turns in flight); see docs/operations.md.")
@click.option("--max-in-flight", envvar="STATEFLEET_MAX_IN_FLIGHT", type=int, default=256, show_default=True,
              callback=_at_least_one,
              help="Requests each worker serves at once (waiting for a reply, streaming, or accepted with "
                   "wait=false and still running); more get 503 + Retry-After at once. Sized from measured "
                   "capacity; see 'Sizing the in-flight limit' in docs/operations.md.")
@click.option("--request-id-idempotency/--no-request-id-idempotency", envvar="STATEFLEET_REQUEST_ID_IDEMPOTENCY",
              default=True, show_default=True,
              help="A message posted without an Idempotency-Key takes the request's x-request-id (set once by "
                   "Envoy/Istio at the edge and kept on its retries) as its key, so a retried POST never runs a "
                   "second turn; see docs/api.md.")
@click.option("--handler-threads", envvar="STATEFLEET_HANDLER_THREADS", type=click.IntRange(1, 1024), default=1,
              show_default=True,
              help="Threads each worker runs plain `def` handlers on (async handlers run on the event loop). "
                   "More threads computing at once starve the event loop; raise it only for def handlers that "
                   "block on I/O.")
@click.option("--version-url-template", envvar="STATEFLEET_VERSION_URL_TEMPLATE", default=None,
              help="Where an instance of another version is reached when the fleet registry lists none, "
                   "{version} standing for it: http://support-{version}:8000 (the Kubernetes render sets it). "
                   "Messages of a conversation pinned to another version are forwarded there; see docs/canary.md.")
def serve(app: str, store: str, host: str, port: int, workers: int, drain_timeout: float, lease_ttl: float,
          advertise: str | None, log_level: str, metrics: bool, tune_gc: bool, max_in_flight: int,
          request_id_idempotency: bool, handler_threads: int, version_url_template: str | None) -> None:
    """Serve the agent APP (module:agent or path/to/file.py:agent) over HTTP, SSE and WebSocket."""
    from .server.runner import ServeOptions, run

    configure_logging(log_level)
    options = ServeOptions(app=app, store=store, max_in_flight=max_in_flight, host=host, port=port,
                           workers=workers, drain_timeout=drain_timeout, lease_ttl=lease_ttl, advertise=advertise,
                           log_level=log_level, metrics=metrics, tune_gc=tune_gc, handler_threads=handler_threads,
                           request_id_idempotency=request_id_idempotency,
                           version_url_template=version_url_template)
    _exit(lambda: run(options))


@main.command()
@click.option("--users", type=click.IntRange(1, 50), default=3, show_default=True, help="Scripted users.")
@click.option("--keep", is_flag=True, help="Keep the demo's state directory.")
def demo(users: int, keep: bool) -> None:
    """Two instances on the embedded SQLite store, users alternating between them, one instance killed."""
    from .demo import run_demo

    configure_logging("warning")
    _exit(lambda: run_demo(users=users, keep=keep))


@main.command()
@click.argument("url", envvar="STATEFLEET_URL")
@click.option("--once", is_flag=True, help="Print one snapshot and exit (rates over --interval).")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
              help="Seconds between samples.")
def status(url: str, once: bool, interval: float) -> None:
    """A live view of the fleet behind URL (any instance): instances, versions, load, latency, takeovers."""
    _require_extra("status", "the status view", ("rich",))
    import httpx

    from .status import run_status

    try:
        _exit(lambda: run_status(url, once=once, interval=interval))
    except httpx.HTTPError as exc:
        click.echo(f"statefleet: cannot read {url}/v1/fleet: {exc}", err=True)
        sys.exit(EXIT_STARTUP)


def _missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The distributions behind ``modules`` that are not installed (looked up without importing them)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # an import hook that refuses the module
            found = False
        if not found:
            missing.append(_DISTRIBUTIONS.get(module, module))
    return missing


def _refuse_without_extra(command: str, what: str, missing: list[str]) -> None:
    click.echo(f"statefleet {command} needs {what}'s dependencies ({', '.join(missing)} not installed): "
               f"{LOADTEST_EXTRA}", err=True)
    sys.exit(EXIT_CONFIG)


def _require_extra(command: str, what: str, modules: tuple[str, ...]) -> None:
    """Exit with the install command when a module ``command`` needs is not installed."""
    missing = _missing_modules(modules)
    if missing:
        _refuse_without_extra(command, what, missing)


def _needs_extra(command: str, what: str, missing: list[str]) -> click.Command:
    """Stands in for ``command`` when its extra is missing: whatever the arguments, it names the extra."""

    @click.command(command, add_help_option=False, short_help=f"Not installed: {LOADTEST_EXTRA}",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def needs_extra() -> None:
        _refuse_without_extra(command, what, missing)

    return needs_extra


@main.group()
def k8s() -> None:
    """Kubernetes manifests for a fleet, rendered from one config file (docs/kubernetes.md)."""


@k8s.command("render")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="The fleet config (see deploy/statefleet.yaml).")
@click.option("--out", required=True,
              help="A directory to write (kustomization.yaml + one file per object), or - for one multi-document "
                   "YAML on stdout.")
def k8s_render(config_file: str, out: str) -> None:
    """Render every object of the fleet described in --config; nothing is sent to a cluster."""
    from pathlib import Path

    def run() -> int:
        try:
            from .k8s import load_config, render, render_stream, write_directory
        except ModuleNotFoundError as exc:
            raise ConfigError(f"statefleet k8s render needs the {exc.name} package: "
                              f"pip install 'pydantic>=2' 'pyyaml>=6'") from None
        objects = render(load_config(config_file))
        if out == "-":
            click.echo(render_stream(objects), nl=False)
            return 0
        try:
            written = write_directory(objects, Path(out))
        except OSError as exc:
            raise ConfigError(f"cannot write the manifests to {out!r}: {exc.strerror or exc}") from None
        click.echo(f"statefleet: wrote {len(written)} files to {out} (kubectl apply -k {out})", err=True)
        return 0

    _exit(run)


def _register_canary() -> None:
    from .canary.commands import canary

    main.add_command(canary)


_register_canary()


def _register_tool_commands() -> None:
    # Defined in their own packages; their heavy imports wait until the command runs. Without the loadtest
    # extra they are not imported at all (mockllm imports hdrhistogram): a stand-in names the extra instead.
    missing = _missing_modules(("hdrh", "matplotlib"))
    if missing:
        main.add_command(_needs_extra("loadtest", "the load tester", missing))
    else:
        from .loadtest.cli import loadtest

        main.add_command(loadtest)
    missing = _missing_modules(("hdrh",))
    if missing:
        main.add_command(_needs_extra("mock-llm", "the mock LLM", missing))
    else:
        from .mockllm import mock_llm

        main.add_command(mock_llm)


_register_tool_commands()


def _exit(fn: object) -> None:
    try:
        code = fn()  # type: ignore[operator]
    except ConfigError as exc:
        click.echo(f"statefleet: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except StatefleetError as exc:
        click.echo(f"statefleet: {exc}", err=True)
        sys.exit(EXIT_STARTUP)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(int(code or 0))


if __name__ == "__main__":  # pragma: no cover
    logging.captureWarnings(True)
    main()
