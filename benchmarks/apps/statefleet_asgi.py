"""The statefleet ASGI app (echo agent, window 5) for any ASGI server: ``<server> ...statefleet_asgi:app``."""

from __future__ import annotations

import os

from statefleet.server import create_app

from .echo_agent import agent

app = create_app(agent, os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
