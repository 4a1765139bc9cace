"""``MeteredStore``: a ``Store`` that times every operation into ``statefleet_store_operation_duration_seconds``.

A thin proxy: two clock reads and one histogram observation per call. Attributes that are not part of the
``Store`` protocol (``stats``, backend specifics) are the wrapped store's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any

from ..store.base import (
    Store,
)
from .metrics import STORE_OPERATIONS, Metrics

_Method = Callable[..., Coroutine[Any, Any, Any]]


class StoreProxy:
    """Forwards everything to ``inner``; subclasses wrap the protocol's methods."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def close(self) -> None:
        await self.inner.close()


def _metered(op: str) -> _Method:
    async def call(self: MeteredStore, *args: Any, **kwargs: Any) -> Any:
        start = perf_counter()
        try:
            return await getattr(self.inner, op)(*args, **kwargs)
        except Exception:
            self._errors.labels(op).inc()
            raise
        finally:
            self._seconds[op].observe(perf_counter() - start)

    call.__name__ = call.__qualname__ = op
    return call


class MeteredStore(StoreProxy):
    """``inner``, with every operation timed (and its exceptions counted) by ``metrics``."""

    def __init__(self, inner: Store, metrics: Metrics) -> None:
        super().__init__(inner)
        self._seconds = metrics.store_op
        self._errors = metrics.store_errors
        # The two calls of every turn are timed by the engine itself and reported through its observer
        # (``message_accepted``, ``turn_finished``): here they go straight to the store, with no wrapper.
        self.accept = inner.accept
        self.commit = inner.commit

    renew = _metered("renew")
    release = _metered("release")
    reclaim = _metered("reclaim")
    expired_leases = _metered("expired_leases")
    receipt = _metered("receipt")
    load = _metered("load")
    delete = _metered("delete")
    append_events = _metered("append_events")
    read_events = _metered("read_events")
    backlog = _metered("backlog")
    register_instance = _metered("register_instance")
    deregister_instance = _metered("deregister_instance")
    instances = _metered("instances")
    ping = _metered("ping")


assert set(STORE_OPERATIONS) - {"accept", "commit"} <= set(vars(MeteredStore)), "every store operation is metered"
