"""The turn a task is running, for log lines and backend calls made from inside a handler.

The engine sets ``current_turn`` in the task that runs a turn (one context variable: no cost to speak of);
the log filter (``logs.TurnContextFilter``) and ``backend_call`` read it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..agent import Turn
    from .hooks import EngineObserver


class TurnScope:
    """The turn being run, the instance running it, and its engine's observer."""

    __slots__ = ("instance", "observer", "turn")

    def __init__(self, turn: Turn, instance: str, observer: EngineObserver | None) -> None:
        self.turn = turn
        self.instance = instance
        self.observer = observer


current_turn: ContextVar[TurnScope | None] = ContextVar("statefleet_turn", default=None)
