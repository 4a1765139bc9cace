"""Resolving a commit whose answer was lost: the store failed (paused, restarting, failing over, a dropped
connection) while a turn committed, so the engine does not know whether the commit landed.

Telling the caller "failed" would be wrong about half the time, and a client that then resends with a new key
gets a second turn. Instead the engine finds out. A commit is idempotent under its fencing token: the store
applies it only while the lease is this engine's and the message heads the inbox, and pops the message in the
same atomic step. So sending the same commit again either applies it (the first never landed) or is refused
— and then the message's receipt, which every commit writes (``Limits.outcome_ttl``), says whether it
committed (by this engine, or by a new owner after a takeover) or still waits for another owner to run it.
Retries back off until ``resolve_timeout``; only a store that stays away that long leaves the outcome unknown.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .. import errors
from ..store.base import CommitOutcome, JSONObject, Lease, Limits, Store, TurnCommit

#: First pause before retrying (s); doubled each time up to ``_MAX_DELAY``.
_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class Resolution:
    """What became of a commit whose answer was lost. Exactly one field is set."""

    #: The retried commit applied now (the first never landed): go on as after any commit.
    applied: CommitOutcome | None = None
    #: The message had committed (or failed) already; its result, as the store keeps it.
    result: JSONObject | None = None
    #: The message did not commit here and waits for another owner (the lease moved on).
    elsewhere: bool = False


async def resolve_commit(
    store: Store, lease: Lease, commit: TurnCommit, limits: Limits, timeout: float
) -> Resolution | None:
    """Retry ``commit`` and read the message's receipt until its fate is known; None if it stays unknown."""
    deadline = time.monotonic() + timeout
    delay = _FIRST_DELAY
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_DELAY)
        try:
            outcome = await store.commit(lease, commit, limits=limits)
            if not outcome.fenced:
                return Resolution(applied=outcome)
            receipt = await store.receipt(lease.key, message_id=commit.message_id)
        except errors.StoreUnavailable:
            continue
        if receipt is not None and receipt.status != "pending" and receipt.result is not None:
            return Resolution(result=receipt.result)
        return Resolution(elsewhere=True)
    return None
