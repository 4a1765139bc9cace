"""HTTP errors, and how every ``StatefleetError`` becomes a JSON answer ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import json

from .. import errors
from ._types import Headers


class MalformedJSON(errors.StatefleetClientError):
    """The request body is not valid JSON, or not a JSON object."""

    code = "malformed_json"
    status = 400


class BodyTooLarge(errors.StatefleetClientError):
    """The request body is larger than the server reads."""

    code = "body_too_large"
    status = 413


class UnsupportedMediaType(errors.StatefleetClientError):
    """The request body is not ``application/json``."""

    code = "unsupported_media_type"
    status = 415


class RouteNotFound(errors.StatefleetClientError):
    """No route has this path."""

    code = "not_found"
    status = 404


class MethodNotAllowed(errors.StatefleetClientError):
    """The route exists but not with this method."""

    code = "method_not_allowed"
    status = 405


class Draining(errors.Overloaded):
    """This instance is shutting down and takes no new work; another instance will."""

    code = "draining"
    status = 503


class ClientDisconnected(Exception):
    """The client went away before the request was read; nothing to answer."""


def error_json(exc: errors.StatefleetError) -> bytes:
    """The JSON body of an error answer."""
    return json.dumps({"error": {"code": exc.code, "message": str(exc)}}, separators=(",", ":")).encode()


def error_headers(exc: errors.StatefleetError, body: bytes, retry_after: int) -> Headers:
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if exc.status in (429, 503):
        headers.append((b"retry-after", str(retry_after).encode()))
    return headers
