"""The continuity checker: silent on a correct server, and it catches a broken one."""

from __future__ import annotations

import time

import aiohttp
import pytest

from statefleet.loadtest.client import MAX_EVENT_BYTES, Client, sse_event
from statefleet.loadtest.continuity import ContinuityChecker
from statefleet.loadtest.runner import LoadTest, RunOptions
from statefleet.loadtest.stats import Recorder
from statefleet.loadtest.workload import Profile, Workload

from . import fake_server


def _history(*turns: int, window: int = 100) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for t in turns:
        out += [{"role": "user", "text": f"m{t}", "turn": t}, {"role": "agent", "text": f"r{t}", "turn": t}]
    return out[-window:]


def _checker(n: int) -> ContinuityChecker:
    checker = ContinuityChecker("c")
    for t in range(1, n + 1):
        assert checker.on_reply(f"m{t}", t, f"r{t}") == []
    return checker


def test_a_correct_view_passes() -> None:
    checker = _checker(4)
    assert checker.on_view({"turns": 4, "history": _history(1, 2, 3, 4, window=5)}) == []
    assert checker.on_view({"turns": 4, "history": _history(1, 2, 3, 4)}, final=True) == []


def test_each_kind_is_caught() -> None:
    assert {v.kind for v in _checker(3).on_view({"turns": 3, "history": _history(1, 3)})} == {"lost"}
    assert {v.kind for v in _checker(3).on_view({"turns": 2, "history": _history(1, 2)})} == {"stale"}
    assert {v.kind for v in _checker(3).on_view({"turns": 2, "history": _history(1, 2)}, final=True)} == {"lost"}
    swapped = _history(1, 2, 3)
    swapped[2:4], swapped[4:6] = swapped[4:6], swapped[2:4]
    assert "reordered" in {v.kind for v in _checker(3).on_view({"turns": 3, "history": swapped})}
    checker = _checker(2)
    assert [v.kind for v in checker.on_reply("m3", 4, "r4")] == ["duplicated"]
    assert [v.kind for v in _checker(3).on_reply("m4", 2, "x")] == ["duplicated"]
    twice = [*_history(1, 2), {"role": "user", "text": "m2", "turn": 3}, {"role": "agent", "text": "r", "turn": 3}]
    checker = _checker(2)
    checker.on_reply("m3", 3, "r")
    assert "duplicated" in {v.kind for v in checker.on_view({"turns": 3, "history": twice})}


def test_a_message_given_up_on_may_commit_later() -> None:
    checker = _checker(2)
    checker.uncertain = 1
    assert checker.on_view({"turns": 3, "history": _history(1, 2)}, final=True) == []


def test_sse_events_are_parsed_per_the_spec() -> None:
    assert sse_event(b'event: token\ndata: {"text":"a"}') == ("token", b'{"text":"a"}')
    assert sse_event(b"data:one\ndata: two\nid: 7") == ("message", b"one\ntwo")
    assert sse_event(b": a comment") == ("message", b"")


async def test_an_event_that_never_ends_fails_the_turn_without_retries() -> None:
    # Given a server streaming 1 MiB of one unfinished event, the tester stops at its bound: a bad response
    # (not a cut stream to retry), with nothing held beyond the bound.
    runner, url, _fleet = await fake_server.start("endless_event")
    try:
        recorder = Recorder(time.monotonic())
        async with aiohttp.ClientSession() as session:
            client = Client(session, (url,), recorder, retry_budget=5.0)
            assert await client.send("c1", "hello", "k1", stream=True, target=0) is None
    finally:
        await runner.cleanup()
    assert MAX_EVENT_BYTES < 1024 * 1024
    assert dict(recorder.errors) == {"bad_response": 1} and recorder.retries == 0


async def _run_against(mode: str) -> dict[str, int]:
    runner, url, _fleet = await fake_server.start(mode)
    try:
        workload = Workload(targets=(url,), duration=1.5, turns=10, profile=Profile.constant(8), stream_ratio=0.5)
        outcome = await LoadTest(workload, RunOptions(quiet=True, grace=5)).run_async()
    finally:
        await runner.cleanup()
    rec = outcome.recorder
    assert rec.turns >= 50
    return {kind: rec.continuity.get(kind, 0) for kind in ("lost", "duplicated", "reordered", "stale")}


async def test_a_correct_server_has_no_violations() -> None:
    assert await _run_against("ok") == {"lost": 0, "duplicated": 0, "reordered": 0, "stale": 0}


@pytest.mark.parametrize(("mode", "kind"), [("drop_history", "lost"), ("duplicate", "duplicated"),
                                            ("stale", "stale"), ("reorder", "reordered")])
async def test_the_checker_catches_a_broken_server(mode: str, kind: str) -> None:
    # Given a server that is wrong in one way, when users talk to it, then the checker reports that way.
    counts = await _run_against(mode)
    assert counts[kind] > 0, counts
