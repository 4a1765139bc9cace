"""The engine: runs an agent's turns on conversations kept in a store, one instance of the fleet.

:class:`Engine` (``engine.py``) accepts messages, runs turns under leases and drains; its
:class:`~statefleet.engine.upkeep.Upkeep` renews leases, takes over expired ones and keeps the fleet registry.
The other modules are its parts: what a finished turn commits (``commits.py``), where streamed tokens go
(``publisher.py``), how a caller waits for its result (``waiting.py``), what callers get back (``results.py``)
and how it is configured (``settings.py``).
"""

from .engine import Engine
from .publisher import EventCallback
from .results import Conversation, TurnResult
from .settings import EngineSettings, EngineStats

__all__ = ["Conversation", "Engine", "EngineSettings", "EngineStats", "EventCallback", "TurnResult"]
