"""What the engine tells observers about turns. Metrics and tracing implement it; None costs nothing.

The engine calls these on its hot path, so implementations must be cheap and must never raise. Metrics
(``statefleet.observability.metrics``) are one observer; tracing (``statefleet.observability.tracing``) is
another, installed only when it is enabled; ``fan_out`` combines several.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from ..store.base import ConversationKey

if TYPE_CHECKING:
    from .backends import BackendCall


class MessageSpan(Protocol):
    """What an observer hands back for a message about to be accepted (tracing: the turn's span)."""

    #: W3C ``traceparent`` kept with the message, so whichever instance runs it continues the trace.
    traceparent: str | None

    def end(self, error: BaseException | None) -> None:
        """The caller got its answer (or ``error``)."""


class EngineObserver(Protocol):
    """Called by ``Engine`` on the hot path: implementations must be cheap and must not raise."""

    def message_received(self, key: ConversationKey, message_id: str) -> MessageSpan | None:
        """A valid message is about to be accepted; a tracer returns the span of its turn, others None."""

    def message_accepted(self, kind: str, seconds: float) -> None:
        """A ``send`` got an answer from the store: leased, queued, duplicate, rejected or wrong_version;
        the store's accept took ``seconds`` (the engine times it: no wrapper on the hot path)."""

    def turn_started(self, key: ConversationKey, message_id: str, attempt: int, trace: str | None) -> None:
        """A handler is about to run (``attempt`` > 1 after a takeover); ``trace`` came with the message."""

    def handler_finished(self, key: ConversationKey, seconds: float, error: BaseException | None) -> None:
        """The handler returned (``error`` None), raised, or was cancelled; the commit comes next."""

    def turn_finished(
        self, key: ConversationKey, *, outcome: str, attempt: int, handler_seconds: float, total_seconds: float,
        commit_seconds: float,
    ) -> None:
        """A turn's commit landed. ``outcome``: committed, failed or interrupted; ``handler_seconds`` runs from
        the handler's start to the commit, ``total_seconds`` from the message's acceptance to the commit,
        ``commit_seconds`` is the store's commit call."""

    def turn_abandoned(self, key: ConversationKey, reason: str) -> None:
        """A started turn will not commit here: ``lost`` (lease gone), ``fenced`` or ``drain`` (handed back)."""

    def first_token(self, seconds: float) -> None:
        """The first token of a turn was emitted, ``seconds`` after the message was accepted."""

    def takeover(self, key: ConversationKey, previous_owner: str | None, attempt: int) -> None:
        """This engine took over a conversation whose owner stopped renewing its lease."""

    def store_reset(self, previous_epoch: str, epoch: str) -> None:
        """The store's epoch marker changed: it lost its data under the running fleet (rare, loud)."""

    def backend_call(self, call: BackendCall) -> AbstractContextManager[object]:
        """A handler calls a backend (``statefleet.observability.backend_call``); exit sees its outcome."""


class FanOut:
    """Several observers as one (metrics and tracing together)."""

    __slots__ = ("_observers",)

    def __init__(self, observers: list[EngineObserver]) -> None:
        self._observers = observers

    def message_received(self, key: ConversationKey, message_id: str) -> MessageSpan | None:
        found = None
        for observer in self._observers:
            span = observer.message_received(key, message_id)
            found = found or span
        return found

    def message_accepted(self, kind: str, seconds: float) -> None:
        for observer in self._observers:
            observer.message_accepted(kind, seconds)

    def turn_started(self, key: ConversationKey, message_id: str, attempt: int, trace: str | None) -> None:
        for observer in self._observers:
            observer.turn_started(key, message_id, attempt, trace)

    def handler_finished(self, key: ConversationKey, seconds: float, error: BaseException | None) -> None:
        for observer in self._observers:
            observer.handler_finished(key, seconds, error)

    def turn_finished(
        self, key: ConversationKey, *, outcome: str, attempt: int, handler_seconds: float, total_seconds: float,
        commit_seconds: float,
    ) -> None:
        for observer in self._observers:
            observer.turn_finished(key, outcome=outcome, attempt=attempt, handler_seconds=handler_seconds,
                                   total_seconds=total_seconds, commit_seconds=commit_seconds)

    def turn_abandoned(self, key: ConversationKey, reason: str) -> None:
        for observer in self._observers:
            observer.turn_abandoned(key, reason)

    def first_token(self, seconds: float) -> None:
        for observer in self._observers:
            observer.first_token(seconds)

    def takeover(self, key: ConversationKey, previous_owner: str | None, attempt: int) -> None:
        for observer in self._observers:
            observer.takeover(key, previous_owner, attempt)

    def store_reset(self, previous_epoch: str, epoch: str) -> None:
        for observer in self._observers:
            observer.store_reset(previous_epoch, epoch)

    def backend_call(self, call: BackendCall) -> AbstractContextManager[object]:
        from contextlib import ExitStack

        stack = ExitStack()
        for observer in self._observers:
            stack.enter_context(observer.backend_call(call))
        return stack


def fan_out(*observers: EngineObserver | None) -> EngineObserver | None:
    """One observer for the given ones (None when there are none; the only one when there is one)."""
    present = [o for o in observers if o is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else FanOut(present)
