"""``statefleet serve`` in real subprocesses on free ports."""

from __future__ import annotations

from pathlib import Path

from statefleet.testing import serve_process

AGENTS = Path(__file__).with_name("agents.py")


class ServeProcess(serve_process.ServeProcess):
    """A test agent of ``agents.py`` served on ``store``, ready when constructed; its log in ``logdir``."""

    def __init__(self, agent: str, store: str, logdir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        port_log = logdir / f"serve-{id(self)}.log"
        super().__init__(f"{AGENTS}:{agent}", store, "--log-level", "info", *extra, log=port_log, env=env)
        self.wait_ready()

    def log(self) -> str:
        return self.log_tail()
