"""Helpers for tests and benchmarks that start real servers: a throwaway ``redis-server`` and ``statefleet serve``
child processes on free loopback ports. The runtime never imports this package; only the demo does."""

from .redis_server import LocalRedisServer, free_port
from .serve_process import ServeProcess

__all__ = ["LocalRedisServer", "ServeProcess", "free_port"]
