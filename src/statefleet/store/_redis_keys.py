"""Every Redis key the Redis store writes, named once.

All keys of one conversation share the hash tag ``{tenant:id}`` (a tenant never contains ``:``), so every
script that runs a turn touches one slot, and every key it touches is passed in ``KEYS`` (Redis Cluster
routes by them):

- ``sf:{tenant:id}:m`` — meta hash (version, turns, times, lease, fence, attempts; fields in
  ``lua/_prelude.lua``)
- ``sf:{tenant:id}:h`` — history window, a list of JSON utterances
- ``sf:{tenant:id}:s`` — the agent's state, JSON
- ``sf:{tenant:id}:i`` — inbox, a list of accepted messages not yet committed (absent when empty)
- ``sf:{tenant:id}:e`` — event log, a capped stream with its own TTL
- ``sf:{tenant:id}:r:<name>`` — receipts, ``name`` being ``k:<idempotency key>`` or ``m:<message id>``. The
  value starts with ``<created>:``, the conversation incarnation that wrote it, so a deleted or expired
  conversation's receipts are never taken for a later incarnation's (they simply expire)

Fleet-wide, outside every conversation's slot, and never touched by a conversation's scripts (``_hints``
updates them after the scripts answer; they are hints, see docs/architecture.md):

- ``sf:leases:<version>:{<tag>}`` — per agent version, 16 sorted sets of lease-expiry hints (member
  ``tenant:id``, score the expiry in ms on the conversation's Redis clock). Their hash tags are chosen so that
  the 16 keys fall in 16 different ranges of 1,024 slots: a Redis Cluster spreads them over its primaries. The
  number of members is the backlog: conversations with messages accepted and not yet committed. Apart per
  version, so an instance's sweeper only ever finds (and takes over) conversations pinned to its own version
- ``sf:versions`` — the versions that ever had a lease hint (to sum the backlog over every version)
- ``sf:{routing}`` and ``sf:{routing}:log`` — the fleet's routing weights (hash: ``w`` the weights JSON,
  ``r`` the revision) and the bounded log of their changes (a list, newest first), in one slot so that
  ``routing.lua`` changes both atomically
- ``sf:epoch:{<tag>}`` — the fleet's epoch marker, one per hint shard's slot range (same tags): instances that
  see it change know the store — or, on a Cluster, part of it — lost its data
- ``sf:instances`` — hash of the fleet's instances (id → JSON info with a heartbeat time)
- ``sf:audit`` — held for a minute by the one instance repairing lost hints (``RedisStore.repair_hints``)
"""

from __future__ import annotations

import functools
import zlib
from typing import NamedTuple

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .base import ConversationKey

#: First segment of every key statefleet writes.
PREFIX = "sf"
#: Shards of the lease-expiry hint index.
HINT_SHARDS = 16

META = "m"
HISTORY = "h"
STATE = "s"
INBOX = "i"
EVENTS = "e"
RECEIPTS = "r:"


def _spread_tag(shard: int) -> str:
    """The first hash tag ``L<shard>.<n>`` whose slot falls in the ``shard``-th of 16 equal slot ranges."""
    width = REDIS_CLUSTER_HASH_SLOTS // HINT_SHARDS
    n = 0
    while key_slot(f"L{shard}.{n}".encode()) // width != shard:
        n += 1
    return f"L{shard}.{n}"


_TAGS: tuple[str, ...] = tuple(_spread_tag(shard) for shard in range(HINT_SHARDS))
#: The epoch marker's copies, one per hint shard's slot range (see ``RedisStore.fleet_epoch``).
EPOCH_KEYS: tuple[str, ...] = tuple(f"{PREFIX}:epoch:{{{tag}}}" for tag in _TAGS)
#: The fleet's instance registry.
INSTANCES = f"{PREFIX}:instances"
#: Held by the instance repairing lost hints.
AUDIT = f"{PREFIX}:audit"
#: The versions that ever had a lease hint.
VERSIONS = f"{PREFIX}:versions"
#: The routing weights and their change log (one slot).
ROUTING = f"{PREFIX}:{{routing}}"
ROUTING_LOG = f"{PREFIX}:{{routing}}:log"
#: Matches every conversation's meta hash (``SCAN`` pattern, to count conversations per version).
META_PATTERN = f"{PREFIX}:{{*}}:{META}"
#: Matches every conversation's inbox (``SCAN`` pattern; inboxes exist only while not empty).
INBOX_PATTERN = f"{PREFIX}:{{*}}:{INBOX}"


class ConversationKeys(NamedTuple):
    """The keys (and hint member) of one conversation."""

    meta: str
    history: str
    state: str
    inbox: str
    events: str
    #: Prefix of the receipt keys: append ``k:<idempotency key>`` or ``m:<message id>``.
    receipts: str
    #: Its member in the lease hints: ``tenant:id`` (the shard: ``hint_key_of(member)``, computed only when a
    #: hint is written).
    member: str


def conversation_keys(key: ConversationKey) -> ConversationKeys:
    member = f"{key.tenant}:{key.id}"
    tag = f"{PREFIX}:{{{member}}}:"
    return ConversationKeys(
        meta=tag + META,
        history=tag + HISTORY,
        state=tag + STATE,
        inbox=tag + INBOX,
        events=tag + EVENTS,
        receipts=tag + RECEIPTS,
        member=member,
    )


@functools.lru_cache(maxsize=256)
def hint_keys(version: str) -> tuple[str, ...]:
    """The 16 hint shards of the conversations pinned to ``version``, in order."""
    return tuple(f"{PREFIX}:leases:{version}:{{{tag}}}" for tag in _TAGS)


def hint_key_of(member: str, version: str) -> str:
    """The hint shard of a conversation (by its member ``tenant:id`` and its version)."""
    return hint_keys(version)[zlib.crc32(member.encode()) % HINT_SHARDS]


def conversation_of(member: str) -> ConversationKey:
    """The conversation a hint member names."""
    tenant, _, id_ = member.partition(":")
    return ConversationKey(tenant, id_)


def member_of_inbox(inbox_key: str) -> str:
    """The hint member of an inbox key ``sf:{tenant:id}:i``."""
    return inbox_key[len(PREFIX) + 2:-len(INBOX) - 2]


def meta_of_inbox(inbox_key: str) -> str:
    """The meta hash key ``sf:{tenant:id}:m`` of an inbox key ``sf:{tenant:id}:i``."""
    return inbox_key[:-len(INBOX)] + META
