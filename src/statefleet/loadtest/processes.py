"""Finding processes (by pid, command line or listening port) and starting them again as they were."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessImage:
    """What it takes to start a process again: its argv, working directory and environment."""

    pid: int
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]

    @classmethod
    def of(cls, pid: int) -> ProcessImage:
        base = _PROC / str(pid)
        argv = tuple(a.decode(errors="replace") for a in (base / "cmdline").read_bytes().split(b"\0") if a)
        cwd = os.readlink(base / "cwd")
        env: dict[str, str] = {}
        for item in (base / "environ").read_bytes().split(b"\0"):
            name, sep, value = item.decode(errors="replace").partition("=")
            if sep:
                env[name] = value
        return cls(pid, argv, cwd, env)

    def command(self) -> str:
        return " ".join(self.argv)

    def respawn(self, log: Path | None) -> subprocess.Popen[bytes]:
        """Start the same command again (output to ``log`` or nowhere), in its own session."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            return subprocess.Popen(list(self.argv), cwd=self.cwd, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if log is not None and not isinstance(out, int):
                out.close()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def find_by_command(fragment: str) -> list[int]:
    """Pids of processes (other than this one and its parents) whose command line contains ``fragment``."""
    mine = {os.getpid(), os.getppid()}
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmdline and fragment in cmdline and "--chaos" not in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def find_listening(port: int) -> list[int]:
    """Pids of processes holding a socket that listens on TCP ``port`` (IPv4 or IPv6)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return []
    found: set[int] = set()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    found.add(int(entry.name))
                    break
        except OSError:
            continue
    return sorted(found)
