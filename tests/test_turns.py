"""The engine on every backend, in one process: the turn protocol as a user sees it."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from statefleet import (
    Agent,
    ConversationBusy,
    Engine,
    EngineSettings,
    InvalidConversationId,
    InvalidMessage,
    MessageTooLarge,
    StateNotSerializable,
    Store,
    Turn,
    TurnFailed,
    TurnInterrupted,
)
from statefleet.errors import IdempotencyKeyReused

FAST = EngineSettings(lease_ttl=0.6, sweep_interval=0.1)


def echo_agent(**kwargs: object) -> Agent:
    agent = Agent("echo", history_window=kwargs.pop("window", 4), **kwargs)  # type: ignore[arg-type]

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.state["count"] = turn.state.get("count", 0) + 1
        turn.state["seen"] = [u["text"] for u in turn.history]
        await turn.emit("echo: ")
        turn.reply(turn.text, data={"turn": turn.turn})

    return agent


@pytest.fixture
async def engine(store: Store) -> AsyncIterator[Engine]:
    async with Engine(echo_agent(), store, FAST) as running:
        yield running


async def test_send_commits_a_turn_and_get_shows_it(engine: Engine) -> None:
    result = await engine.send("alice123", "hello", idempotency_key="k-1")
    assert result.reply == "hello" and result.turn == 1 and result.version == "v1"
    assert result.data == {"turn": 1} and result.events == 2
    conv = await engine.get("alice123")
    assert conv is not None and conv.turns == 1 and conv.state["count"] == 1
    assert [(u["role"], u["text"], u["turn"]) for u in conv.history] == [("user", "hello", 1), ("agent", "hello", 1)]
    assert await engine.get("nobody") is None


async def test_every_turn_sees_the_previous_window(engine: Engine) -> None:
    for i in range(6):
        await engine.send("c", f"m{i}")
    conv = await engine.get("c")
    assert conv is not None and conv.turns == 6
    assert conv.state["seen"] == ["m3", "m3", "m4", "m4"]  # window 4, before m5
    assert [u["text"] for u in conv.history] == ["m4", "m4", "m5", "m5"]


async def test_concurrent_messages_to_one_conversation_run_one_at_a_time(store: Store) -> None:
    agent = Agent("serial", history_window=200)
    active = 0
    overlaps = 0
    order: list[str] = []

    @agent.handler
    async def handle(turn: Turn) -> None:
        nonlocal active, overlaps
        active += 1
        overlaps += active > 1
        await asyncio.sleep(0.001)
        order.append(turn.text)
        turn.reply("ok")
        active -= 1

    async with Engine(agent, store, FAST) as engine:
        results = await asyncio.gather(*[engine.send("c", f"m{i}") for i in range(30)])
        assert overlaps == 0
        assert sorted(r.turn for r in results) == list(range(1, 31))
        conv = await engine.get("c")
        assert conv is not None and conv.turns == 30
        assert [u["text"] for u in conv.history if u["role"] == "user"] == order


async def test_idempotency_key_retries_give_one_turn(engine: Engine) -> None:
    first = await engine.send("c", "pay", idempotency_key="pay-1")
    retries = await asyncio.gather(*[engine.send("c", "pay", idempotency_key="pay-1") for _ in range(5)])
    assert all(r.message_id == first.message_id and r.turn == first.turn and r.duplicate for r in retries)
    conv = await engine.get("c")
    assert conv is not None and conv.turns == 1
    with pytest.raises(IdempotencyKeyReused):
        await engine.send("c", "something else", idempotency_key="pay-1")


async def test_concurrent_first_sends_with_one_key_give_one_turn(engine: Engine) -> None:
    results = await asyncio.gather(*[engine.send("c", "pay", idempotency_key="k") for _ in range(5)])
    assert len({r.message_id for r in results}) == 1 and {r.turn for r in results} == {1}
    conv = await engine.get("c")
    assert conv is not None and conv.turns == 1


async def test_reject_policy_answers_busy_and_accepts_nothing(store: Store) -> None:
    agent = Agent("slow", double_texting="reject")
    gate = asyncio.Event()

    @agent.handler
    async def handle(turn: Turn) -> None:
        await gate.wait()
        turn.reply("done")

    async with Engine(agent, store, FAST) as engine:
        first = asyncio.create_task(engine.send("c", "one"))
        await asyncio.sleep(0.05)
        with pytest.raises(ConversationBusy):
            await engine.send("c", "two")
        gate.set()
        assert (await first).turn == 1
        conv = await engine.get("c")
        assert conv is not None and conv.turns == 1 and [u["text"] for u in conv.history] == ["one", "done"]


async def test_interrupt_cancels_the_running_turn_without_a_trace(store: Store) -> None:
    agent = Agent("slow", double_texting="interrupt")
    started = asyncio.Event()

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.state["last"] = turn.text
        if turn.text == "long":
            started.set()
            await asyncio.sleep(30)
        turn.reply("answered " + turn.text)

    async with Engine(agent, store, FAST) as engine:
        long = asyncio.create_task(engine.send("c", "long"))
        await started.wait()
        newer = await engine.send("c", "short")
        with pytest.raises(TurnInterrupted):
            await long
        assert newer.turn == 1 and newer.reply == "answered short"
        conv = await engine.get("c")
        assert conv is not None and conv.turns == 1 and conv.state == {"last": "short"}
        assert [u["text"] for u in conv.history] == ["short", "answered short"]


async def test_handler_error_fails_the_turn_and_commits_nothing(store: Store) -> None:
    agent = Agent("broken")

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.state["poison"] = True
        if turn.text == "boom":
            raise RuntimeError("backend down")
        turn.reply("fine")

    async with Engine(agent, store, FAST) as engine:
        with pytest.raises(TurnFailed, match="backend down"):
            await engine.send("c", "boom")
        assert await engine.get("c") is not None
        ok = await engine.send("c", "next")
        assert ok.turn == 1
        conv = await engine.get("c")
        assert conv is not None and conv.turns == 1 and [u["text"] for u in conv.history] == ["next", "fine"]


async def test_unserializable_state_commits_nothing(store: Store) -> None:
    agent = Agent("bad-state")

    @agent.handler
    async def handle(turn: Turn) -> None:
        turn.state["when"] = object() if turn.text == "bad" else "ok"
        turn.reply("x")

    async with Engine(agent, store, FAST) as engine:
        await engine.send("c", "good")
        with pytest.raises(StateNotSerializable):
            await engine.send("c", "bad")
        conv = await engine.get("c")
        assert conv is not None and conv.turns == 1 and conv.state == {"when": "ok"}


async def test_plain_def_handler_runs_in_a_thread_and_can_emit(store: Store) -> None:
    agent = Agent("sync")
    threads: list[str] = []

    @agent.handler
    def handle(turn: Turn) -> None:
        threads.append(threading.current_thread().name)
        turn.emit("a")
        turn.emit("b")
        time.sleep(0.01)

    async with Engine(agent, store, FAST) as engine:
        tokens: list[str] = []
        result = await engine.send("c", "hi", on_event=lambda e: tokens.append(e["text"]))
        assert tokens == ["a", "b"] and result.reply == "ab"  # no reply(): the tokens are the reply
        assert threads and threads[0] != threading.main_thread().name


async def test_stream_yields_tokens_then_the_reply(engine: Engine) -> None:
    events = [e async for e in engine.stream("c", "hello")]
    assert [e["type"] for e in events] == ["token", "reply"]
    assert events[0]["text"] == "echo: " and events[1]["reply"]["text"] == "hello"
    logged = await engine.store.read_events(engine.conversation_key("c"), after=None, limit=10)
    assert [e.type for e in logged] == ["token", "reply"]


async def test_many_streams_at_once_keep_each_event_log_in_order_with_the_reply_last(store: Store) -> None:
    # Given an agent whose tokens come a few at a time, interleaved across conversations
    agent = Agent("chatty", history_window=4)

    @agent.handler
    async def handle(turn: Turn) -> None:
        for i in range(12):
            turn.emit(f"{turn.turn}.{i} ")
            if i % 3 == 2:
                await asyncio.sleep(0)

    # When 40 conversations take two turns each, all at once, on one engine (one event-log writer)
    async with Engine(agent, store, FAST) as engine:
        async def converse(n: int) -> None:
            for _ in range(2):
                await engine.send(f"c{n}", "go")

        await asyncio.gather(*(converse(n) for n in range(40)))
        # Then every log holds its turns' tokens in emission order, each turn's reply after its own tokens
        expected = [
            *[("token", f"1.{i} ") for i in range(12)], ("reply", None),
            *[("token", f"2.{i} ") for i in range(12)], ("reply", None),
        ]
        for n in range(40):
            logged = await store.read_events(engine.conversation_key(f"c{n}"), after=None, limit=100)
            assert [(e.type, e.data.get("text") if e.type == "token" else None) for e in logged] == expected


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"conversation_id": "has space"}, InvalidConversationId),
        ({"conversation_id": "x" * 129}, InvalidConversationId),
        ({"conversation_id": ""}, InvalidConversationId),
        ({"tenant": "a:b"}, InvalidConversationId),
        ({"text": ""}, InvalidMessage),
        ({"text": 42}, InvalidMessage),
        ({"text": "lone \ud800 surrogate"}, InvalidMessage),
        ({"text": "x" * (64 * 1024 + 1)}, MessageTooLarge),
        ({"metadata": ["not", "an", "object"]}, InvalidMessage),
        ({"metadata": {"bad": object()}}, InvalidMessage),
        ({"idempotency_key": "has space"}, InvalidMessage),
        ({"double_texting": "shout"}, InvalidMessage),
    ],
)
async def test_bad_input_is_refused_and_the_store_is_unchanged(
    engine: Engine, kwargs: dict[str, object], error: type[Exception]
) -> None:
    call: dict[str, object] = {"conversation_id": "c", "text": "hello", **kwargs}
    with pytest.raises(error):
        await engine.send(**call)  # type: ignore[arg-type]
    assert await engine.get("c") is None


async def fleet_once(store: Store, ready: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The fleet registry by instance id, once ``ready`` holds for it (or after 10 s)."""
    deadline = time.monotonic() + 10
    while not ready(fleet := {i["id"]: i for i in await store.instances()}) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return fleet


async def test_engines_register_in_the_fleet_and_leave_it_on_stop(store: Store) -> None:
    settings = dataclasses.replace(FAST, registry_ttl=1.5)  # entries refreshed every 0.5 s
    async with Engine(echo_agent(), store, settings) as first, \
            Engine(echo_agent(version="v2"), store, settings) as second:
        first.address = "10.0.0.1:8000"
        await first.send("c", "hello")
        fleet = await fleet_once(store, lambda f: f.get(first.instance_id, {}).get("stats", {}).get("committed"))
        assert set(fleet) == {first.instance_id, second.instance_id}
        assert fleet[first.instance_id]["address"] == "10.0.0.1:8000"
        assert fleet[first.instance_id]["stats"]["committed"] == 1
        assert fleet[second.instance_id]["version"] == "v2"
    assert await store.instances() == []
