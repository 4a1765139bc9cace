"""The routing weights a canary run changes, kept in the fleet's store (every change audited there)."""

from __future__ import annotations

from ..routing import set_weights
from ..store.base import Store

__all__ = ["StoreWeightsControl"]


class StoreWeightsControl:
    """``WeightsControl`` over the store. A change made by anyone else during the run stops it: each change is
    made only if the weights are still the ones this control last read or wrote (``RoutingConflict``)."""

    def __init__(self, store: Store, actor: str) -> None:
        self._store = store
        self._actor = actor
        self._revision: int | None = None

    async def weights(self) -> dict[str, int]:
        routing = await self._store.routing()
        self._revision = routing.revision
        return dict(routing.weights)

    async def set_weights(self, weights: dict[str, int], *, reason: str) -> None:
        routing = await set_weights(self._store, weights, actor=self._actor, reason=reason,
                                    expected_revision=self._revision)
        self._revision = routing.revision
