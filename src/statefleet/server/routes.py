"""The conversation routes: send a message (JSON, SSE or fire-and-forget), read and delete a conversation."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .. import errors
from .._json import dumps
from .._validation import DEFAULT_TENANT, IDEMPOTENCY_KEY
from ..agent import DOUBLE_TEXTING_POLICIES
from ..engine import Engine, TurnResult
from ..store.base import JSONObject
from . import sse
from ._http import SSE_HEADERS, header, parse_json_object, query, read_body, send_json
from ._http import check_json_content_type as check_json
from ._state import ServerState
from ._types import Receive, Scope, Send
from .errors import Draining
from .forwarding import VERSION, forwarded_version, hops_of

log = logging.getLogger(__name__)

_TRUE = frozenset(("true", "1", "yes"))
_FALSE = frozenset(("false", "0", "no"))
_REPLAYED = (b"idempotent-replayed", b"true")
#: The cookie a browser sends back, for the mesh to route the conversation's requests to its version.
VERSION_COOKIE = "statefleet-version"
#: Keys taken from x-request-id are set apart from the Idempotency-Keys clients choose.
REQUEST_ID_KEY_PREFIX = "x-request-id:"


def tenant_of(scope: Scope) -> str:
    """The X-Tenant header (validated by the engine; an empty one is an error), or the default tenant."""
    tenant = header(scope, b"x-tenant")
    return DEFAULT_TENANT if tenant is None else tenant


def idempotency_key_of(scope: Scope, from_request_id: bool) -> str | None:
    """The Idempotency-Key header; without one, the x-request-id (``from_request_id``) as ``x-request-id:<id>``.

    A proxy that retries a POST (Envoy, Istio) replays it with the x-request-id it set once at the edge, so the
    retry finds the first attempt's receipt instead of running a second turn. An x-request-id that cannot make
    a key (too long, spaces) is ignored: the client did not ask for idempotency, so its message is not refused.
    """
    key = header(scope, b"idempotency-key")
    if key is not None or not from_request_id:
        return key
    request_id = header(scope, b"x-request-id")
    if request_id is None:
        return None
    key = REQUEST_ID_KEY_PREFIX + request_id
    return key if IDEMPOTENCY_KEY.match(key) else None


def message_fields(body: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(text, metadata, double_texting) of a message body; type checks beyond presence are the engine's."""
    if "text" not in body:
        raise errors.InvalidMessage("field 'text' is required, e.g. {\"text\": \"hello\"}")
    policy = body.get("double_texting")
    if policy is not None and (not isinstance(policy, str) or policy not in DOUBLE_TEXTING_POLICIES):
        raise errors.InvalidMessage(f"double_texting {policy!r} must be enqueue, reject or interrupt")
    return body["text"], body.get("metadata"), policy


def error_data(exc: BaseException) -> JSONObject:
    if not isinstance(exc, errors.StatefleetError):
        log.error("turn failed unexpectedly", exc_info=exc)
        exc = errors.StatefleetError("internal error; see the server log")
    return {"error": {"code": exc.code, "message": str(exc)}}


class ConversationRoutes:
    """``/v1/conversations/{id}`` and ``/v1/conversations/{id}/messages``."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def post_message(self, scope: Scope, receive: Receive, send: Send, conversation_id: str) -> None:
        state = self.state
        if state.draining:
            raise Draining("this instance is draining; send the message again (another instance will take it)")
        engine = state.engine
        tenant = tenant_of(scope)
        engine.conversation_key(conversation_id, tenant)  # 400 before the body is read
        hops = hops_of(scope)
        check_json(scope)
        raw = await read_body(scope, receive, state.settings.max_body_bytes)
        body = parse_json_object(raw)
        text, metadata, policy = message_fields(body)
        wait = _wait_param(scope)
        options: dict[str, Any] = {
            "tenant": tenant,
            "metadata": metadata,
            "idempotency_key": idempotency_key_of(scope, state.settings.request_id_idempotency),
            "double_texting": policy,
            "timeout": state.settings.turn_timeout,
            "new_version": forwarded_version(scope, hops),
        }
        pinned = self._version_headers(conversation_id)
        try:
            if not wait:
                message_id, _reply = await engine.submit(conversation_id, text, **options)
                await send_json(send, 202, dumps({"conversation_id": conversation_id, "message_id": message_id}),
                                pinned)
            elif "text/event-stream" in (header(scope, b"accept") or ""):
                with state.stream("sse"):
                    await self._stream_reply(engine, send, conversation_id, text, options, pinned)
            else:
                result = await engine.send(conversation_id, text, **options)
                await send_json(send, 200, dumps(result.to_json()),
                                [*pinned, _REPLAYED] if result.duplicate else pinned)
        except errors.WrongVersion as exc:  # raised before any answer started: pass the request on
            await self._forward(scope, send, conversation_id, raw, exc.version, options["idempotency_key"], hops)

    async def _forward(self, scope: Scope, send: Send, conversation_id: str, body: bytes, version: str,
                       idempotency_key: str | None, hops: int) -> None:
        state = self.state
        forwarder = state.forwarder
        assert forwarder is not None  # made when the engine started
        targets = forwarder.targets(version, state.engine.fleet.instances_of(version))
        outcome = "unavailable"
        try:
            outcome = await forwarder.forward(scope, send, targets=targets, version=version,
                                              conversation_id=conversation_id, body=body,
                                              idempotency_key=idempotency_key, hops=hops)
        except errors.OutcomeUnknown:
            outcome = "unknown"
            raise
        finally:
            if state.metrics is not None:
                state.metrics.forwarded(version, outcome)

    def _version_headers(self, conversation_id: str) -> list[tuple[bytes, bytes]]:
        """``X-Statefleet-Version`` and a cookie scoped to the conversation, so that a client or browser that
        echoes either lets the mesh route the conversation's next requests straight to its version."""
        version = self.state.agent.version.encode()
        cookie = (f"{VERSION_COOKIE}={self.state.agent.version}; Path=/v1/conversations/{conversation_id}; "
                  "SameSite=Lax; HttpOnly").encode("latin-1", "replace")
        return [(VERSION, version), (b"set-cookie", cookie)]

    async def _stream_reply(
        self, engine: Engine, send: Send, conversation_id: str, text: Any, options: dict[str, Any],
        pinned: list[tuple[bytes, bytes]],
    ) -> None:
        """Tokens as the handler emits them, then the reply, then ``done``; errors after the start as events."""
        tokens = _TokenChannel()
        message_id, reply = await engine.submit(conversation_id, text, on_event=tokens.put, **options)
        reply.add_done_callback(tokens.close)
        headers = [*SSE_HEADERS, (b"x-message-id", message_id.encode()), *pinned]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # Tokens framed while this request waited go out in one write.
        while (body := await tokens.take()) is not None:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": _ending(reply), "more_body": False})

    async def get_conversation(self, scope: Scope, receive: Receive, send: Send, conversation_id: str) -> None:
        conversation = await self.state.engine.get(conversation_id, tenant_of(scope))
        if conversation is None:
            raise errors.ConversationNotFound(f"conversation {conversation_id!r} does not exist (or expired)")
        await send_json(send, 200, dumps(conversation.to_json()))

    async def delete_conversation(self, scope: Scope, receive: Receive, send: Send, conversation_id: str) -> None:
        if not await self.state.engine.delete(conversation_id, tenant_of(scope)):
            raise errors.ConversationNotFound(f"conversation {conversation_id!r} does not exist (or expired)")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _wait_param(scope: Scope) -> bool:
    value = query(scope).get("wait")
    if value is None or value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise errors.StatefleetClientError(f"query parameter wait={value!r} must be true or false")


class _TokenChannel:
    """Token events from a turn (framed as SSE as they come) to the request streaming them: one waiter, no queue."""

    __slots__ = ("_closed", "_frames", "_loop", "_waiter")

    def __init__(self) -> None:
        # Looked up once: asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self._frames: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def put(self, event: JSONObject) -> None:
        self._frames.append(_token(event))
        self._wake()

    def close(self, _reply: object = None) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take(self) -> bytes | None:
        """The frames waiting (at least one), or None once the turn finished and all were taken."""
        while not self._frames:
            if self._closed:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        body = b"".join(self._frames)
        self._frames.clear()
        return body


def _token(event: JSONObject) -> bytes:
    data = dict(event)  # a token event as it goes over SSE: its event name is the type
    del data["type"]
    return sse.frame("token", data)


def _ending(reply: asyncio.Task[TurnResult]) -> bytes:
    if reply.cancelled():
        data = error_data(errors.Overloaded("this instance stopped before the reply; retry with the same "
                                            "Idempotency-Key to get it"))
        return sse.frame("error", data) + sse.frame("done", {})
    exc = reply.exception()
    if exc is not None:
        return sse.frame("error", error_data(exc)) + sse.frame("done", {})
    return sse.frame("reply", reply.result().to_json()) + sse.frame("done", {})
