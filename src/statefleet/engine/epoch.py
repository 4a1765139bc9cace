"""Noticing that the store lost its data under a running fleet: a Redis restarted without persistence, a
``FLUSHALL``, a replaced SQLite file.

The store keeps one epoch marker (``Store.fleet_epoch``). Every instance remembers the epoch it first saw and
reads it again with each registry refresh; a different one means everything the fleet knew — conversations,
inboxes, idempotency records — is gone, and conversations silently restart at turn 1. The engine cannot undo
that, so it says it loudly: an error log line, the ``statefleet_store_resets_total`` metric, and ``/readyz``
failing for ``store_reset_hold`` seconds (docs/operations.md, "When the store loses its data").
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from ..store.base import Store

log = logging.getLogger("statefleet.turns")  # the engine's logger: operators filter on it


@dataclass(frozen=True, slots=True)
class StoreReset:
    """The store's epoch changed under this instance: it lost its data."""

    previous: str
    current: str
    #: Unix time the change was noticed.
    detected_at: float


class EpochWatch:
    """Remembers the store's epoch and notices when it changes."""

    def __init__(self, hold: float) -> None:
        #: Seconds ``holding`` stays true after a reset was noticed.
        self.hold = hold
        #: The epoch this instance knows (None until first read).
        self.epoch: str | None = None
        #: The last reset noticed, if any.
        self.last_reset: StoreReset | None = None

    async def check(self, store: Store) -> StoreReset | None:
        """Read the store's epoch (creating it if missing); return the reset if it changed since last time.

        Raises what the store raises when it cannot be reached: the caller retries on its next round.
        """
        current = await store.fleet_epoch(uuid.uuid4().hex)
        if self.epoch is None or current == self.epoch:
            self.epoch = current
            return None
        reset = StoreReset(self.epoch, current, time.time())
        self.epoch = current
        self.last_reset = reset
        log.error(
            "the store lost its data: its epoch changed from %r to %r (restarted without persistence, flushed "
            "or replaced). Conversations, inboxes and idempotency records written before are gone; "
            "conversations start again at turn 1. /readyz fails for %.0f s",
            reset.previous, reset.current, self.hold,
            extra={"previous_epoch": reset.previous, "epoch": reset.current},
        )
        return reset

    @property
    def holding(self) -> bool:
        """True within ``hold`` seconds of a noticed reset (readiness fails meanwhile)."""
        reset = self.last_reset
        return reset is not None and time.time() - reset.detected_at < self.hold
