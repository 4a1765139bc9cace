"""statefleet: serve stateful conversational agents from many interchangeable instances.

>>> from statefleet import Agent, Turn, Engine, open_store
"""

from ._version import __version__ as __version__
from .agent import Agent, Reply, Turn
from .engine import Conversation, Engine, EngineSettings, TurnResult
from .errors import (
    ConversationBusy,
    ConversationNotFound,
    InvalidConversationId,
    InvalidMessage,
    InvalidStoreUrl,
    MessageTooLarge,
    Overloaded,
    StatefleetClientError,
    StatefleetError,
    StateNotSerializable,
    TurnFailed,
    TurnInterrupted,
    TurnTimeout,
)
from .store import Store, open_store

__all__ = [
    "Agent",
    "Conversation",
    "ConversationBusy",
    "ConversationNotFound",
    "Engine",
    "EngineSettings",
    "InvalidConversationId",
    "InvalidMessage",
    "InvalidStoreUrl",
    "MessageTooLarge",
    "Overloaded",
    "Reply",
    "StateNotSerializable",
    "StatefleetClientError",
    "StatefleetError",
    "Store",
    "Turn",
    "TurnFailed",
    "TurnInterrupted",
    "TurnResult",
    "TurnTimeout",
    "open_store",
]
