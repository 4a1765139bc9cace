"""The HTTP server: a thin ASGI 3 app serving one agent over JSON, SSE and WebSocket.

>>> from statefleet.server import create_app
>>> app = create_app(agent, "redis://localhost:6379/0")
"""

from .app import StatefleetApp, create_app
from .settings import ServerSettings

__all__ = ["ServerSettings", "StatefleetApp", "create_app"]
