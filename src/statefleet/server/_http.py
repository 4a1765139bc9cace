"""Small HTTP helpers on raw ASGI: headers, the body read with a limit, JSON answers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from .. import errors
from ._types import Headers, Receive, Scope, Send
from .errors import BodyTooLarge, ClientDisconnected, MalformedJSON, UnsupportedMediaType, error_headers, error_json

JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def header(scope: Scope, name: bytes) -> str | None:
    """The value of one request header (``name`` in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}


async def send_json(send: Send, status: int, body: bytes, extra: Headers | None = None) -> None:
    headers: Headers = [JSON_TYPE, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: errors.StatefleetError, retry_after: int, extra: Headers | None = None) -> None:
    body = error_json(exc)
    headers = error_headers(exc, body, retry_after)
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_json_content_type(scope: Scope) -> None:
    """415 unless the body is declared JSON (a missing Content-Type is taken as JSON)."""
    value = header(scope, b"content-type")
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaType(f"Content-Type {value!r} is not supported; send application/json")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, read chunk by chunk; ``BodyTooLarge`` as soon as it passes ``limit`` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; ``MalformedJSON`` (400) for anything else."""
    if not body:
        raise MalformedJSON("request body is empty; send a JSON object such as {\"text\": \"hello\"}")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedJSON(f"request body must be a JSON object, not {type(value).__name__}")
    return value
