"""``statefleet serve``: uvicorn processes around the ASGI app, with an ordered drain on SIGTERM.

One worker is one process and one instance of the fleet. With ``--workers N`` a supervisor binds the port
once and starts N worker processes that share it; signals go to every worker.

Metrics with several workers: before starting them, the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory (or empties the one the environment names) so that every worker's prometheus_client writes
its values there, and whichever worker answers a scrape reports the sum; as each worker exits, its live
gauges are dropped (``mark_process_dead``). One worker keeps its metrics in memory.

Drain (first SIGTERM or SIGINT): ``/readyz`` fails and new messages get 503 at once; running turns and the
requests waiting for them get up to ``--drain-timeout`` to finish; what is still running then is handed back
to the fleet (any other instance's sweeper takes it over); then the server closes and exits 0. A second
signal exits at once — still losing nothing accepted, since the store keeps it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn

from .._gc import FrozenHeap, tune_for_serving
from .._loading import load_agent
from ..engine import EngineSettings
from ..store import check_store_url
from .app import StatefleetApp, create_app
from .settings import ServerSettings

log = logging.getLogger(__name__)

#: How long (s) a thread holding the GIL keeps it while another waits (CPython's default: 5 ms). The event loop
#: wants it back after every system call; against a computing handler thread each of those waits cost up to
#: 5 ms, enough to put a 503's p99 near 100 ms (benchmarks/overload.py). With 1 ms: ~5 ms.
GIL_SWITCH_INTERVAL = 0.001


@dataclass(frozen=True)
class ServeOptions:
    """What ``statefleet serve`` was asked to run."""

    #: ``module:agent`` or ``path/to/file.py:agent``.
    app: str
    #: Store URL.
    store: str
    #: Requests one worker serves at once (waiting for a reply, streaming, or accepted with ``wait=false``
    #: and still running); more are answered 503 + Retry-After at once. Its default is the CLI's, sized from
    #: measured capacity (docs/operations.md, "Sizing the in-flight limit").
    max_in_flight: int
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    #: Seconds running turns get on SIGTERM before they are handed back.
    drain_timeout: float = 25.0
    #: Seconds before a dead instance's leases are taken over.
    lease_ttl: float = 3.0
    #: host:port other instances reach this one at.
    advertise: str | None = None
    log_level: str = "info"
    #: Export Prometheus metrics at /metrics.
    metrics: bool = True
    #: Freeze startup objects and raise the GC thresholds (see ``statefleet._gc``).
    tune_gc: bool = True
    #: Threads that run plain ``def`` handlers (the event loop's default executor). One: Python computes on one
    #: core at a time, and every further thread that computes starves the event loop of the GIL.
    handler_threads: int = 1
    #: A message without an Idempotency-Key takes the request's x-request-id as its key.
    request_id_idempotency: bool = True
    #: Where instances of another version are reached when the registry lists none: ``http://x-{version}:8000``.
    version_url_template: str | None = None

    def __repr__(self) -> str:
        from ..store import redact_url

        return (f"ServeOptions(app={self.app!r}, store={redact_url(self.store)!r}, host={self.host!r}, "
                f"port={self.port}, workers={self.workers}, max_in_flight={self.max_in_flight})")


def build_app(options: ServeOptions) -> StatefleetApp:
    agent = load_agent(options.app)
    if agent.runs_in_threads:
        log.info("agent %r has a plain def handler: %d turn(s) at a time per worker run it (--handler-threads); "
                 "raise it if the handler blocks on I/O, or make the handler async", agent.name,
                 options.handler_threads)
    settings = ServerSettings(
        engine=EngineSettings(lease_ttl=options.lease_ttl, max_in_flight=options.max_in_flight),
        drain_timeout=options.drain_timeout,
        advertise_address=options.advertise or (f"{options.host}:{options.port}" if options.port else None),
        metrics=options.metrics,
        request_id_idempotency=options.request_id_idempotency,
        version_url_template=options.version_url_template or None,
    )
    return create_app(agent, options.store, settings)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with statefleet's drain on the first signal and exit code 0 after it."""

    def __init__(self, config: uvicorn.Config, app: StatefleetApp, drain_timeout: float,
                 handler_threads: int) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout = drain_timeout
        self.handler_threads = handler_threads
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        # Plain-def handlers run here (asyncio.to_thread); asyncio's own default is min(32, CPUs + 4) threads,
        # and several threads computing at once starve the loop: 503s took seconds (benchmarks/overload.py).
        self._loop.set_default_executor(
            ThreadPoolExecutor(self.handler_threads, thread_name_prefix="statefleet-handler"))
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn, do not re-raise the signal after shutdown: a drained exit is a clean exit (0).
        if self._draining is not None or self._loop is None:
            log.warning("second signal: exiting now; the fleet takes over what was still running here")
            self.force_exit = True
            self.should_exit = True
            return
        log.info("signal %s: draining (readyz fails, new messages get 503)", signal.Signals(sig).name)
        self.app.drain()
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._draining = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            engine = self.app.engine
        except Exception:
            self.should_exit = True
            return
        deadline = time.monotonic() + self.drain_timeout
        while not engine.idle and time.monotonic() < deadline:  # noqa: ASYNC110 - a poll of two counters
            await asyncio.sleep(0.05)
        if not engine.idle:
            log.warning("drain timeout: handing %d running turns back to the fleet", engine.in_flight)
        # Hands back whatever still runs (at once), so the lifespan shutdown has nothing left to wait for.
        await engine.stop(drain_timeout=0.0)
        self.should_exit = True


def uvicorn_config(app: StatefleetApp, options: ServeOptions) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        ws="websockets-sansio",
        lifespan="on",
        log_level=options.log_level,
        access_log=False,
        log_config=None,  # the CLI configured logging already
        timeout_graceful_shutdown=int(options.drain_timeout) + 5,
        timeout_keep_alive=30,
        server_header=False,
    )


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def run_worker(options: ServeOptions, sock: socket.socket | None = None) -> int:
    """Run one instance (in this process) until drained."""
    if sock is not None:
        from ..observability.logs import configure_logging

        configure_logging(options.log_level)
    app = build_app(options)
    server = DrainingServer(uvicorn_config(app, options), app, options.drain_timeout, options.handler_threads)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    if options.tune_gc:
        tune_for_serving()
        FrozenHeap().start_thread()
    server.run(sockets=[sock] if sock is not None else None)
    return 0 if server.started else 3


def _worker_main(options: ServeOptions, sock: socket.socket) -> None:
    sys.exit(run_worker(options, sock))


@dataclass(frozen=True)
class MetricsDir:
    path: Path
    #: True when the supervisor created it (and removes it at exit).
    owned: bool


def prepare_multiprocess_metrics() -> MetricsDir:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before any worker imports prometheus_client.

    A directory the environment already names is emptied of old value files (values of an earlier run would
    otherwise be added to this one's); else a fresh temporary one is made.
    """
    from ..observability.metrics import MULTIPROC_ENV

    named = os.environ.get(MULTIPROC_ENV)
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return MetricsDir(path, owned=False)
    path = Path(tempfile.mkdtemp(prefix="statefleet-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return MetricsDir(path, owned=True)


def _mark_dead(pid: int, metrics_dir: MetricsDir) -> None:
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid, str(metrics_dir.path))  # type: ignore[no-untyped-call]
    except OSError:
        log.warning("could not drop the live gauges of worker %d", pid, exc_info=True)


def run(options: ServeOptions) -> int:
    """Serve ``options.app``; returns the exit code."""
    load_agent(options.app)  # fail fast, with a clear message, before binding anything
    check_store_url(options.store)
    if options.workers == 1:
        return run_worker(options)
    sock = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as exc:
        log.error("cannot bind %s:%d: %s", options.host, options.port, exc)
        return 3
    sock.set_inheritable(True)
    metrics_dir = prepare_multiprocess_metrics() if options.metrics else None
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(options, sock), name=f"statefleet-worker-{i}")
               for i in range(options.workers)]
    for worker in workers:
        worker.start()
    log.info("serving on %s:%d with %d workers (pids %s)", options.host, sock.getsockname()[1],
             options.workers, ", ".join(str(w.pid) for w in workers))

    def forward(sig: int, _frame: FrameType | None) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        running = {worker.sentinel: worker for worker in workers}
        while running:
            for sentinel in multiprocessing.connection.wait(list(running)):
                worker = running.pop(sentinel)  # type: ignore[arg-type]
                worker.join()
                if metrics_dir is not None and worker.pid is not None:
                    _mark_dead(worker.pid, metrics_dir)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        if metrics_dir is not None and metrics_dir.owned:
            shutil.rmtree(metrics_dir.path, ignore_errors=True)
    codes = [worker.exitcode for worker in workers]
    return 0 if all(code == 0 for code in codes) else 1
