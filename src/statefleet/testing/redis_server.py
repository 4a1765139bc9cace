"""A throwaway ``redis-server`` on a free loopback port: what the tests and benchmarks start so they never depend
on (or disturb) a Redis that happens to run on the machine. Nothing is persisted unless asked: the fault suite
asks (``persistent=True``) so that the server can be killed and restarted on the same port with its data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .tls import TLSFiles


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedisServer:
    """``with LocalRedisServer() as server: server.url`` — started and answering PING, or ``RuntimeError``.

    ``persistent=True`` writes every change to an append-only file before answering (``appendfsync always``),
    so ``restart()`` — a kill -9 and a start on the same port and directory — loses nothing acknowledged.
    ``pause()`` / ``resume()`` freeze and thaw the server (SIGSTOP / SIGCONT).
    ``replica_of=<port>`` starts it as a replica of the server on that loopback port.
    ``tls=make_tls_files(...)`` makes it speak TLS only on its port (replicating over TLS too): ``url`` is then a
    ``rediss://`` URL that names the CA to verify the server with.
    """

    def __init__(self, *extra_args: str, start_timeout: float = 10.0, persistent: bool = False,
                 replica_of: int | None = None, tls: TLSFiles | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; ./dev test and ./dev bench install it")
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="statefleet-redis-"))
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        replication = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of is not None else []
        self.tls = tls
        listen = ["--port", str(self.port)]
        if tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port)]
            listen += [arg for name, value in tls.server_config() for arg in (f"--{name}", value)]
        self._argv = [binary, *listen, "--bind", "127.0.0.1", "--save", "", *persistence,
                      "--dir", str(self.workdir), "--protected-mode", "no", "--loglevel", "warning", *replication,
                      *extra_args]
        self.paused = False
        self.proc = self._launch(start_timeout)

    def _launch(self, start_timeout: float) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + start_timeout
        while not self._answers("PING", b"+PONG"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port} within {start_timeout} s")
            time.sleep(0.02)
        return self.proc

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?{self.tls.query}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def _answers(self, command: str, expected: bytes) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as plain:
                if self.tls is None:
                    return self._exchange(plain, command, expected)
                context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
                with context.wrap_socket(plain, server_hostname="127.0.0.1") as wrapped:
                    return self._exchange(wrapped, command, expected)
        except OSError:  # ssl.SSLError too
            return False

    @staticmethod
    def _exchange(sock: socket.socket, command: str, expected: bytes) -> bool:
        sock.sendall(command.encode() + b"\r\n")
        return sock.recv(64).startswith(expected)

    def flush(self) -> None:
        """Remove every key (between tests)."""
        if not self._answers("FLUSHALL", b"+OK"):
            raise RuntimeError(f"redis-server on port {self.port} did not flush")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered until ``resume()``."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def restart(self, start_timeout: float = 10.0) -> None:
        """Kill the server with SIGKILL and start it again on the same port and directory.

        Only a ``persistent`` server keeps its data; the others come back empty.
        """
        self.proc.kill()
        self.proc.wait()
        self.paused = False
        self._launch(start_timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a stopped process would hold SIGTERM until continued
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRedisServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
