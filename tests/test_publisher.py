"""The event-log writer: tokens of all conversations go to the store in batches, and a turn's end writes its own
at once (the reply is committed after them)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from statefleet.engine import publisher
from statefleet.engine.publisher import EventLogWriter
from statefleet.store.base import ConversationKey, JSONObject, Limits
from statefleet.store.memory import MemoryStore

A = ConversationKey("t", "a")
B = ConversationKey("t", "b")


class CountingStore(MemoryStore):
    """A memory store that records each ``append_events`` call's conversations."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[set[ConversationKey]] = []

    async def append_events(self, batches: Mapping[ConversationKey, list[JSONObject]], *, limits: Limits) -> None:
        self.calls.append(set(batches))
        await super().append_events(batches, limits=limits)


def token(text: str) -> JSONObject:
    return {"type": "token", "message_id": "m1", "text": text}


async def texts(store: MemoryStore, key: ConversationKey) -> list[str]:
    return [event.data["text"] for event in await store.read_events(key, after=None, limit=100)]


async def test_tokens_of_several_conversations_share_one_store_call() -> None:
    store = CountingStore()
    appended: list[ConversationKey] = []
    writer = EventLogWriter(lambda: store, Limits(), appended.extend)
    for i in range(3):
        writer.add(A, token(f"a{i}"))
        writer.add(B, token(f"b{i}"))
        await asyncio.sleep(0)  # tokens arrive over a few loop passes, as from streams
    await asyncio.sleep(publisher.BATCH_DELAY * 4)
    assert store.calls == [{A, B}]
    assert await texts(store, A) == ["a0", "a1", "a2"] and await texts(store, B) == ["b0", "b1", "b2"]
    assert sorted(appended) == [A, B]


async def test_a_turns_end_writes_its_tokens_without_waiting_for_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "BATCH_DELAY", 30.0)
    store = CountingStore()
    writer = EventLogWriter(lambda: store, Limits(), lambda keys: None)
    writer.add(A, token("x"))
    writer.add(B, token("y"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.calls == [] and await texts(store, A) == []  # still gathering
    await asyncio.wait_for(writer.flushed(A), timeout=5)  # not 30 s
    assert await texts(store, A) == ["x"]
    writer.add(A, token("z"))
    await asyncio.wait_for(writer.close(), timeout=5)  # what is queued is written before the writer stops
    assert await texts(store, A) == ["x", "z"] and await texts(store, B) == ["y"]
