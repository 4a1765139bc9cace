"""A throwaway Redis Sentinel deployment on free loopback ports: a primary, its replicas and the sentinels that watch
them, for the tests and benchmarks of the Redis store's Sentinel support (a primary killed and replaced, a graceful
failover)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from ._polling import wait_until
from .redis_server import LocalRedisServer, free_port
from .tls import TLSFiles

# Test-only sentinel tuning (SENTINEL DEBUG): sentinels announce themselves every 200 ms instead of 2 s, so they find
# each other at once, and ask the servers for INFO every second instead of 10 s, so they see replicas sooner.
_SENTINEL_DEBUG = ("publish-period", "200", "info-period", "1000")


def _command(client: redis.Redis, *args: str) -> Any:
    """``client.execute_command(*args)``, which redis-py leaves untyped, for the commands it has no typed method for."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _pairs(reply: Any) -> dict[str, str]:
    """A SENTINEL MASTER reply (a flat list of names and values, or a map, as redis-py gives it) as a dict."""
    if isinstance(reply, dict):
        return {str(name): str(value) for name, value in reply.items()}
    items = [str(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


def _client(port: int, tls: TLSFiles | None) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True,
                       ssl=tls is not None, ssl_ca_certs=str(tls.ca_cert) if tls is not None else None)


class _SentinelProcess:
    """``redis-server <dir>/sentinel.conf --sentinel`` on a free port; the config file is the sentinel's own (it
    rewrites it with what it learns), in its own directory under the deployment's."""

    def __init__(self, directory: Path, master_name: str, master_port: int, quorum: int, down_after_ms: int,
                 failover_timeout_ms: int, start_timeout: float, tls: TLSFiles | None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; ./dev test and ./dev bench install it")
        self.port = free_port()
        self.directory = directory
        self.tls = tls
        directory.mkdir()
        config = directory / "sentinel.conf"
        listen = [f"port {self.port}"]
        if tls is not None:  # TLS to clients, and to the servers and other sentinels (tls-replication)
            listen = ["port 0", f"tls-port {self.port}", *(f"{name} {value}" for name, value in tls.server_config())]
        config.write_text("\n".join([
            *listen, "bind 127.0.0.1", "protected-mode no", f"dir {directory}", "loglevel notice",
            f"logfile {directory / 'sentinel.log'}", "sentinel resolve-hostnames no",
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}", "",
        ]))
        self.proc = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                _command(self.client(), "SENTINEL", "DEBUG", *_SENTINEL_DEBUG)
                return
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sentinel did not start on port {self.port} within {start_timeout} s") from None
                time.sleep(0.02)

    def client(self) -> redis.Redis:
        return _client(self.port, self.tls)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LocalRedisSentinel:
    """``with LocalRedisSentinel() as deployment: deployment.url`` — every sentinel watching the primary and seeing
    its replicas and the other sentinels, or ``RuntimeError``.

    Layout: a primary and ``replicas`` replicas (``LocalRedisServer``, the replicas started with ``--replicaof``),
    and ``sentinels`` sentinels whose quorum is a majority. A primary that stops answering is down after
    ``down_after_ms`` (1 s) and replaced a few seconds later; ``servers`` keeps the same objects whatever their role.
    With ``tls``, the servers and the sentinels speak only TLS, to clients and to each other, and ``url`` names the CA.
    """

    def __init__(self, replicas: int = 2, sentinels: int = 3, master_name: str = "mymaster", *,
                 tls: TLSFiles | None = None, down_after_ms: int = 1000, failover_timeout_ms: int = 5000,
                 start_timeout: float = 30.0) -> None:
        self.master_name = master_name
        self.tls = tls
        self.workdir = Path(tempfile.mkdtemp(prefix="statefleet-sentinel-"))
        self.servers: list[LocalRedisServer] = []
        self.sentinels: list[_SentinelProcess] = []
        self._replicas = replicas
        try:
            primary = self._start_server(None)
            with ThreadPoolExecutor(max(1, replicas)) as pool:
                list(pool.map(lambda _: self._start_server(primary.port), range(replicas)))
            self._wait(lambda: self._in_sync(primary.port), start_timeout, "replicas did not sync with the primary")
            quorum = sentinels // 2 + 1
            with ThreadPoolExecutor(sentinels) as pool:
                list(pool.map(lambda n: self._start_sentinel(n, primary.port, quorum, down_after_ms,
                                                             failover_timeout_ms, start_timeout), range(sentinels)))
            self._wait(self._sentinels_agree, start_timeout, "sentinels did not find the servers and each other")
        except BaseException:
            self.stop()
            raise

    def _start_server(self, replica_of: int | None) -> LocalRedisServer:
        for attempt in range(3):  # a port picked free can be taken before the server binds it
            try:
                # replicas sync at once, not after the default 5 s wait for more of them
                server = LocalRedisServer("--repl-diskless-sync-delay", "0", replica_of=replica_of, tls=self.tls)
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            self.servers.append(server)
            return server
        raise AssertionError("unreachable")

    def _start_sentinel(self, number: int, master_port: int, quorum: int, down_after_ms: int,
                        failover_timeout_ms: int, start_timeout: float) -> None:
        for attempt in range(3):
            try:
                sentinel = _SentinelProcess(self.workdir / f"sentinel-{number}-{attempt}", self.master_name,
                                            master_port, quorum, down_after_ms, failover_timeout_ms, start_timeout,
                                            self.tls)
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            self.sentinels.append(sentinel)
            return

    # -- talking to the servers -----------------------------------------------------------------------------------

    def _client(self, port: int) -> redis.Redis:
        return _client(port, self.tls)

    def _server(self, port: int) -> LocalRedisServer:
        return next(server for server in self.servers if server.port == port)

    def _in_sync(self, primary_port: int) -> bool:
        """The primary counts every replica online, and every replica's link to it is up."""
        info = self._client(primary_port).info("replication")
        if info.get("role") != "master" or info.get("connected_slaves") != self._replicas:
            return False
        return all(self._client(server.port).info("replication").get("master_link_status") == "up"
                   for server in self.servers if server.port != primary_port and server.proc.poll() is None)

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            master = _pairs(_command(sentinel.client(), "SENTINEL", "MASTER", self.master_name))
            if (master["flags"] != "master" or int(master["num-slaves"]) != self._replicas
                    or int(master["num-other-sentinels"]) != len(self.sentinels) - 1):
                return False
        return True

    def _wait(self, condition: Callable[[], bool], timeout: float, failure: str) -> None:
        wait_until(condition, timeout, failure)

    def _master_port(self, sentinel: _SentinelProcess) -> int:
        _host, port = _command(sentinel.client(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return int(port)

    # -- public ---------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+sentinel://`` with every sentinel, the master name and database 0 (``rediss+sentinel://``, naming
        the CA, with TLS)."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        if self.tls is not None:
            return f"rediss+sentinel://{hosts}/{self.master_name}/0?{self.tls.query}"
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    @property
    def sentinel_ports(self) -> list[int]:
        return [sentinel.port for sentinel in self.sentinels]

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers reports it."""
        for sentinel in self.sentinels:
            try:
                return self._master_port(sentinel)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_primary(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send ``sig`` to the current primary and wait for it to end (``SIGSTOP`` freezes it instead); its port."""
        port = self.primary_port()
        server = self._server(port)
        if sig == signal.SIGSTOP:
            server.pause()
        else:
            server.proc.send_signal(sig)
            server.proc.wait(10)
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30) -> int:
        """Wait until every sentinel names the same new primary instead of ``old_port``, that server says it is a
        master, and no sentinel is still failing over (reconfiguring the other replicas); the new primary's port."""
        new_port = 0

        def replaced() -> bool:
            nonlocal new_port
            ports = {self._master_port(sentinel) for sentinel in self.sentinels}
            if len(ports) != 1 or old_port in ports:
                return False
            new_port = ports.pop()
            if str(_command(self._client(new_port), "ROLE")[0]) != "master":
                return False
            return all(_pairs(_command(sentinel.client(), "SENTINEL", "MASTER", self.master_name))["flags"]
                       == "master" for sentinel in self.sentinels)

        self._wait(replaced, timeout, f"the sentinels did not replace the primary on port {old_port}")
        return new_port

    def failover(self, timeout: float = 30) -> int:
        """A graceful failover (SENTINEL FAILOVER): a replica is promoted and the old primary follows it; the new
        primary's port."""
        old_port = self.primary_port()

        def started() -> bool:
            try:
                _command(self.sentinels[0].client(), "SENTINEL", "FAILOVER", self.master_name)
            except redis.ResponseError as error:  # INPROG, or NOGOODSLAVE while a replica is still being set up
                if not str(error).startswith(("INPROG", "NOGOODSLAVE")):
                    raise
                return False
            return True

        self._wait(started, timeout, "the sentinel did not start a failover")
        return self.wait_for_failover(old_port, timeout)

    def flush(self) -> None:
        """Remove every key: FLUSHALL on the primary, then wait (up to 2 s) for the replicas to apply it."""
        client = self._client(self.primary_port())
        client.flushall()
        client.wait(int(client.info("replication")["connected_slaves"]), 2000)

    def stop(self) -> None:
        """Stop the sentinels first (so that stopping the servers starts no failover), then the servers."""
        for group in (self.sentinels, self.servers):
            if group:
                with ThreadPoolExecutor(len(group)) as pool:
                    list(pool.map(lambda process: process.stop(), group))
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRedisSentinel:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
