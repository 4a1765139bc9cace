"""Every Redis key the Redis store writes, named once.

All keys of one conversation share the hash tag ``{tenant:id}`` (a tenant never contains ``:``), so each
script that changes a conversation touches one slot:

- ``sf:{tenant:id}:m`` — meta hash (version, turns, times, lease, fence, attempts; fields in
  ``lua/_prelude.lua``)
- ``sf:{tenant:id}:h`` — history window, a list of JSON utterances
- ``sf:{tenant:id}:s`` — the agent's state, JSON
- ``sf:{tenant:id}:i`` — inbox, a list of accepted messages not yet committed
- ``sf:{tenant:id}:e`` — event log, a capped stream with its own TTL
- ``sf:{tenant:id}:r:<created>:<name>`` — receipts, ``name`` being ``k:<idempotency key>`` or
  ``m:<message id>``; ``created`` names the conversation's incarnation, so a deleted or expired
  conversation's receipts are never seen again and simply expire

Fleet-wide, outside any conversation's slot, sharded so no single key is hot:

- ``sf:leases:<shard>`` — sorted sets of lease-expiry hints (member ``tenant:id``, score the expiry in ms)
- ``sf:pending:<shard>`` — hashes of ``tenant:id`` → inbox length, for conversations with messages accepted
  and not yet committed (the inbox backlog, an autoscaling signal). The conversation's own inbox is the
  truth: every script that changes an inbox sets its entry to the inbox's length, and reclaim drops the
  entry of a conversation that expired, so an entry is never wrong for longer than a sweep
- ``sf:epoch`` — the fleet's epoch marker: instances that see it change know the store lost its data
- ``sf:instances`` — hash of the fleet's instances (id → JSON info with a heartbeat time)
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

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


def hint_key(shard: int) -> str:
    """The lease-expiry hint sorted set of ``shard``."""
    return f"{PREFIX}:leases:{shard}"


#: All hint shards, in order.
HINT_KEYS: tuple[str, ...] = tuple(hint_key(shard) for shard in range(HINT_SHARDS))
#: Pending-count shards, in order (same sharding as the hints).
BACKLOG_KEYS: tuple[str, ...] = tuple(f"{PREFIX}:pending:{shard}" for shard in range(HINT_SHARDS))
#: The fleet's epoch marker (see ``Store.fleet_epoch``).
EPOCH = f"{PREFIX}:epoch"
#: The fleet's instance registry.
INSTANCES = f"{PREFIX}:instances"


class ConversationKeys(NamedTuple):
    """The keys (and hint member) of one conversation."""

    meta: str
    history: str
    state: str
    inbox: str
    events: str
    #: Prefix of the receipt keys; scripts append ``<created>:<name>``.
    receipts: str
    #: The hint shard this conversation's lease expiry is indexed in.
    hints: str
    #: Its member in that shard: ``tenant:id``.
    member: str
    #: The pending-count shard this conversation counts in.
    backlog: str


def conversation_keys(key: ConversationKey) -> ConversationKeys:
    member = f"{key.tenant}:{key.id}"
    tag = f"{PREFIX}:{{{member}}}:"
    shard = zlib.crc32(member.encode()) % HINT_SHARDS
    return ConversationKeys(
        meta=tag + META,
        history=tag + HISTORY,
        state=tag + STATE,
        inbox=tag + INBOX,
        events=tag + EVENTS,
        receipts=tag + RECEIPTS,
        hints=HINT_KEYS[shard],
        member=member,
        backlog=BACKLOG_KEYS[shard],
    )


def conversation_of(member: str) -> ConversationKey:
    """The conversation a hint member names."""
    tenant, _, id_ = member.partition(":")
    return ConversationKey(tenant, id_)
