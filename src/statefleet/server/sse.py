"""Server-sent events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

Data is always compact JSON, which never contains a line break, so each event has exactly one ``data:`` line.
"""

from __future__ import annotations

from typing import Any

from .._json import dumps

#: Sent first on every stream: how long (ms) an ``EventSource`` waits before it reconnects.
RETRY = b"retry: 1000\n\n"
#: A comment that keeps idle connections open through proxies; clients ignore it.
HEARTBEAT = b": keep-alive\n\n"


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One event: ``id:`` (when given), ``event:`` and one ``data:`` line of JSON."""
    head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
    return head + b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"
