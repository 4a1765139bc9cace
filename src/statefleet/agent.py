"""The agent API: what users write against.

>>> agent = Agent("support", version="v1", history_window=5)
>>> @agent.handler
... async def handle(turn: Turn) -> None:
...     await turn.emit("Looking that up… ")
...     turn.reply(f"Hi {turn.state.get('name', 'there')}!")
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from .errors import ConfigError

DoubleTexting = Literal["enqueue", "reject", "interrupt"]
DOUBLE_TEXTING_POLICIES: tuple[DoubleTexting, ...] = ("enqueue", "reject", "interrupt")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

AsyncHandler: TypeAlias = Callable[["Turn"], Awaitable[None]]
SyncHandler: TypeAlias = Callable[["Turn"], None]
Handler: TypeAlias = AsyncHandler | SyncHandler


class _Done:
    """An already-finished awaitable, so ``turn.emit(...)`` works with or without ``await``."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


_DONE = _Done()


@dataclass(slots=True)
class Reply:
    """The agent's answer to one message."""

    text: str
    data: dict[str, Any] | None = None


class Turn:
    """One message being answered: what the handler reads, and how it answers.

    ``history`` is the window before this message (oldest first, ``{"role", "text", "ts", "turn"}``);
    ``state`` is the agent's JSON object, persisted when the turn commits. ``idempotency_key`` is stable
    across re-runs of the same message (after a takeover), so pass it to backends with side effects.
    """

    __slots__ = (
        "_emit_hook",
        "_loop",
        "_reply",
        "_sealed",
        "_thread",
        "_tokens",
        "attempt",
        "conversation_id",
        "history",
        "idempotency_key",
        "message_id",
        "metadata",
        "state",
        "tenant",
        "text",
        "turn",
        "version",
    )

    def __init__(
        self,
        *,
        conversation_id: str,
        tenant: str,
        message_id: str,
        text: str,
        metadata: dict[str, Any],
        history: list[dict[str, Any]],
        state: dict[str, Any],
        version: str,
        turn: int,
        attempt: int,
        idempotency_key: str,
        emit_hook: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.tenant = tenant
        self.message_id = message_id
        self.text = text
        self.metadata = metadata
        self.history = history
        self.state = state
        self.version = version
        #: The number this turn will have when it commits (1 for the first).
        self.turn = turn
        #: 1 the first time this message runs; more when it is re-run after an instance died.
        self.attempt = attempt
        self.idempotency_key = idempotency_key
        self._emit_hook = emit_hook
        self._reply: Reply | None = None
        self._tokens: list[str] = []
        self._sealed = False
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def emit(self, text: str, **data: Any) -> _Done:
        """Stream a token (or any text chunk) to the caller now. ``await`` it or not; both work.

        Safe to call from the thread a plain ``def`` handler runs in.
        """
        if not isinstance(text, str):
            raise TypeError(f"turn.emit() takes text as str, not {type(text).__name__}")
        if self._sealed:
            return _DONE
        event: dict[str, Any] = {"type": "token", "message_id": self.message_id, "text": text}
        if data:
            event["data"] = data
        # The loop's own thread (a thread id, not asyncio.get_running_loop(): on Python 3.11 that makes a
        # getpid() system call each time, and this runs for every token).
        if threading.get_ident() == self._thread:
            self._record_token(event)
        else:
            self._loop.call_soon_threadsafe(self._record_token, event)
        return _DONE

    def _record_token(self, event: dict[str, Any]) -> None:
        if self._sealed:
            return
        self._tokens.append(event["text"])
        if self._emit_hook is not None:
            self._emit_hook(event)

    def reply(self, text: str, data: dict[str, Any] | None = None) -> None:
        """Set the reply committed with this turn (the last call wins)."""
        if not isinstance(text, str):
            raise TypeError(f"turn.reply() takes text as str, not {type(text).__name__}")
        if data is not None and not isinstance(data, dict):
            raise TypeError(f"turn.reply() takes data as a dict, not {type(data).__name__}")
        if not self._sealed:
            self._reply = Reply(text, data)

    def final_reply(self) -> Reply:
        """The reply to commit: the one set with ``reply()``, else the emitted tokens joined."""
        if self._reply is not None:
            return self._reply
        return Reply("".join(self._tokens))

    def seal(self) -> None:
        """After this, ``emit`` and ``reply`` do nothing (the turn was committed or cancelled)."""
        self._sealed = True


@dataclass
class Agent:
    """A conversational agent: a name, a version, its limits, and one handler.

    ``history_window`` is the number of utterances (user and agent each count one) kept per conversation.
    ``double_texting`` says what a message does when a turn of its conversation is already running:
    ``enqueue`` (wait its turn), ``reject`` (409), or ``interrupt`` (cancel the running turn).
    """

    name: str
    version: str = "v1"
    history_window: int = 20
    double_texting: DoubleTexting = "enqueue"
    #: Largest message (text + metadata JSON), in bytes.
    max_message_bytes: int = 64 * 1024
    #: Largest state (JSON), in bytes.
    max_state_bytes: int = 1024 * 1024
    _handler: Handler | None = field(default=None, repr=False)
    _is_async: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"agent name {self.name!r} must be 1-63 chars of A-Z a-z 0-9 . _ -")
        if not isinstance(self.version, str) or not _NAME.match(self.version):
            raise ConfigError(f"agent version {self.version!r} must be 1-63 chars of A-Z a-z 0-9 . _ -")
        if not isinstance(self.history_window, int) or not 1 <= self.history_window <= 10_000:
            raise ConfigError(f"history_window {self.history_window!r} must be an int from 1 to 10000")
        if self.double_texting not in DOUBLE_TEXTING_POLICIES:
            raise ConfigError(
                f"double_texting {self.double_texting!r} must be one of {', '.join(DOUBLE_TEXTING_POLICIES)}"
            )
        for name in ("max_message_bytes", "max_state_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} {value!r} must be a positive int")

    def handler(self, fn: Handler) -> Handler:
        """Register the function that answers each message (``async def`` or plain ``def``)."""
        if not callable(fn):
            raise ConfigError(f"agent {self.name!r}: handler must be callable, got {fn!r}")
        self._handler = fn
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        return fn

    @property
    def runs_in_threads(self) -> bool:
        """True when the handler is a plain ``def`` (each turn runs on a thread of the event loop's executor)."""
        return not self._is_async

    async def run_handler(self, turn: Turn) -> None:
        """Run the registered handler on ``turn`` (a plain ``def`` runs in a worker thread)."""
        fn = self._handler
        if fn is None:
            raise ConfigError(f"agent {self.name!r} has no handler; decorate a function with @agent.handler")
        if self._is_async:
            await fn(turn)  # type: ignore[misc]
        else:
            await asyncio.to_thread(fn, turn)
