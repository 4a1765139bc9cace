"""State stores: ``open_store(url)`` picks the backend by URL scheme.

- ``memory://`` — one process, nothing persisted.
- ``sqlite:///relative/state.db`` or ``sqlite:////absolute/state.db`` — the embedded default; several
  processes on one machine share the file.
- ``redis://[:password@]host:port/db`` and ``rediss://`` (TLS) — production, one Redis.
- ``redis+sentinel://[:password@]h1:26379,h2:26379/<master>/<db>`` — a primary with replicas, failed over
  by Redis Sentinel.
- ``redis+cluster://[:password@]h1:7000,h2:7001/`` — Redis Cluster. ``rediss+`` for TLS on either.
"""

from __future__ import annotations

import re

from ..errors import InvalidStoreUrl
from .base import (
    Acceptance,
    AcceptKind,
    CommitOutcome,
    ConversationKey,
    ConversationView,
    Event,
    InboundMessage,
    Lease,
    Limits,
    Receipt,
    RenewOutcome,
    Store,
    TurnCommit,
    WorkItem,
)

__all__ = [
    "AcceptKind",
    "Acceptance",
    "CommitOutcome",
    "ConversationKey",
    "ConversationView",
    "Event",
    "InboundMessage",
    "Lease",
    "Limits",
    "Receipt",
    "RenewOutcome",
    "Store",
    "TurnCommit",
    "WorkItem",
    "check_store_url",
    "open_store",
    "redact_url",
]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and reprs: the user info's (also in the multi-host
    netlocs of Sentinel and Cluster URLs) and the ``password`` / ``sentinel_password`` options'.

    >>> redact_url("redis+sentinel://:s3cret@h1:26379,h2:26379/main?sentinel_password=pw")
    'redis+sentinel://:***@h1:26379,h2:26379/main?sentinel_password=***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The netloc ends where urlsplit ends it; split by hand since urlsplit rejects some multi-host netlocs.
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    tail = re.sub(r"([?&](?:password|sentinel_password)=)[^&#]*", r"\1***", tail)
    return f"{scheme}{sep}{netloc}{tail}"


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
SCHEMES = ("memory", "sqlite", *REDIS_SCHEMES)


def check_store_url(url: object) -> str:
    """``url`` if its scheme names a store; else ``InvalidStoreUrl`` saying which schemes exist."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidStoreUrl(
            f"store URL {url!r} has no scheme; use memory://, sqlite:///path/state.db or redis://host:port/0"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise InvalidStoreUrl(
            f"unknown store scheme {scheme!r} in {redact_url(url)!r}; "
            "use memory://, sqlite:///path/state.db, redis://, rediss://, redis+sentinel:// or redis+cluster://"
        )
    return url


async def open_store(url: str) -> Store:
    """Open the store at ``url`` and check that it answers.

    >>> store = await open_store("sqlite:///.statefleet/state.db")  # relative; sqlite:////abs/path.db
    """
    scheme = check_store_url(url).split("://", 1)[0].lower()
    store: Store
    if scheme == "memory":
        from .memory import MemoryStore

        store = MemoryStore()
    elif scheme == "sqlite":
        from .sqlite import SQLiteStore

        store = await SQLiteStore.open(url)
    elif scheme in REDIS_SCHEMES:
        from .redis import RedisStore

        store = await RedisStore.open(url)
    else:
        raise InvalidStoreUrl(
            f"unknown store scheme {scheme!r} in {redact_url(url)!r}; "
            "use memory://, sqlite:///path/state.db, redis:// or rediss://"
        )
    return store
