"""Failure injection during a run, each action logged on the run's timeline.

``--chaos ACTION:TARGET[@OPTION=VALUE,...]``, one option per action, several allowed:

- ACTION: ``kill`` (SIGKILL), ``sigterm`` (SIGTERM, then wait for the exit), ``pause`` (SIGSTOP, then
  SIGCONT after ``for``), ``redis-restart`` (``SHUTDOWN SAVE`` — or SIGTERM — then start it again);
- TARGET: a pid, ``port=N`` (the process listening on N), or any other text: processes whose command line
  contains it (one victim per injection, taken in turn);
- options: ``every=15s`` (repeat; default: once), ``after=5s`` (first injection; default: ``every``, or 5s),
  ``for=2s`` (pause length), ``restart=1s`` (start the process again that long after it exited, with the
  same command, directory and environment; ``redis-restart`` always restarts), ``times=N`` (at most N).

>>> ChaosSpec.parse("kill:port=8001@every=15s,restart=0s").every
15.0
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from . import processes
from .units import parse_duration

log = logging.getLogger(__name__)

ACTIONS = ("kill", "sigterm", "pause", "redis-restart")
_OPTIONS = ("every", "after", "for", "restart", "times")


@dataclass(frozen=True)
class ChaosSpec:
    """One ``--chaos`` option."""

    action: str
    #: ``pid``, ``port`` or ``cmd``.
    target_kind: str
    target: str
    every: float | None = None
    after: float = 5.0
    pause_for: float = 2.0
    restart: float | None = None
    times: int | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> ChaosSpec:
        action, sep, rest = text.partition(":")
        if not sep or action not in ACTIONS:
            raise ConfigError(f"--chaos {text!r}: write ACTION:TARGET[@every=15s,...] with ACTION one of "
                              f"{', '.join(ACTIONS)} (for example kill:port=8001@every=15s,restart=1s)")
        target, _at, options = rest.rpartition("@") if "@" in rest else (rest, "", "")
        target = target.strip()
        if not target:
            raise ConfigError(f"--chaos {text!r}: the target (a pid, port=N or a command fragment) is missing")
        values: dict[str, str] = {}
        for item in filter(None, (o.strip() for o in options.split(","))):
            name, eq, value = item.partition("=")
            if not eq or name not in _OPTIONS:
                raise ConfigError(f"--chaos {text!r}: option {item!r} is not one of "
                                  + ", ".join(f"{o}=..." for o in _OPTIONS))
            values[name] = value
        if target.isdigit():
            kind = "pid"
        elif target.startswith("port="):
            kind, target = "port", target[5:]
            if not target.isdigit() or not 0 < int(target) < 65536:
                raise ConfigError(f"--chaos {text!r}: port={target} is not a TCP port")
        else:
            kind = "cmd"
        every = parse_duration(values["every"], f"--chaos {text!r} every") if "every" in values else None
        if every is not None and every < 0.5:
            raise ConfigError(f"--chaos {text!r}: every must be at least 0.5s")
        after = parse_duration(values["after"], f"--chaos {text!r} after") if "after" in values else (every or 5.0)
        pause_for = parse_duration(values.get("for", "2s"), f"--chaos {text!r} for")
        restart = parse_duration(values["restart"], f"--chaos {text!r} restart") if "restart" in values else None
        if action == "redis-restart" and restart is None:
            restart = 0.0
        times = None
        if "times" in values:
            if not values["times"].isdigit() or int(values["times"]) < 1:
                raise ConfigError(f"--chaos {text!r}: times must be a whole number ≥ 1")
            times = int(values["times"])
        return cls(action, kind, target, every, after, pause_for, restart, times, text)

    def schedule(self, duration: float) -> list[float]:
        """Run-relative times of the injections within ``duration``."""
        out: list[float] = []
        at = self.after
        while at < duration and (self.times is None or len(out) < self.times):
            out.append(at)
            if self.every is None:
                break
            at += self.every
        return out


@dataclass
class ChaosEvent:
    """One injected failure, as the timeline shows it."""

    t: float
    action: str
    target: str
    pid: int | None
    detail: str
    ok: bool = True
    #: Seconds until the service was normal again (filled in after the run).
    recovery_s: float | None = None
    #: Seconds until the process ran again (restarts only).
    restarted_after_s: float | None = None


@dataclass
class Chaos:
    """Runs every ``ChaosSpec`` of a run on its schedule and logs what it did."""

    specs: tuple[ChaosSpec, ...]
    start: float
    logdir: Path | None = None
    events: list[ChaosEvent] = field(default_factory=list)
    _pids: dict[str, int] = field(default_factory=dict)
    _turn: dict[str, int] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, duration: float) -> None:
        await asyncio.gather(*(self._run_spec(spec, duration) for spec in self.specs))

    async def _run_spec(self, spec: ChaosSpec, duration: float) -> None:
        for at in spec.schedule(duration):
            await asyncio.sleep(max(0.0, self.start + at - time.monotonic()))
            try:
                await self.inject(spec)
            except Exception as exc:
                log.warning("chaos %s failed: %s", spec.text, exc)
                self._log(spec, None, f"failed: {exc}", ok=False)

    def _victim(self, spec: ChaosSpec) -> int | None:
        if spec.target_kind == "pid":
            pid = self._pids.get(spec.text, int(spec.target))
            return pid if processes.alive(pid) else None
        pids = (processes.find_listening(int(spec.target)) if spec.target_kind == "port"
                else processes.find_by_command(spec.target))
        if not pids:
            return None
        n = self._turn.get(spec.text, 0)
        self._turn[spec.text] = n + 1
        return pids[n % len(pids)]

    def _log(self, spec: ChaosSpec, pid: int | None, detail: str, ok: bool = True) -> ChaosEvent:
        event = ChaosEvent(round(time.monotonic() - self.start, 3), spec.action, spec.target, pid, detail, ok)
        self.events.append(event)
        log.info("chaos t=%.1fs %s %s pid=%s: %s", event.t, spec.action, spec.target, pid, detail)
        return event

    async def inject(self, spec: ChaosSpec) -> None:
        pid = self._victim(spec)
        if pid is None:
            self._log(spec, None, "no running process matched the target", ok=False)
            return
        image = processes.ProcessImage.of(pid) if spec.restart is not None else None
        if image is not None and spec.action == "redis-restart":
            image = await asyncio.to_thread(_redis_image, image)
        if spec.action == "pause":
            _signal(pid, signal.SIGSTOP)
            self._log(spec, pid, f"SIGSTOP for {spec.pause_for:g}s")
            await asyncio.sleep(spec.pause_for)
            _signal(pid, signal.SIGCONT)
            return
        if spec.action == "redis-restart":
            stopped = await asyncio.to_thread(_redis_shutdown, pid)
            event = self._log(spec, pid, stopped)
        else:
            sig = signal.SIGKILL if spec.action == "kill" else signal.SIGTERM
            _signal(pid, sig)
            event = self._log(spec, pid, sig.name)
        if image is not None:
            task = asyncio.get_running_loop().create_task(self._restart(spec, image, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _restart(self, spec: ChaosSpec, image: processes.ProcessImage, event: ChaosEvent) -> None:
        deadline = time.monotonic() + 60
        while processes.alive(image.pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.05)
        if processes.alive(image.pid):
            event.detail += "; did not exit within 60 s, not restarted"
            return
        await asyncio.sleep(spec.restart or 0.0)
        logfile = self.logdir / f"restarted-{image.pid}.log" if self.logdir is not None else None
        proc = image.respawn(logfile)
        if spec.target_kind == "pid":
            self._pids[spec.text] = proc.pid
        event.restarted_after_s = round(time.monotonic() - self.start - event.t, 3)
        event.detail += f"; restarted as pid {proc.pid}"

    async def close(self) -> None:
        """Wait for pending restarts (so no process stays down because the run ended)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    import os

    os.kill(pid, sig)


#: Settings a restarted redis-server needs to come back as it was (port, persistence, where its files are).
_REDIS_RESTART_SETTINGS = ("port", "bind", "dir", "dbfilename", "appendonly", "appendfsync", "appendfilename",
                           "appenddirname", "save", "requirepass", "protected-mode", "unixsocket", "logfile")


def _redis_port(image: processes.ProcessImage) -> int:
    port = 6379
    argv = list(image.argv)
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            port = int(argv[i + 1])
        elif ":" in arg and arg.rsplit(":", 1)[1].isdigit() and "redis-server" in arg:
            port = int(arg.rsplit(":", 1)[1])
    return port


def _redis_image(image: processes.ProcessImage) -> processes.ProcessImage:
    """How to start this redis-server again. Redis rewrites its command line ("redis-server 127.0.0.1:6379"),
    so unless it still names an executable, rebuild it from the binary and the server's own settings."""
    import os
    import shutil

    import redis

    if image.argv and shutil.which(image.argv[0]) and len(image.argv) > 1:
        return image
    # Not /proc/<pid>/exe alone: Debian's redis-server is a link to redis-check-rdb, which acts by its argv[0].
    exe = os.readlink(f"/proc/{image.pid}/exe")
    sibling = os.path.join(os.path.dirname(exe), "redis-server")
    binary = sibling if os.access(sibling, os.X_OK) else shutil.which("redis-server") or exe
    client = redis.Redis(port=_redis_port(image), socket_timeout=5, decode_responses=True)
    try:
        config = {str(k): str(v) for k, v in client.config_get(*_REDIS_RESTART_SETTINGS).items()}
    except redis.RedisError:
        return image
    finally:
        client.close()
    argv = [binary]
    for name in _REDIS_RESTART_SETTINGS:
        if name in config and (config[name] or name == "save"):
            argv += [f"--{name}", *(config[name].split() if name == "bind" else [config[name]])]
    return processes.ProcessImage(image.pid, tuple(argv), image.cwd, image.env)


def _redis_shutdown(pid: int) -> str:
    """Stop the redis-server ``pid`` keeping its data (``SHUTDOWN SAVE`` on its port), else SIGTERM it."""
    port = _redis_port(processes.ProcessImage.of(pid))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"SHUTDOWN SAVE\r\n")
            sock.settimeout(5)
            try:
                sock.recv(64)
            except OSError:
                pass
        return f"SHUTDOWN SAVE on port {port}"
    except OSError:
        _signal(pid, signal.SIGTERM)
        return "SIGTERM"
