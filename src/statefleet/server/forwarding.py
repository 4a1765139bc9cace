"""Forwarding a message to an instance of the version its conversation is pinned to.

A mesh or load balancer may deliver a message to any instance. When the conversation belongs to another version
(pinned earlier, or assigned now by the routing weights), the engine refuses it untouched (``WrongVersion``), and
the server passes the request on to a live instance of that version — found in the fleet registry, else at the
per-version Service URL template — and relays the answer as it comes, streamed tokens included. The caller's
Idempotency-Key (one is made up when there is none, so that a retry to a second instance can never run the turn
twice), its trace context and tenant travel with it; ``X-Statefleet-Hops`` counts the hops against loops.

When no instance of the version answers, the caller gets 503 + Retry-After (``version_unavailable``): a
conversation is never served by another version. See docs/canary.md.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from .. import errors
from .._json import loads
from ..store.base import JSONObject
from . import sse
from ._http import header
from ._types import Headers, Scope, Send

log = logging.getLogger(__name__)

#: Request header: how many instances passed the request on before this one.
HOPS = b"x-statefleet-hops"
#: Request header (clients echo it; the mesh routes by it) and response header (the version that answered).
VERSION = b"x-statefleet-version"
#: Response header: the instance that forwarded the request (absent when served where it arrived).
FORWARDED_BY = b"x-statefleet-forwarded-by"
_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
#: Request headers passed on as they came (the message's own are the body, its key is set explicitly).
_REQUEST_HEADERS = frozenset((
    b"content-type", b"accept", b"x-tenant", b"traceparent", b"tracestate", b"baggage", b"x-request-id",
    b"authorization", b"user-agent",
))
#: Response headers relayed back (hop-by-hop ones such as transfer-encoding are the relaying server's own).
_RESPONSE_HEADERS = frozenset((
    "content-type", "content-length", "cache-control", "x-accel-buffering", "x-message-id", "x-statefleet-version",
    "retry-after", "idempotent-replayed", "set-cookie", "allow",
))


def hops_of(scope: Scope) -> int:
    """The ``X-Statefleet-Hops`` of a request (0 when it comes from a client)."""
    value = header(scope, HOPS)
    if value is None:
        return 0
    if not value.isdigit() or len(value) > 3:
        raise errors.StatefleetClientError(f"header X-Statefleet-Hops {value!r} must be a small whole number")
    return int(value)


def forwarded_version(scope: Scope, hops: int) -> str | None:
    """The version a forwarding instance chose for a new conversation (``X-Statefleet-Version`` of a forwarded
    request), which the receiving instance pins it to; None for a client's request (the weights decide)."""
    if hops == 0:
        return None
    value = header(scope, VERSION)
    if value is not None and not _VERSION_NAME.match(value):
        raise errors.StatefleetClientError(f"header X-Statefleet-Version {value!r} is not a version name")
    return value


class Forwarder:
    """Passes requests on to instances of another version (one HTTP client per server, kept alive)."""

    def __init__(self, instance_id: str, url_template: str | None, max_hops: int, timeout: float) -> None:
        self._instance_id = instance_id.encode()
        self._url_template = url_template
        self._max_hops = max_hops
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0),
                timeout=aiohttp.ClientTimeout(total=self._timeout, sock_connect=2.0),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def targets(self, version: str, addresses: list[str]) -> list[str]:
        """Base URLs of ``version``'s live instances (from the registry), else its Service URL (template)."""
        found = [f"http://{address}" for address in addresses]
        if not found and self._url_template:
            found.append(self._url_template.format(version=version).rstrip("/"))
        return found

    def check_hops(self, hops: int, version: str, conversation_id: str) -> None:
        if hops >= self._max_hops:
            raise errors.VersionUnavailable(
                f"conversation {conversation_id!r} belongs to version {version!r}, and this request was already "
                f"forwarded {hops} time(s) without reaching it (the fleet registry is settling); retry shortly"
            )

    async def forward(
        self,
        scope: Scope,
        send: Send,
        *,
        targets: list[str],
        version: str,
        conversation_id: str,
        body: bytes,
        idempotency_key: str | None,
        hops: int,
    ) -> str:
        """Send the request to the first of ``targets`` that answers and relay its answer. Returns the outcome
        (``forwarded``), or raises ``VersionUnavailable`` (nothing was started) when none answered."""
        self.check_hops(hops, version, conversation_id)
        if not targets:
            raise errors.VersionUnavailable(
                f"conversation {conversation_id!r} belongs to version {version!r}, and no instance of it is live; "
                "it is never served by another version: retry after Retry-After seconds"
            )
        key = idempotency_key or f"fwd:{uuid.uuid4().hex}"
        headers = self._headers(scope, version, key, hops)
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        delivered = False
        for base in targets:
            url = URL(base + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else ""), encoded=True)
            try:
                async with self._client().post(url, data=body, headers=headers) as response:
                    await self._relay(response, send)
                    return "forwarded"
            except aiohttp.ClientConnectorError as exc:
                log.info("forwarding to version %r at %s failed (%s); trying the next instance", version, base, exc)
            except (TimeoutError, aiohttp.ClientError) as exc:
                # The request may have reached it: a retry elsewhere with the same key finds its receipt.
                delivered = True
                log.warning("no answer from version %r at %s (%r); trying the next instance", version, base, exc)
        if delivered:
            raise errors.OutcomeUnknown(
                f"the message of conversation {conversation_id!r} was passed on to version {version!r}, which did "
                f"not answer; retry with Idempotency-Key {key!r} to get its result (it runs at most once)"
            )
        raise errors.VersionUnavailable(
            f"conversation {conversation_id!r} belongs to version {version!r}, and none of its instances answered; "
            "it is never served by another version: retry after Retry-After seconds"
        )

    def _headers(self, scope: Scope, version: str, key: str, hops: int) -> dict[str, str]:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
                   if name in _REQUEST_HEADERS}
        headers["idempotency-key"] = key
        headers["x-statefleet-hops"] = str(hops + 1)
        headers["x-statefleet-version"] = version
        return headers

    async def _relay(self, response: aiohttp.ClientResponse, send: Send) -> None:
        headers: Headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                            for name, value in response.headers.items() if name.lower() in _RESPONSE_HEADERS]
        headers.append((FORWARDED_BY, self._instance_id))
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        try:
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError) as exc:
            if not streaming:
                raise
            # Tokens went out already: end the stream with what is known (the turn runs, exactly once).
            log.warning("forwarded stream broke off: %r", exc)
            error = errors.OutcomeUnknown("the instance serving this conversation's version went away mid-stream; "
                                          "retry with the same Idempotency-Key to get the result")
            await send({"type": "http.response.body", "more_body": True,
                        "body": sse.frame("error", {"error": {"code": error.code, "message": str(error)}})
                        + sse.frame("done", {})})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def stream_events(
        self,
        *,
        targets: list[str],
        version: str,
        conversation_id: str,
        path: str,
        body: bytes,
        scope: Scope,
        idempotency_key: str | None,
    ) -> AsyncIterator[JSONObject]:
        """A message of a WebSocket passed on as a streamed POST: its events as the WebSocket sends them
        (``{"type": "token", ...}`` then ``{"type": "reply", ...}``); an error event raises it."""
        self.check_hops(0, version, conversation_id)
        if not targets:
            raise errors.VersionUnavailable(
                f"conversation {conversation_id!r} belongs to version {version!r}, and no instance of it is live; "
                "it is never served by another version: retry shortly"
            )
        key = idempotency_key or f"fwd:{uuid.uuid4().hex}"
        headers = self._headers(scope, version, key, 0)
        headers["accept"] = "text/event-stream"
        headers["content-type"] = "application/json"
        for base in targets:
            try:
                async with self._client().post(URL(base + path, encoded=True), data=body, headers=headers) as response:
                    if response.status != 200:
                        raise _error_of(response.status, await response.read())
                    async for event in _sse_events(response):
                        yield event
                    return
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.info("forwarding a WebSocket message to version %r at %s failed (%r)", version, base, exc)
        raise errors.VersionUnavailable(
            f"conversation {conversation_id!r} belongs to version {version!r}, and none of its instances answered; "
            "retry with the same idempotency_key"
        )


def _error_of(status: int, body: bytes) -> errors.StatefleetError:
    """The error an instance answered with, as the error it stands for (code and message kept)."""
    try:
        data: Any = loads(body)["error"]
        code, message = str(data["code"]), str(data["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "internal", f"the instance serving the conversation answered {status}"
    error = errors.StatefleetError(message)
    error.code, error.status = code, status
    return error


async def _sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[JSONObject]:
    """The events of a POST stream (``token``, ``reply``; ``error`` raised), until ``done``."""
    name = ""
    async for raw in response.content:
        line = raw.rstrip(b"\r\n")
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data = loads(line[6:])
            if name == "done":
                return
            if name == "error":
                error = data.get("error", {})
                failure = errors.StatefleetError(str(error.get("message", "the turn failed")))
                failure.code = str(error.get("code", "internal"))
                raise failure
            yield {"type": name, **data}


__all__ = ["FORWARDED_BY", "HOPS", "VERSION", "Forwarder", "forwarded_version", "hops_of"]
