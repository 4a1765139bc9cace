"""Waiting for a message's result: the local future of a turn this engine runs, or its receipt in the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

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
        delay = min(delay * 1.5, 0.05 if poll_store else 0.5)
        try:
            receipt = await store.receipt(key, message_id=message_id)
        except errors.StoreUnavailable:
            # The message stays accepted while the store is away; keep waiting until the caller's timeout.
            delay = max(delay, 0.1)
            continue
        if receipt is not None and receipt.status != "pending" and receipt.result is not None:
            return receipt.result


async def follow_receipt(
    store: Store,
    key: ConversationKey,
    message_id: str,
    waiter: asyncio.Future[JSONObject],
    wanted: Callable[[], bool],
) -> None:
    """Settle ``waiter`` from the message's receipt, once another instance commits it.

    For a turn that moved away from this engine (its lease was lost, or its commit fenced): the new owner runs
    the message and its commit writes the receipt. Ends when the waiter is settled (or its caller went away,
    ``wanted()`` False). If the conversation disappears meanwhile (deleted, expired, or the store lost its
    data) the fate of the message can no longer be read: the caller gets ``OutcomeUnknown``.
    """
    delay = 0.01
    last_look = time.monotonic()
    while not waiter.done() and wanted():
        await asyncio.wait([waiter], timeout=delay)
        delay = min(delay * 1.5, 0.5)
        try:
            receipt = await store.receipt(key, message_id=message_id)
            if receipt is None and time.monotonic() - last_look >= 1.0:
                last_look = time.monotonic()
                gone = await store.load(key) is None
            else:
                gone = False
        except errors.StoreUnavailable:
            continue
        if waiter.done():
            return
        if receipt is not None and receipt.status != "pending" and receipt.result is not None:
            waiter.set_result(receipt.result)
        elif gone:
            waiter.set_exception(errors.OutcomeUnknown(
                f"conversation {key.id!r} no longer exists (deleted, expired, or the store lost its data) while "
                f"message {message_id!r} was running; whether it committed cannot be read back"))
