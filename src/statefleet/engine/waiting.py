"""Waiting for a message's result: the local future of a turn this engine runs, or its receipt in the store."""

from __future__ import annotations

import asyncio
import time

from .. import errors
from ..store.base import ConversationKey, JSONObject, Store
from .results import expire_waiter


async def await_own(message_id: str, waiter: asyncio.Future[JSONObject], timeout: float | None) -> JSONObject:
    """The result of a message this engine leased at accept: its own drive resolves (or fails) the future."""
    if timeout is None:
        return await waiter
    timer = asyncio.get_running_loop().call_later(timeout, expire_waiter, waiter, message_id, timeout)
    try:
        return await waiter
    finally:
        timer.cancel()


async def await_receipt(
    store: Store,
    key: ConversationKey,
    message_id: str,
    waiter: asyncio.Future[JSONObject],
    timeout: float | None,
    *,
    poll_store: bool,
) -> JSONObject:
    """The result of ``message_id``: from this engine's own commit, or from its receipt in the store.

    A local waiter still checks the store now and then: the turn may have moved to another instance.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002 if poll_store else 0.5
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise errors.TurnTimeout(
                f"no reply to message {message_id!r} within {timeout} s; it stays accepted and will be "
                "processed — retry with the same Idempotency-Key to get its result"
            )
        step = delay if remaining is None else min(delay, remaining)
        done, _ = await asyncio.wait([waiter], timeout=step)
        if done:
            return waiter.result()
        receipt = await store.receipt(key, message_id=message_id)
        if receipt is not None and receipt.status != "pending" and receipt.result is not None:
            return receipt.result
        delay = min(delay * 1.5, 0.05 if poll_store else 0.5)
