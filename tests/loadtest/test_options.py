"""Every option is validated, with a precise message and exit code 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from statefleet.cli import main
from statefleet.errors import ConfigError
from statefleet.loadtest.chaos import ChaosSpec
from statefleet.loadtest.slo import evaluate, parse_slo
from statefleet.loadtest.workload import Profile, Think


def test_profile_phases_follow_one_another() -> None:
    profile = Profile.parse("ramp:0..2000/60s,hold:120s,spike:x3/10s", base=100)
    assert profile.level(0) == 0
    assert profile.level(30) == 1000
    assert profile.level(100) == 2000
    assert profile.level(185) == 6000  # the spike
    assert profile.level(500) == 2000  # back after it
    assert profile.seconds == 190


def test_diurnal_curve_goes_low_high_low() -> None:
    profile = Profile.parse("diurnal:10..100/20sx2", base=1)
    assert [round(profile.level(t)) for t in (0, 10, 20, 30)] == [10, 100, 10, 100]


def test_think_time_is_exponential_or_fixed() -> None:
    import random

    assert Think.parse("fixed:2s").sample(random.Random(1)) == 2.0
    rng = random.Random(1)
    samples = [Think.parse("2s").sample(rng) for _ in range(2000)]
    assert 1.8 < sum(samples) / len(samples) < 2.2


@pytest.mark.parametrize(("args", "message"), [
    (["--profile", "ramp:0..x/60s"], "ramp end in --profile phase 'ramp:0..x/60s'"),
    (["--profile", "wobble:3"], "--profile phase 'wobble:3' is not one of"),
    (["--profile", "hold:60s,,hold:1s"], "empty phase"),
    (["--slo", "p99<fast"], "--slo p99 'fast' is not a duration"),
    (["--slo", "latency<200ms"], "unknown metric 'latency'"),
    (["--slo", "errors<0.1"], "errors is a percentage"),
    (["--chaos", "explode:1234"], "ACTION one of kill, sigterm, pause, redis-restart"),
    (["--chaos", "kill:port=99999"], "port=99999 is not a TCP port"),
    (["--chaos", "kill:123@every=soon"], "every 'soon' is not a duration"),
    (["--chaos", "kill:123@often=1s"], "option 'often=1s' is not one of"),
    (["--duration", "forever"], "--duration 'forever' is not a duration"),
    (["--rate", "5", "--conversations", "3"], "not both"),
    (["--think", "a while"], "--think 'a while' is not a duration"),
])
def test_bad_options_exit_2_with_a_precise_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["loadtest", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_target_must_be_a_base_url() -> None:
    result = CliRunner().invoke(main, ["loadtest", "127.0.0.1:8000"])
    assert result.exit_code == 2
    assert "is not a base URL like http://127.0.0.1:8000" in result.output


def test_chaos_spec_options() -> None:
    spec = ChaosSpec.parse("pause:statefleet serve@every=10s,after=3s,for=1s,times=2")
    assert (spec.action, spec.target_kind, spec.target) == ("pause", "cmd", "statefleet serve")
    assert spec.schedule(60) == [3, 13]
    assert ChaosSpec.parse("redis-restart:port=6379").restart == 0.0
    with pytest.raises(ConfigError):
        ChaosSpec.parse("kill:@every=1s")


def test_slo_evaluates_against_a_result() -> None:
    result = {"totals": {"turns": 1000, "failed_turns": 0, "retries": 3, "lost": 0, "duplicated": 0,
                         "reordered": 0, "stale": 0, "turns_per_s": 100.0},
              "latency_ms": {"p99": 150.0}, "ttft_ms": {}, "timeline": []}
    verdict = evaluate(parse_slo("p99<200ms,errors<0.1%,continuity=100%,throughput>=50"), result)
    assert verdict["passed"]
    assert not evaluate(parse_slo("p99<100ms"), result)["passed"]
