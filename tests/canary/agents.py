"""Agents for the canary fleet tests: one module, the version from ``CANARY_VERSION``.

``CANARY_FAIL_EVERY`` N > 0 makes every N-th turn of the process fail (a bad release); ``CANARY_DELAY`` is the
seconds a turn takes (streaming a token first). Every reply names the version whose code ran it, and the
state keeps every version that ever ran a turn of the conversation, so a test sees a turn run by the wrong
version even if its reply was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import os

from statefleet import Agent, Turn

VERSION = os.environ.get("CANARY_VERSION", "v1")
FAIL_EVERY = int(os.environ.get("CANARY_FAIL_EVERY", "0"))
DELAY = float(os.environ.get("CANARY_DELAY", "0"))
_turns = itertools.count(1)

agent = Agent("canary", version=VERSION, history_window=40)


@agent.handler
async def handle(turn: Turn) -> None:
    n = next(_turns)
    turn.emit(f"{VERSION}:")
    if DELAY:
        await asyncio.sleep(DELAY)
    if FAIL_EVERY and n % FAIL_EVERY == 0:
        raise RuntimeError(f"{VERSION} fails every {FAIL_EVERY}th turn")
    ran = list(turn.state.get("ran_by", []))
    if VERSION not in ran:
        ran.append(VERSION)
    turn.state["ran_by"] = ran
    turn.state["texts"] = [*turn.state.get("texts", []), turn.text]
    turn.reply(f"{VERSION} answers {turn.text}")
