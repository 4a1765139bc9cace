"""Waiting for a multi-server Redis fixture to reach a state (synced, failed over, agreeing on a map)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis


def wait_until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    """Poll ``condition`` every 50 ms; ``RuntimeError("<failure> within <timeout> s")`` if it is still false
    after ``timeout`` seconds. Redis errors while polling (a node restarting, a sentinel busy failing over)
    count as "not yet"; the last one is chained to the failure."""
    deadline = time.monotonic() + timeout
    last_error: redis.RedisError | None = None
    while True:
        try:
            if condition():
                return
        except redis.RedisError as error:
            last_error = error
        if time.monotonic() > deadline:
            raise RuntimeError(f"{failure} within {timeout} s") from last_error
        time.sleep(0.05)
