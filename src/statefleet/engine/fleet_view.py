"""What an engine knows of the rest of the fleet: the routing weights, and the live instances by version.

Refreshed by the engine's upkeep every ``fleet_view_interval`` (1 s): a change of the weights reaches every
instance within that, and the server forwards a message of another version's conversation to an address found
here (see docs/canary.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from ..routing import pick_version
from ..store.base import ConversationKey, JSONObject, Routing

__all__ = ["FleetView"]


@dataclass(slots=True)
class FleetView:
    """The routing weights and the live instances, as last read from the store."""

    routing: Routing = field(default_factory=lambda: Routing({}, 0))
    #: Addresses (host:port) of live, not draining instances, by the version they serve.
    addresses: dict[str, list[str]] = field(default_factory=dict)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def update(self, routing: Routing, instances: list[JSONObject]) -> None:
        self.routing = routing
        addresses: dict[str, list[str]] = {}
        for info in instances:
            address, version = info.get("address"), info.get("version")
            if isinstance(address, str) and isinstance(version, str) and not info.get("draining"):
                addresses.setdefault(version, []).append(address)
        for found in addresses.values():
            found.sort()
        self.addresses = addresses

    def new_version(self, key: ConversationKey) -> str | None:
        """The version the weights pin a new conversation to; None when no weights are set."""
        weights = self.routing.weights
        return pick_version(weights, key.tenant, key.id) if weights else None

    def instances_of(self, version: str) -> list[str]:
        """The addresses of ``version``'s live instances, rotated on every call (spreading forwarded messages)."""
        found = self.addresses.get(version, [])
        if len(found) < 2:
            return list(found)
        start = next(self._turn) % len(found)
        return found[start:] + found[:start]
