"""The OpenAPI 3.1 document of the HTTP API, as data; served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from .._validation import CONVERSATION_ID, IDEMPOTENCY_KEY, TENANT
from .._version import __version__
from ..agent import DOUBLE_TEXTING_POLICIES, Agent
from .events import EVENT_ID

JSON = "application/json"
SSE = "text/event-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _ref("Error")}}}
    if retry:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return response


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


_STRING = {"type": "string"}
_OBJECT = {"type": "object"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "Stable machine-readable code, e.g. invalid_message."},
                    "message": {"type": "string", "description": "What is wrong, and the fix."},
                },
            }
        },
    },
    "MessageRequest": {
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "pattern": r"\S", "description": "The user's message (not blank)."},
            "metadata": {"type": ["object", "null"], "description": "Any JSON object, passed to the handler."},
            "double_texting": {
                "type": "string",
                "enum": list(DOUBLE_TEXTING_POLICIES),
                "description": "What to do if a turn of this conversation is running; default: the agent's.",
            },
        },
    },
    "Reply": {
        "type": "object",
        "required": ["text", "data"],
        "properties": {"text": _STRING, "data": {"type": ["object", "null"]}},
    },
    "TurnResult": {
        "type": "object",
        "required": ["conversation_id", "message_id", "turn", "version", "reply", "events"],
        "properties": {
            "conversation_id": _STRING,
            "message_id": _STRING,
            "turn": {"type": "integer", "minimum": 1, "description": "The turn number this message committed as."},
            "version": {"type": "string", "description": "The agent version the conversation is pinned to."},
            "reply": _ref("Reply"),
            "events": {"type": "integer", "minimum": 1, "description": "Events the turn emitted (tokens + reply)."},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["conversation_id", "message_id"],
        "properties": {"conversation_id": _STRING, "message_id": _STRING},
    },
    "Utterance": {
        "type": "object",
        "required": ["role", "text", "ts", "turn"],
        "properties": {
            "role": {"type": "string", "enum": ["user", "agent"]},
            "text": _STRING,
            "ts": {"type": "number", "description": "Unix time, seconds."},
            "turn": {"type": "integer", "minimum": 1},
        },
    },
    "Conversation": {
        "type": "object",
        "required": ["conversation_id", "version", "turns", "history", "state", "pending"],
        "properties": {
            "conversation_id": _STRING,
            "version": _STRING,
            "turns": {"type": "integer", "minimum": 0},
            "history": {"type": "array", "items": _ref("Utterance"), "description": "The window, oldest first."},
            "state": {"type": "object", "description": "The agent's state."},
            "pending": {"type": "integer", "minimum": 0, "description": "Messages accepted, not yet committed."},
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Ready": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ready"}}},
    "Instance": {
        "type": "object",
        "required": ["id", "agent", "version", "address", "in_flight", "draining", "started_at"],
        "properties": {
            "id": _STRING,
            "agent": _STRING,
            "version": _STRING,
            "address": {"type": ["string", "null"], "description": "host:port peers reach it at."},
            "in_flight": {"type": "integer", "minimum": 0, "description": "Turns running there now."},
            "waiting": {"type": "integer", "minimum": 0, "description": "Requests waiting for a reply there."},
            "draining": {"type": "boolean"},
            "started_at": {"type": "number"},
            "heartbeat_at": {"type": "number", "description": "When the instance last registered (unix s)."},
            "stats": {"type": "object", "description": "Counters: committed, failed, takeovers, fenced."},
            "counters": {"type": "object", "description": "Turns, errors and latency buckets (canary analysis)."},
        },
    },
    "Weights": {
        "type": "object",
        "description": "Percent of new conversations per version; whole numbers summing to 100.",
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100},
        "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
    },
    "Routing": {
        "type": "object",
        "required": ["revision", "weights"],
        "properties": {
            "revision": {"type": "integer", "minimum": 0, "description": "0: never set."},
            "weights": _ref("Weights"),
            "log": {"type": "array", "items": {"type": "object"},
                    "description": "The last changes, newest first: at, actor, reason, old, new, revision."},
        },
    },
    "RoutingChange": {
        "type": "object",
        "required": ["weights"],
        "properties": {
            "weights": _ref("Weights"),
            "reason": {"type": "string", "description": "Why (kept in the audit log)."},
            "revision": {"type": "integer", "description": "The revision read; 409 if they changed since."},
        },
    },
    "Fleet": {
        "type": "object",
        "required": ["instances", "backlog"],
        "properties": {
            "instances": {"type": "array", "items": _ref("Instance"), "description": "This instance first."},
            "backlog": {"type": "integer", "minimum": 0,
                        "description": "Messages accepted fleet-wide and not yet committed."},
        },
    },
}

PARAMETERS: dict[str, Any] = {
    "ConversationId": {
        "name": "conversation_id",
        "in": "path",
        "required": True,
        "description": "Chosen by the client.",
        # "." and ".." are valid ids, but URL normalisation turns them into other paths.
        "schema": {"type": "string", "pattern": CONVERSATION_ID.pattern, "not": {"enum": [".", ".."]}},
    },
    "Tenant": {
        "name": "X-Tenant",
        "in": "header",
        "required": False,
        "description": "The tenant the conversation belongs to; default: default.",
        "schema": {"type": "string", "pattern": TENANT.pattern},
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": (
            "A retry with the same key gets the original result, never a second turn. Without it, the request's "
            "`x-request-id` (set once by a mesh's edge proxy and kept on its retries) serves as the key, scoped to "
            "the conversation, unless serve runs with --no-request-id-idempotency."
        ),
        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern},
    },
}

_BAD_ID = _error("Malformed conversation id or tenant (invalid_conversation_id), or a malformed parameter.")
_BUSY = _error("Draining, overloaded or the store is unreachable; retry after Retry-After seconds.", retry=True)


def _message_operation() -> dict[str, Any]:
    return {
        "operationId": "sendMessage",
        "summary": "Send a message and get the reply",
        "description": (
            "With `Accept: application/json` (default) the answer is the turn's result. With "
            "`Accept: text/event-stream` it is an SSE stream: `token` events (`{message_id, text}`) as the agent "
            "emits them, then one `reply` (the TurnResult) or `error` (`{error: {code, message}}`), then `done`. "
            "With `wait=false` the answer is 202 as soon as the message is durably accepted."
        ),
        "parameters": [
            _param("ConversationId"),
            _param("Tenant"),
            _param("IdempotencyKey"),
            {
                "name": "wait",
                "in": "query",
                "required": False,
                "description": "false: answer 202 once accepted; follow the reply on /events.",
                "schema": {"type": "boolean", "default": True},
            },
        ],
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("MessageRequest")}}},
        "responses": {
            "200": {
                "description": "The committed turn (or, for a retried Idempotency-Key, the original's).",
                "headers": {
                    "Idempotent-Replayed": {"description": "true on a retry", "schema": _STRING},
                    "X-Statefleet-Version": {"description": "The version the conversation is pinned to (echo it "
                                                            "so the mesh routes straight there)", "schema": _STRING},
                    "X-Statefleet-Forwarded-By": {"description": "Set when the instance the request reached "
                                                                 "passed it on to the conversation's version",
                                                  "schema": _STRING},
                },
                "content": {
                    JSON: {"schema": _ref("TurnResult")},
                    SSE: {"schema": {"type": "string", "description": "token*, then reply or error, then done"}},
                },
            },
            "202": {"description": "Accepted; the turn runs.", "content": {JSON: {"schema": _ref("Accepted")}}},
            "400": _error("Malformed JSON, a body that is not an object, or a malformed id or parameter."),
            "409": _error("Double texting policy reject while busy (conversation_busy), or interrupted."),
            "413": _error("Body or message larger than the limit."),
            "415": _error("Content-Type is not application/json."),

            "422": _error("Missing or wrongly typed text, metadata, double_texting or Idempotency-Key."),
            "500": _error("The agent's handler failed; nothing was committed."),
            "503": _BUSY,
            "504": _error("No reply in time; the message stays accepted and is still processed."),
        },
    }


def _paths() -> dict[str, Any]:
    conversation = [_param("ConversationId"), _param("Tenant")]
    return {
        "/v1/conversations/{conversation_id}/messages": {"post": _message_operation()},
        "/v1/conversations/{conversation_id}": {
            "get": {
                "operationId": "getConversation",
                "summary": "Version, turn count, history window and state",
                "parameters": conversation,
                "responses": {
                    "200": {"description": "The conversation.", "content": {JSON: {"schema": _ref("Conversation")}}},
                    "400": _BAD_ID,
                    "404": _error("No such conversation (not_found)."),
                    "503": _BUSY,
                },
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Delete everything of a conversation",
                "parameters": conversation,
                "responses": {
                    "204": {"description": "Deleted."},
                    "400": _BAD_ID,
                    "404": _error("No such conversation (not_found)."),
                    "503": _BUSY,
                },
            },
        },
        "/v1/conversations/{conversation_id}/events": {
            "get": {
                "operationId": "streamEvents",
                "summary": "Follow the conversation's event log (SSE), from every instance",
                "description": (
                    "Each event has `id:` (its event id), `event:` (token, reply, error, cancelled) and one "
                    "`data:` line of JSON. Reconnect with `Last-Event-ID` to get every later event exactly once. "
                    "A `: keep-alive` comment is sent every 15 s."
                ),
                "parameters": [
                    *conversation,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "Resume after this event id.",
                        "schema": {"type": "string", "pattern": EVENT_ID.pattern},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "Like Last-Event-ID, for clients that cannot set headers.",
                        "schema": {"type": "string", "pattern": EVENT_ID.pattern},
                    },
                ],
                "responses": {
                    "200": {"description": "An endless event stream.", "content": {SSE: {"schema": _STRING}}},
                    "400": _error("Malformed conversation id, tenant or Last-Event-ID."),
                    "503": _BUSY,
                },
            }
        },
        "/v1/conversations/{conversation_id}/ws": {
            "get": {
                "operationId": "conversationWebSocket",
                "summary": "A WebSocket for the conversation",
                "description": (
                    "Send `{text, metadata?, idempotency_key?, double_texting?}` frames; get `{type: token}` frames "
                    "then `{type: reply}` (a TurnResult), or `{type: error, error: {code, message}}`."
                ),
                "parameters": conversation,
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    "426": _error("Not a WebSocket upgrade request (upgrade_required)."),
                },
            }
        },
        "/healthz": {"get": {
            "operationId": "healthz", "summary": "Alive",
            "responses": {"200": {"description": "The process runs.", "content": {JSON: {"schema": _ref("Health")}}}},
        }},
        "/readyz": {"get": {
            "operationId": "readyz", "summary": "Ready for traffic (store reachable, not draining)",
            "responses": {
                "200": {"description": "Ready.", "content": {JSON: {"schema": _ref("Ready")}}},
                "503": _BUSY,
            },
        }},
        "/v1/admin/routing": {
            "get": {
                "operationId": "getRouting", "summary": "The routing weights of new conversations, and their changes",
                "responses": {"200": {"description": "Weights, revision and the last changes.",
                                      "content": {JSON: {"schema": _ref("Routing")}}},
                              "503": _BUSY},
            },
            "put": {
                "operationId": "setRouting", "summary": "Change the routing weights (audited)",
                "parameters": [{"name": "X-Statefleet-Actor", "in": "header", "required": False,
                                "description": "Who changes them, for the audit log.", "schema": _STRING}],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("RoutingChange")}}},
                "responses": {
                    "200": {"description": "The new weights.", "content": {JSON: {"schema": _ref("Routing")}}},
                    "400": _error("Malformed JSON or a body that is not an object."),
                    "409": _error("The weights changed since `revision` (routing_conflict)."),
                    "415": _error("Content-Type is not application/json."),
                    "422": _error("Weights that are not whole percents of version names summing to 100."),
                    "503": _BUSY,
                },
            },
        },
        "/v1/fleet": {"get": {
            "operationId": "fleet", "summary": "The instances of the fleet",
            "responses": {"200": {"description": "Instances.", "content": {JSON: {"schema": _ref("Fleet")}}}},
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics (docs/observability.md)",
            "responses": {
                "200": {"description": "Text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                "404": _error("Metrics are off on this server (statefleet serve --no-metrics)."),
            },
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": _OBJECT}}}},
        }},
    }


def openapi_document(agent: Agent) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a server running ``agent``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"statefleet agent {agent.name}",
            "version": __version__,
            "description": f"Agent {agent.name!r} version {agent.version!r}, served by statefleet.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "headers": {
                "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
            },
        },
    }
