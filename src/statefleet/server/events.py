"""``GET /v1/conversations/{id}/events``: the conversation's event log as SSE, from any instance, resumable.

The log lives in the store, so a stream shows what every instance emitted. Each event carries its id; a client
that reconnects with ``Last-Event-ID`` gets every later event exactly once (as long as the log still holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

from .. import errors
from ..store.base import ConversationKey, Event
from . import sse
from ._http import SSE_HEADERS, header, query
from ._state import ServerState
from ._types import Receive, Scope, Send
from .errors import Draining
from .routes import error_data, tenant_of

log = logging.getLogger(__name__)

EVENT_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")
#: Events read from the store per round trip.
BATCH = 200


class InvalidEventId(errors.StatefleetClientError):
    """A ``Last-Event-ID`` that no event log could have issued."""

    code = "invalid_event_id"
    status = 400


class EventStream:
    """The route handler; one call serves one stream until the client leaves or the server drains."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send, conversation_id: str) -> None:
        state = self.state
        if state.draining:
            raise Draining("this instance is draining; reconnect (another instance will serve the stream)")
        engine = state.engine
        key = engine.conversation_key(conversation_id, tenant_of(scope))
        after = header(scope, b"last-event-id") or query(scope).get("after") or None
        if after is not None and not EVENT_ID.match(after):
            raise InvalidEventId(f"Last-Event-ID {after!r} is not an event id of this server")
        try:
            batch = await engine.store.read_events(key, after=after, limit=BATCH)
        except ValueError:
            raise InvalidEventId(f"Last-Event-ID {after!r} is not an event id of this store") from None
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": sse.RETRY, "more_body": True})
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        closing = asyncio.ensure_future(state.closing.wait())
        try:
            with state.stream("sse"), engine.watch_events(key) as appended:
                await self._pump(send, key, after, batch, disconnected, closing, appended)
        finally:
            for task in (disconnected, closing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not disconnected.done() or disconnected.cancelled():
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(
        self,
        send: Send,
        key: ConversationKey,
        after: str | None,
        batch: list[Event],
        disconnected: asyncio.Future[None],
        closing: asyncio.Future[Any],
        appended: asyncio.Event,
    ) -> None:
        settings = self.state.settings
        store = self.state.engine.store
        last_write = time.monotonic()
        interval = settings.events_poll_interval
        while True:
            if batch:
                after = batch[-1].id
                body = b"".join(sse.frame(event.type, event.data, event.id) for event in batch)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= settings.heartbeat_interval:
                await send({"type": "http.response.body", "body": sse.HEARTBEAT, "more_body": True})
                last_write = time.monotonic()
            if len(batch) < BATCH:  # caught up: wait for more (woken by local appends), or for the end
                interval = settings.events_poll_interval if batch else min(interval * 2, settings.events_poll_max)
                woken = asyncio.ensure_future(appended.wait())
                try:
                    done, _ = await asyncio.wait((disconnected, closing, woken), timeout=interval,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                appended.clear()
                if disconnected in done or closing in done:
                    return
            elif disconnected.done() or closing.done():
                return
            try:
                batch = await store.read_events(key, after=after, limit=BATCH)
            except Exception as exc:
                log.warning("event stream of %r stopped: the store failed", str(key), exc_info=True)
                failure = errors.StoreUnavailable(f"could not read events: {exc}; reconnect with Last-Event-ID")
                await send({"type": "http.response.body", "body": sse.frame("error", error_data(failure)),
                            "more_body": True})
                return


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
