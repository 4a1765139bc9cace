"""The fault suite catches a deliberately broken build: engines whose commit skips the fencing check.

Every engine process is started with ``--break-fencing`` (worker.py patches, in its own process, the Redis
store's commit script so a stale lease owner's commit is applied). The suite's own machinery then runs the
frozen-owner story: the owner is SIGSTOPped past its lease in a slow turn, another engine takes the message
over, and the owner, thawed while the takeover still runs, commits. The checker must say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from statefleet.testing import LocalRedisServer

from .fleet import Fleet
from .schedule import FROZEN_OWNER
from .suite import Explorer, Report


@pytest.mark.timeout(180)
async def test_the_suite_reports_a_violation_when_fencing_is_broken(tmp_path: Path) -> None:
    # Given a fleet whose commits skip the fencing token check
    with LocalRedisServer(persistent=True) as server:
        fleet = Fleet(server.url, tmp_path / "handler.log", redis=server, break_fencing=True)
        await fleet.start()
        try:
            # When the frozen-owner schedule runs (a few times: each run is a race the broken build may win)
            report = await Explorer(fleet, Report("redis, fencing broken"), "b").run_all([FROZEN_OWNER] * 3)
        finally:
            await fleet.close()
    print(report.summary())
    # Then the checker reports the stale owner's commit
    assert report.failures, report.summary()
    assert "overlap" in report.violations_by_rule(), report.summary()


@pytest.mark.timeout(180)
async def test_the_same_story_on_the_real_build_has_no_violation(redis_fleet: Fleet) -> None:
    # Given the real build, When the same story runs, Then its stale owner's commit is refused
    report = await Explorer(redis_fleet, Report("redis"), "g").run_all([FROZEN_OWNER])
    print(report.summary())
    assert redis_fleet.faults.counts.get("freeze") == 1, report.summary()  # the story did happen
    assert not report.failures, report.summary()
