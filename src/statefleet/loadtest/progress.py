"""The line on the terminal while a run goes: elapsed, users, turns and turns/s, p99, errors, continuity,
and the tester's own CPU use (when it nears 100 % the tester, not the server, is the bottleneck)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO


@dataclass
class Snapshot:
    """Counts of the whole run so far (every process)."""

    t: float
    active: int
    turns: int
    errors: int
    failed: int
    violations: int
    p99: float
    cpu: float


class Progress:
    """Rewrites one line on a terminal; prints a line every 5 s elsewhere (CI logs)."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self._last_turns = 0
        self._last_t = 0.0
        self._printed = -5.0

    def show(self, s: Snapshot) -> None:
        rate = (s.turns - self._last_turns) / max(1e-9, s.t - self._last_t)
        self._last_turns, self._last_t = s.turns, s.t
        if self.quiet or (not self.tty and s.t - self._printed < 5):
            return
        self._printed = s.t
        line = (f"t={s.t:5.0f}s  users={s.active:<6d} turns={s.turns:<9,d} {rate:8,.0f}/s  p99={s.p99 * 1000:7.1f}ms  "
                f"errors={s.errors:<6d} failed={s.failed:<4d} continuity={'ok' if not s.violations else s.violations}"
                f"  tester-cpu={s.cpu:3.0f}%")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def event(self, text: str) -> None:
        if self.quiet:
            return
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
