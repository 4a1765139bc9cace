"""``/v1/conversations/{id}/ws``: one WebSocket per conversation.

The client sends ``{"text", "metadata"?, "idempotency_key"?, "double_texting"?}`` frames; for each, the server
sends ``{"type": "token", ...}`` frames as the handler emits them, then ``{"type": "reply", ...}``. A bad
frame gets ``{"type": "error", "error": {"code", "message"}}`` and the socket stays open. A frame's
``idempotency_key`` is its only key: the handshake's ``x-request-id`` is one for the many messages of the socket,
and a proxy never replays a frame.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from .. import errors
from .._json import dumps
from ._http import parse_json_object
from ._state import ServerState
from ._types import Receive, Scope, Send
from .errors import BodyTooLarge, Draining, MalformedJSON
from .routes import error_data, message_fields, tenant_of

log = logging.getLogger(__name__)

#: Close codes (RFC 6455 §7.4.1 and the IANA registry).
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


class WebSocketRoute:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send, conversation_id: str) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        try:
            with self.state.stream("websocket"):
                await self._session(scope, receive, send, conversation_id)
        except OSError:  # the client went away while we were sending
            return

    async def _session(self, scope: Scope, receive: Receive, send: Send, conversation_id: str) -> None:
        state = self.state
        tenant = tenant_of(scope)
        try:
            state.engine.conversation_key(conversation_id, tenant)
        except errors.StatefleetError as exc:
            await _send_frame(send, {"type": "error", **error_data(exc)})
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] != "websocket.receive":
                continue
            try:
                body = self._parse(message)
                if state.draining:
                    raise Draining("this instance is draining; reconnect (another instance will serve you)")
                await self._turn(scope, send, conversation_id, tenant, body)
            except errors.StatefleetError as exc:
                await _send_frame(send, {"type": "error", **error_data(exc)})
                if isinstance(exc, Draining):
                    await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})
                    return

    def _parse(self, message: dict[str, Any] | Any) -> dict[str, Any]:
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        limit = self.state.settings.max_body_bytes
        if len(raw) > limit:
            raise BodyTooLarge(f"frame is {len(raw)} bytes or more; the limit is {limit} bytes")
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogatepass")
        try:
            return parse_json_object(raw)
        except MalformedJSON:
            raise
        except UnicodeError:
            raise MalformedJSON("frame is not UTF-8 JSON") from None

    async def _turn(self, scope: Scope, send: Send, conversation_id: str, tenant: str,
                    body: dict[str, Any]) -> None:
        text, metadata, policy = message_fields(body)
        stream = self.state.engine.stream(
            conversation_id, text, tenant=tenant, metadata=metadata, idempotency_key=body.get("idempotency_key"),
            double_texting=policy, timeout=self.state.settings.turn_timeout,
        )
        try:
            try:
                async for event in stream:
                    await _send_frame(send, event)
            except errors.WrongVersion as exc:  # nothing was accepted here: pass the message on
                async for event in self._forwarded(scope, conversation_id, body, exc.version):
                    await _send_frame(send, event)
        except errors.StatefleetError:
            raise
        except Exception as exc:
            log.exception("turn over WebSocket failed unexpectedly")
            await _send_frame(send, {"type": "error", **error_data(exc)})

    async def _forwarded(self, scope: Scope, conversation_id: str, body: dict[str, Any],
                         version: str) -> AsyncIterator[dict[str, Any]]:
        """The message sent as a streamed POST to an instance of ``version``: its events, as this socket sends
        them."""
        state = self.state
        forwarder = state.forwarder
        assert forwarder is not None
        outcome = "unavailable"
        try:
            events = forwarder.stream_events(
                targets=forwarder.targets(version, state.engine.fleet.instances_of(version)), version=version,
                conversation_id=conversation_id, path=f"/v1/conversations/{conversation_id}/messages",
                body=dumps({key: value for key, value in body.items() if key != "idempotency_key"}),
                scope=scope, idempotency_key=body.get("idempotency_key"),
            )
            async for event in events:
                outcome = "forwarded"
                yield event
            outcome = "forwarded"
        finally:
            if state.metrics is not None:
                state.metrics.forwarded(version, outcome)


async def _send_frame(send: Send, frame: dict[str, Any]) -> None:
    await send({"type": "websocket.send", "text": dumps(frame).decode()})
