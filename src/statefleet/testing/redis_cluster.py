"""A throwaway Redis Cluster on free loopback ports: what the tests and benchmarks of the Redis store's Cluster
support start themselves, with the faults they need (a primary killed and its replica promoted, a node brought
back, a third of the slots moved while clients write)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis

from ._polling import wait_until
from .redis_server import LocalRedisServer, free_port
from .tls import TLSFiles

SLOTS = 16384


def _command(client: redis.Redis, *args: str) -> Any:
    """``client.execute_command(*args)``, which redis-py leaves untyped, for the commands it has no typed method for."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class ClusterNode:
    """One node as it is now: ``role`` is ``"master"``, ``"replica"`` or ``"down"`` (killed or frozen)."""

    port: int
    pid: int
    role: str


@dataclass(frozen=True)
class _View:
    """What one node's CLUSTER NODES says: every node's id, port, flags and master, and who owns which slots."""

    ports: dict[str, int]
    flags: dict[str, frozenset[str]]
    masters: dict[str, str]
    slots: dict[int, str]
    open_slots: bool


def _parse_nodes(text: str) -> _View:
    ports: dict[str, int] = {}
    flags: dict[str, frozenset[str]] = {}
    masters: dict[str, str] = {}
    slots: dict[int, str] = {}
    open_slots = False
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id = fields[0]
        ports[node_id] = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        flags[node_id] = frozenset(fields[2].split(","))
        masters[node_id] = fields[3]
        for spec in fields[8:]:
            if spec.startswith("["):
                open_slots = True
                continue
            first, _, last = spec.partition("-")
            for slot in range(int(first), int(last or first) + 1):
                slots[slot] = node_id
    return _View(ports, flags, masters, slots, open_slots)


class LocalRedisCluster:
    """``with LocalRedisCluster() as cluster: cluster.url`` — a cluster whose every node agrees, or ``RuntimeError``.

    Layout: ``primaries`` masters share the 16384 slots evenly (``redis-cli --cluster create``), each with
    ``replicas_per_primary`` replicas; 3 × 1 makes six nodes. Every node is a ``LocalRedisServer`` on its own free
    port with its cluster bus on another, and keeps its identity (``nodes.conf``) in its own temp dir, so that
    ``restart(port)`` brings a killed node back as the same node: a primary that was failed over rejoins as a replica.
    Nodes declare a peer failed after ``node_timeout_ms`` (1 s), so a failover takes a few seconds.
    With ``tls``, clients, the cluster bus and replication all speak TLS, and ``url`` names the CA.
    """

    def __init__(self, primaries: int = 3, replicas_per_primary: int = 1, *, tls: TLSFiles | None = None,
                 node_timeout_ms: int = 1000, start_timeout: float = 30.0) -> None:
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self.tls = tls
        self.node_timeout_ms = node_timeout_ms
        self._servers: dict[int, LocalRedisServer] = {}
        self._ids: dict[int, str] = {}
        self._lost_slots: dict[int, list[int]] = {}
        try:
            self._start_nodes(primaries * (1 + replicas_per_primary))
            ports = list(self._servers)
            self._redis_cli("--cluster", "create", *(f"127.0.0.1:{port}" for port in ports),
                            "--cluster-replicas", str(replicas_per_primary), "--cluster-yes", timeout=start_timeout)
            self._ids = {port: str(_command(self._client(port), "CLUSTER", "MYID")) for port in ports}
            self._wait(self._healthy, start_timeout, "did not agree on one slot map")
        except BaseException:
            self.stop()
            raise

    def _start_nodes(self, count: int) -> None:
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(self._start_node) for _ in range(count)]
        errors = [future.exception() for future in futures if future.exception() is not None]
        if errors:
            raise RuntimeError(f"{len(errors)} of {count} cluster nodes did not start") from errors[0]

    def _start_node(self) -> None:
        for attempt in range(3):  # a port picked free can be taken before the node binds it
            try:
                server = LocalRedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                          "--cluster-port", str(free_port()),
                                          "--cluster-node-timeout", str(self.node_timeout_ms),
                                          "--repl-diskless-sync-delay", "0",  # replicas sync at once, not in 5 s
                                          *(["--tls-cluster", "yes"] if self.tls is not None else []), tls=self.tls)
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            self._servers[server.port] = server
            return

    # -- talking to the nodes -------------------------------------------------------------------------------------

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                           decode_responses=True, ssl=self.tls is not None,
                           ssl_ca_certs=str(self.tls.ca_cert) if self.tls is not None else None)

    def _cli_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.tls.ca_cert)] if self.tls is not None else []

    def _redis_cli(self, *args: str, timeout: float) -> str:
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RuntimeError("redis-cli is not installed; it comes with redis-server")
        result = subprocess.run([binary, *self._cli_args(), *args], capture_output=True, text=True, timeout=timeout,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args[:2])} failed: {(result.stdout + result.stderr)[-2000:]}")
        return result.stdout

    def _running(self, port: int) -> bool:
        server = self._servers[port]
        return server.proc.poll() is None and not server.paused

    def _running_ports(self) -> list[int]:
        return [port for port in self._servers if self._running(port)]

    def _view(self, port: int) -> _View:
        return _parse_nodes(str(_command(self._client(port), "CLUSTER", "NODES")))

    def _any_view(self) -> _View:
        for port in self._running_ports():
            try:
                return self._view(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no cluster node answers")

    def _role(self, port: int) -> str:
        if not self._running(port):
            return "down"
        try:
            role = _command(self._client(port), "ROLE")
        except redis.RedisError:
            return "down"
        return "master" if role[0] == "master" else "replica"

    def _healthy(self) -> bool:
        """Every running node says ``cluster_state:ok``, knows every other running node as up, and all of them
        see the same complete slot map, owned by running nodes only and with no slot half-migrated; every running
        replica is in sync with its primary."""
        running = self._running_ports()
        running_ids = {self._ids[port] for port in running} if self._ids else set()
        maps = []
        for port in running:
            client = self._client(port)
            if client.cluster("INFO")["cluster_state"] != "ok":
                return False
            view = self._view(port)
            if view.open_slots or len(view.slots) != SLOTS or not set(view.slots.values()) <= running_ids:
                return False
            if any(node_id not in view.flags or view.flags[node_id] & {"fail", "handshake", "noaddr"}
                   for node_id in running_ids):
                return False
            if self._role(port) == "replica" and client.info("replication").get("master_link_status") != "up":
                return False
            maps.append(view.slots)
        return all(slot_map == maps[0] for slot_map in maps)

    def _wait(self, condition: Callable[[], bool], timeout: float, failure: str) -> None:
        wait_until(condition, timeout, f"the cluster {failure}")

    # -- public ---------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every primary as a seed (``rediss+cluster://``, naming the CA, with TLS)."""
        seeds = ",".join(f"127.0.0.1:{port}" for port in self.primary_ports())
        if self.tls is not None:
            return f"rediss+cluster://{seeds}/?{self.tls.query}"
        return f"redis+cluster://{seeds}/"

    @property
    def nodes(self) -> list[ClusterNode]:
        return [ClusterNode(port, server.pid, self._role(port)) for port, server in self._servers.items()]

    def primary_ports(self) -> list[int]:
        """The ports of the primaries that own slots, in slot order, as a running node sees them."""
        view = self._any_view()
        owners = dict.fromkeys(view.slots[slot] for slot in sorted(view.slots))
        return [view.ports[node_id] for node_id in owners]

    def primary_for_slot(self, slot: int) -> int:
        view = self._any_view()
        return view.ports[view.slots[slot]]

    def kill(self, port: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the node and wait for it to end; ``SIGSTOP`` freezes it instead (``restart`` or ``stop``
        ends it). ``wait_for_failover`` then finds who took over its slots."""
        view = self._any_view()
        self._lost_slots[port] = [slot for slot, owner in view.slots.items() if view.ports[owner] == port]
        server = self._servers[port]
        if sig == signal.SIGSTOP:
            server.pause()
            return
        server.proc.send_signal(sig)
        server.proc.wait(10)

    def wait_for_failover(self, dead_port: int, timeout: float = 20) -> int:
        """Wait until a replica of the killed primary ``dead_port`` says it is a master, owns the slots the dead one
        had, and the running nodes agree the cluster is ok again; its port."""
        lost = self._lost_slots.get(dead_port)
        if not lost:
            raise ValueError(f"port {dead_port} was not a primary killed with kill()")
        new_port = 0

        def promoted() -> bool:
            nonlocal new_port
            if not self._healthy():
                return False
            new_port = self.primary_for_slot(lost[0])
            return new_port != dead_port and self._role(new_port) == "master"

        self._wait(promoted, timeout, f"did not fail over from port {dead_port}")
        return new_port

    def restart(self, port: int, timeout: float = 20) -> None:
        """Start a killed node again on its port and directory; it rejoins as the same node (a replica, if it was
        failed over) and this returns once the cluster is healthy with it."""
        self._servers[port].restart()
        self._lost_slots.pop(port, None)
        self._wait(self._healthy, timeout, f"did not take port {port} back")

    def reshard(self, fraction: float = 1 / 3, timeout: float = 60, to_port: int | None = None) -> int:
        """Move about ``fraction`` of all slots, taken evenly from the other primaries, to one primary (``to_port``,
        or the first): ``redis-cli --cluster reshard``, which migrates each slot's keys with MIGRATE, so clients
        writing meanwhile are redirected (ASK, then MOVED). The target's port, once every node agrees again."""
        self._wait(self._healthy, timeout, "was not healthy before resharding")
        primaries = self.primary_ports()
        target = to_port if to_port is not None else primaries[0]
        sources = [self._ids[port] for port in primaries if port != target]
        count = round(SLOTS * fraction)
        self._redis_cli("--cluster", "reshard", f"127.0.0.1:{target}", "--cluster-from", ",".join(sources),
                        "--cluster-to", self._ids[target], "--cluster-slots", str(count), "--cluster-yes",
                        "--cluster-pipeline", "1000",
                        timeout=timeout)
        self._wait(self._healthy, timeout, "did not agree on the slot map after resharding")
        return target

    def flush(self) -> None:
        """Remove every key: FLUSHALL on every primary (the replicas follow)."""
        for port in self.primary_ports():
            self._client(port).flushall()

    def stop(self) -> None:
        with ThreadPoolExecutor(max(1, len(self._servers))) as pool:
            list(pool.map(LocalRedisServer.stop, self._servers.values()))

    def __enter__(self) -> LocalRedisCluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
