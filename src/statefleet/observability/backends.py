"""``backend_call``: how a handler calls an LLM or a tool so that the call is measured and traced.

>>> @agent.handler
... async def handle(turn: Turn) -> None:
...     async with backend_call("llm", turn) as call:
...         response = await http.post(LLM_URL, json=..., headers=call.headers)
...         call.check_status(response.status_code)
...     turn.reply(response.json()["text"])

``call.headers`` carries the turn's ``Idempotency-Key`` (stable across re-runs of the message after a
takeover: pass it to backends with side effects) and, with tracing on, the W3C ``traceparent`` of the call's
span. The call counts in ``statefleet_backend_calls_total{backend,outcome}`` and
``statefleet_backend_call_duration_seconds{backend}``. Outside a turn, or with no observer, the helper only
fills the headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .context import current_turn

if TYPE_CHECKING:
    from ..agent import Turn


class BackendError(Exception):
    """A backend answered with an error status (raised by ``BackendCall.check_status``)."""


class BackendCall:
    """One call to a backend, as the handler sees it inside ``backend_call``."""

    __slots__ = ("backend", "headers", "outcome")

    def __init__(self, backend: str, headers: dict[str, str]) -> None:
        #: The ``backend`` label: "llm", "search", "crm", ...
        self.backend = backend
        #: Headers to send with the call: ``Idempotency-Key`` and, with tracing on, ``traceparent``.
        self.headers = headers
        #: ok, error, timeout, cancelled, or http_<status> (set by ``check_status``); set it yourself if you like.
        self.outcome = "ok"

    def check_status(self, status: int) -> None:
        """Record an HTTP status; 4xx/5xx become the outcome ``http_<status>`` and raise ``BackendError``."""
        if status >= 400:
            self.outcome = f"http_{status}"
            raise BackendError(f"backend {self.backend!r} answered HTTP {status}")


def _classify(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "error"


@asynccontextmanager
async def backend_call(backend: str, turn: Turn | None = None) -> AsyncIterator[BackendCall]:
    """Measure and trace one call to ``backend`` from a handler; see the module docstring."""
    scope = current_turn.get()
    if turn is None and scope is not None:
        turn = scope.turn
    headers = {} if turn is None else {"Idempotency-Key": turn.idempotency_key}
    call = BackendCall(backend, headers)
    observer = None if scope is None else scope.observer
    if observer is None:
        yield call
        return
    with observer.backend_call(call):
        try:
            yield call
        except BaseException as exc:
            if call.outcome == "ok":
                call.outcome = _classify(exc)
            raise
