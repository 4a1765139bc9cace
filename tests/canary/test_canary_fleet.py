"""``statefleet canary run`` on a real fleet: a v1 and a v2 ``statefleet serve`` process on one real redis-server,
new conversations pouring in on both, the analysis reading each version's turns from the fleet registry.

A v2 that fails 20% of its turns is rolled back to 0 at the first check (within two intervals); a healthy v2
is promoted step by step to 100. Either way the decisions file, the command's output and the weights' audit
log tell what was decided and why, and no conversation is ever answered by two versions.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statefleet.testing import ServeProcess

from ._fleet import Finished, NewConversationLoad, release_status, run_statefleet, statefleet

AGENT = f"{Path(__file__).with_name('agents.py')}:agent"
#: Short, so a run takes seconds; not much shorter: the registry's counters are up to 2 s old when read.
INTERVAL = 3.0
STEPS = (20, 50, 100)
MIN_TURNS = 20
#: Every turn sleeps this long on both versions, so their latencies are alike however loaded the machine is
#: (the analysis compares p99s too, and a healthy v2 must not fail on the noise of a 2-core box).
TURN_DELAY = "0.1"
#: Seconds within which every instance applies a change of the weights (fleet_view_interval), plus margin.
WEIGHTS_SEEN = 1.5
RUN_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ canary v2 step \d/3 (start|hold|promote|promoted|rollback) "
                      r"\d+% → \d+%: .+$")


@pytest.fixture
def fleet(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[dict[str, ServeProcess]]:
    """One v1 and one v2 instance; v2 fails every ``request.param``-th turn (0: never). Weights v1=100."""
    fail_every = str(getattr(request, "param", 0))
    processes = {
        "v1": ServeProcess(AGENT, redis_url, log=tmp_path / "v1.log",
                           env={"CANARY_VERSION": "v1", "CANARY_DELAY": TURN_DELAY}),
        "v2": ServeProcess(AGENT, redis_url, log=tmp_path / "v2.log",
                           env={"CANARY_VERSION": "v2", "CANARY_DELAY": TURN_DELAY, "CANARY_FAIL_EVERY": fail_every}),
    }
    try:
        for process in processes.values():
            process.wait_ready()
        before = statefleet("canary", "set", "v1=100", "--reason", "v1 serves everything before the canary",
                            "--store", redis_url)
        assert before.returncode == 0, before.stderr
        yield processes
    finally:
        for process in processes.values():
            process.stop(signal.SIGKILL)


async def canary_run_under_load(fleet: dict[str, ServeProcess], redis_url: str, decisions_file: Path,
                                prefix: str, timeout: float) -> tuple[Finished, NewConversationLoad, float]:
    """``canary run`` v1 → v2 while new conversations keep coming; the run's result, the load (stopped) and the
    loop time at which the run ended."""
    await asyncio.sleep(WEIGHTS_SEEN)  # every instance pins new conversations by v1=100
    load = NewConversationLoad([process.url for process in fleet.values()], prefix)
    load.start()
    try:
        await load.wait_for_answers(50)
        finished = await run_statefleet(
            "canary", "run", "--baseline", "v1", "--candidate", "v2", "--steps", ",".join(map(str, STEPS)),
            "--interval", f"{INTERVAL:g}s", "--min-turns", str(MIN_TURNS), "--store", redis_url,
            "--decisions-file", str(decisions_file), timeout=timeout)
        ended = asyncio.get_running_loop().time()
        # The load goes on a little, so that conversations start under the weights the run left behind.
        await asyncio.sleep(WEIGHTS_SEEN + 1.5)
    finally:
        await load.stop()
    return finished, load, ended


def read_decisions(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, "no decision was recorded"
    decisions = [json.loads(line) for line in lines]
    for decision in decisions:  # each line stands alone: when, what, why, and on which numbers
        assert isinstance(decision["time"], str) and isinstance(decision["at"], float), decision
        assert decision["reason"] and isinstance(decision["evidence"], dict) and not decision["dry_run"], decision
    return decisions


def assert_each_conversation_answered_by_one_version(load: NewConversationLoad) -> None:
    assert not load.unexpected, load.unexpected[:5]
    for conversation, answers in load.conversations.items():
        versions = {answer.ran_by for answer in answers} | {a.pinned for a in answers if a.pinned is not None}
        assert len(versions) <= 1, (conversation, answers)


def versions_of_conversations_started_after(load: NewConversationLoad, moment: float) -> set[str]:
    return {answers[0].ran_by for answers in load.conversations.values() if answers and answers[0].sent_at > moment}


def log_of_the_run(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The weights' audit log entries the canary run made, oldest first."""
    return [entry for entry in reversed(status["log"]) if str(entry["actor"]).startswith("statefleet canary run (")]


@pytest.mark.slow
@pytest.mark.parametrize("fleet", [pytest.param(5, id="v2-fails-every-5th-turn")], indirect=True)
async def test_a_v2_failing_a_fifth_of_its_turns_is_rolled_back_to_0_at_the_first_check(
        fleet: dict[str, ServeProcess], redis_url: str, tmp_path: Path) -> None:
    # Given v1 at 100% and a v2 whose every 5th turn fails, new conversations arriving on both instances
    decisions_file = tmp_path / "decisions.jsonl"

    # When the canary runs v1 → v2 in steps 20, 50, 100
    finished, load, ended = await canary_run_under_load(fleet, redis_url, decisions_file, "bad", timeout=60)

    # Then it rolls back and exits 1...
    assert finished.returncode == 1, (finished.stdout, finished.stderr)
    decisions = read_decisions(decisions_file)
    verdicts = [decision["verdict"] for decision in decisions]
    # ...within two intervals of its first step: the first check catches it (a hold, at most, before it)
    assert verdicts in (["start", "rollback"], ["start", "hold", "rollback"]), decisions
    start, rollback = decisions[0], decisions[-1]
    assert (start["weight_before"], start["weight_after"]) == (0, 20)
    assert (rollback["step"], rollback["weight_before"], rollback["weight_after"]) == (1, 20, 0)
    # ...on the evidence of v2's error rate, about 20% against v1's none
    v1, v2 = rollback["evidence"]["v1"], rollback["evidence"]["v2"]
    assert v2["turns"] >= MIN_TURNS and v2["error_rate"] == v2["errors"] / v2["turns"], rollback
    # (every 5th turn the v2 process runs fails; the counters are read between commits, which finish out of order)
    assert abs(v2["errors"] - v2["turns"] / 5) <= 2, rollback
    assert v1["turns"] > 0 and v1["errors"] == 0, rollback
    assert "candidate error rate" in rollback["reason"]
    assert rollback["time"].endswith("Z") and rollback["baseline"] == "v1" and rollback["candidate"] == "v2"
    # And the command printed each decision on a readable line, then its outcome
    lines = finished.stdout.splitlines()
    assert len(lines) == len(decisions) + 1, finished.stdout
    assert all(RUN_LINE.match(line) for line in lines[:-1]), finished.stdout
    assert "rollback 20% → 0%: candidate error rate" in lines[-2]
    assert re.search(r"v2 \d+ turns, \d+ errors \(\d+\.\d%\)", lines[-2]), lines[-2]
    assert lines[-1] == f"canary v2: rolled back after {len(decisions)} decisions; weights v2 at 0%; exit code 1"
    # And the weights are back at v1=100, v2=0, each change audited with the run as actor and its reason
    status = release_status(redis_url)
    assert status["weights"] == {"v1": 100, "v2": 0}
    changes = log_of_the_run(status)
    assert [(change["old"], change["new"]) for change in changes] == [
        ({"v1": 100}, {"v1": 80, "v2": 20}), ({"v1": 80, "v2": 20}, {"v1": 100, "v2": 0})]
    assert changes[0]["reason"].startswith("canary v2: step 1/3 start: ")
    assert changes[1]["reason"].startswith("canary v2: step 1/3 rollback: candidate error rate ")
    shown = statefleet("canary", "status", "--store", redis_url).stdout
    assert re.search(r"^  #3 \S+ \S+ statefleet canary run \(.+\): .+ -> .+  "
                     r"\(canary v2: step 1/3 rollback: candidate error rate \d+\.\d% > .+\)$", shown, re.M), shown
    # And v2 did take conversations during the run, yet none was ever answered by two versions
    assert_each_conversation_answered_by_one_version(load)
    assert any(answer.ran_by == "v2" and answer.status == 500 for answer in load.answers())
    assert versions_of_conversations_started_after(load, ended + WEIGHTS_SEEN) == {"v1"}


@pytest.mark.slow
async def test_a_healthy_v2_is_promoted_step_by_step_to_100(
        fleet: dict[str, ServeProcess], redis_url: str, tmp_path: Path) -> None:
    # Given v1 at 100% and a v2 as healthy as v1, new conversations arriving on both instances
    decisions_file = tmp_path / "decisions.jsonl"

    # When the canary runs v1 → v2 in steps 20, 50, 100
    finished, load, ended = await canary_run_under_load(fleet, redis_url, decisions_file, "good", timeout=90)

    # Then it promotes v2 through every step and exits 0
    assert finished.returncode == 0, (finished.stdout, finished.stderr)
    decisions = read_decisions(decisions_file)
    judged = [decision for decision in decisions if decision["verdict"] != "hold"]
    assert [(d["verdict"], d["weight_before"], d["weight_after"]) for d in judged] == [
        ("start", 0, 20), ("promote", 20, 50), ("promote", 50, 100), ("promoted", 100, 100)], decisions
    for decision in judged[1:]:
        v2 = decision["evidence"]["v2"]
        assert v2["turns"] >= MIN_TURNS and v2["errors"] == 0 and v2["error_rate"] == 0, decision
        assert decision["reason"].startswith(("healthy", "baseline v1 had no turns")), decision
    # And the command printed each decision on a readable line, then its outcome
    lines = finished.stdout.splitlines()
    assert len(lines) == len(decisions) + 1, finished.stdout
    assert all(RUN_LINE.match(line) for line in lines[:-1]), finished.stdout
    assert lines[-1] == f"canary v2: promoted after {len(decisions)} decisions; weights v2 at 100%; exit code 0"
    # And the weights end at v2=100, each change audited with the run as actor and its reason
    status = release_status(redis_url)
    assert status["weights"] == {"v1": 0, "v2": 100}
    changes = log_of_the_run(status)
    assert [(change["old"], change["new"]) for change in changes] == [
        ({"v1": 100}, {"v1": 80, "v2": 20}), ({"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}),
        ({"v1": 50, "v2": 50}, {"v1": 0, "v2": 100})]
    assert [change["reason"].split(":")[1] for change in changes] == [" step 1/3 start", " step 1/3 promote",
                                                                       " step 2/3 promote"]
    # And no conversation was ever answered by two versions; the new ones now all go to v2
    assert_each_conversation_answered_by_one_version(load)
    assert all(answer.status == 200 for answer in load.answers())
    assert versions_of_conversations_started_after(load, ended + WEIGHTS_SEEN) == {"v2"}
