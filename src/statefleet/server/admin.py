"""``/v1/admin/routing``: read and change the fleet's routing weights over HTTP (docs/canary.md).

``GET`` answers ``{"revision", "weights", "log"}``; ``PUT`` takes ``{"weights": {"v1": 90, "v2": 10},
"reason"?: str, "revision"?: int}`` (with ``revision``, 409 if the weights changed since it was read) and
answers the new ``{"revision", "weights"}``. The change is audited with the caller as ``actor``
(``X-Statefleet-Actor``, else the client's address).
"""

from __future__ import annotations

from .. import errors
from .._json import dumps
from ._http import check_json_content_type, header, parse_json_object, read_body, send_json
from ._state import ServerState
from ._types import Receive, Scope, Send

#: Changes of the weights ``GET`` shows, newest first.
LOG_SHOWN = 20


class AdminRoutes:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def get_routing(self, scope: Scope, receive: Receive, send: Send, _conversation_id: str) -> None:
        store = self.state.engine.store
        routing = await store.routing()
        log = await store.routing_log(LOG_SHOWN)
        await send_json(send, 200, dumps({"revision": routing.revision, "weights": routing.weights, "log": log}))

    async def put_routing(self, scope: Scope, receive: Receive, send: Send, _conversation_id: str) -> None:
        check_json_content_type(scope)
        body = parse_json_object(await read_body(scope, receive, self.state.settings.max_body_bytes))
        weights, reason, revision = body.get("weights"), body.get("reason", ""), body.get("revision")
        if not isinstance(weights, dict):
            raise errors.InvalidWeights('field "weights" is required: an object such as {"v1": 90, "v2": 10}')
        if not isinstance(reason, str):
            raise errors.InvalidWeights('field "reason" must be a string')
        if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int)):
            raise errors.InvalidWeights('field "revision" must be the integer revision the weights were read at')
        routing = await self.state.engine.set_weights(weights, actor=_actor(scope), reason=reason,
                                                      expected_revision=revision)
        await send_json(send, 200, dumps({"revision": routing.revision, "weights": routing.weights}))


def _actor(scope: Scope) -> str:
    named = header(scope, b"x-statefleet-actor")
    if named:
        return f"http {named[:100]}"
    client = scope.get("client")
    return f"http {client[0]}:{client[1]}" if client else "http"
