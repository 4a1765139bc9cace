"""What this server tells about the fleet at ``/v1/fleet``: every live instance, from the store's registry.

Each engine refreshes its own entry (id, agent, version, address, in-flight turns, waiting callers,
draining, heartbeat); this instance's entry is taken live, the others as last registered.
"""

from __future__ import annotations

from ..engine import Engine
from ..store.base import JSONObject
from ._types import Scope


def request_address(scope: Scope) -> str | None:
    """host:port the request reached this server at (the address a peer would use)."""
    server = scope.get("server")
    if not server or server[1] is None:
        return None
    return f"{server[0]}:{server[1]}"


async def fleet_instances(engine: Engine, address: str | None) -> JSONObject:
    """Every live instance of the fleet, this one first, and the fleet-wide inbox backlog."""
    if engine.address is None:
        engine.address = address
    me = engine.info()
    others = [i for i in await engine.store.instances() if i.get("id") != engine.instance_id]
    others.sort(key=lambda i: (str(i.get("version")), str(i.get("id"))))
    return {"instances": [me, *others], "backlog": await engine.store.backlog()}
