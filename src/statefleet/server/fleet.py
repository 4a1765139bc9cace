"""What this server tells about the fleet at ``/v1/fleet``.

For now only this instance; the store-backed registry of every instance replaces ``fleet_instances``.
"""

from __future__ import annotations

from ..store.base import JSONObject
from ..turns import Engine
from ._types import Scope


def instance_info(engine: Engine, address: str | None, started_at: float) -> JSONObject:
    """This instance as the fleet sees it."""
    return {
        "id": engine.instance_id,
        "agent": engine.agent.name,
        "version": engine.agent.version,
        "address": address,
        "in_flight": engine.in_flight,
        "draining": engine.draining,
        "started_at": started_at,
    }


def request_address(scope: Scope) -> str | None:
    """host:port the request reached this server at (the address a peer would use)."""
    server = scope.get("server")
    if not server or server[1] is None:
        return None
    return f"{server[0]}:{server[1]}"


async def fleet_instances(engine: Engine, address: str | None, started_at: float) -> list[JSONObject]:
    """Every instance of the fleet (today: this one)."""
    return [instance_info(engine, address, started_at)]
