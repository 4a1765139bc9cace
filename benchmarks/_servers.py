"""Servers a benchmark starts for itself, so every run starts from the same clean state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from statefleet.testing import LocalRedisServer, free_port

__all__ = ["free_port", "redis_server"]


@contextmanager
def redis_server() -> Iterator[str]:
    """A fresh redis-server on a free port with nothing persisted (DEBUG allowed locally, for HTSTATS)."""
    try:
        server = LocalRedisServer("--enable-debug-command", "local")
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    with server:
        yield server.url
