"""``statefleet canary run``: a ``CanaryPlan`` from the options, run against the store's routing weights.

Exit codes: 0 promoted, 1 rolled back, 2 bad options, 3 inconclusive, 4 could not run (the store, the weights
or Prometheus unreachable midway; the weights then stay as the last decision printed set them).
"""

from __future__ import annotations

import asyncio
import getpass
import itertools
import math
import re
import socket
from typing import IO

import click

from ..errors import ConfigError, StatefleetError
from ..store import check_store_url, open_store
from .analysis import CanaryPlan, CanaryResult, Decision, run_canary
from .sources import MetricsSource, PrometheusSource, RegistrySource

#: Exit code when the run could not go on (distinct from the outcomes 0, 1, 3 and bad options 2).
EXIT_FAILED = 4

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``"500ms"`` → 0.5, ``"60s"`` / ``"60"`` → 60.0, ``"2m"`` → 120.0, ``"1h"`` → 3600.0 (seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write it like 500ms, 60s, 2m or a number of seconds")
    return float(match.group(1)) * _SCALE[match.group(2)]


def _interval(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is no time at all; an interval needs a positive duration, e.g. 60s")
    return seconds


def _latency_floor(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _steps(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    parts = [p.strip().rstrip("%") for p in value.split(",")]
    if not all(p.isdigit() for p in parts):
        raise click.BadParameter(f"{value!r} is not a list of whole percents; write it like 5,10,25,50,100")
    steps = tuple(int(p) for p in parts)
    bad = [s for s in steps if not 1 <= s <= 100]
    if bad:
        raise click.BadParameter(f"step {bad[0]} is outside 1..100 (percent of new conversations)")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise click.BadParameter(f"{value!r} does not strictly increase; write it like 5,10,25,50,100")
    return steps


def _fraction(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    text = value.strip()
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a rate; write it like 1% or 0.01") from None
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        raise click.BadParameter(f"{value!r} is not a rate from 0 to below 100%")
    return fraction


def _store(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_store_url(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _actor(command: str = "run") -> str:
    """Who changes the weights, for the audit log: the command, the user and the host."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # a container user without a passwd entry
        user = "unknown"
    return f"statefleet canary {command} ({user}@{socket.gethostname()})"


@click.command("run")
@click.option("--baseline", required=True, help="The version serving today (compared against).")
@click.option("--candidate", required=True, help="The version being released.")
@click.option("--steps", default="5,10,25,50,100", show_default=True, callback=_steps,
              help="The candidate's percent of new conversations at each step.")
@click.option("--interval", default="60s", show_default=True, callback=_interval,
              help="Time between checks: 60s, 500ms, 2m or seconds.")
@click.option("--max-error-ratio", type=click.FloatRange(min=1.0), default=1.5, show_default=True,
              help="Roll back when the candidate's error rate exceeds this × the baseline's (or the floor).")
@click.option("--max-p99-ratio", type=click.FloatRange(min=1.0), default=1.3, show_default=True,
              help="Roll back when the candidate's p99 turn latency exceeds this × the baseline's (or the floor).")
@click.option("--max-ttft-ratio", type=click.FloatRange(min=1.0), default=1.3, show_default=True,
              help="Same for the p99 time to first token (checked when both versions stream).")
@click.option("--min-turns", type=click.IntRange(min=1), default=200, show_default=True,
              help="Candidate turns a step needs before it is judged.")
@click.option("--error-floor", default="1%", show_default=True, callback=_fraction,
              help="A baseline error rate below this counts as this (1% or 0.01).")
@click.option("--latency-floor", default="50ms", show_default=True, callback=_latency_floor,
              help="A baseline p99 (turn or TTFT) below this counts as this.")
@click.option("--max-waits", type=click.IntRange(min=0), default=3, show_default=True,
              help="Intervals a step may wait for --min-turns before the run ends inconclusive.")
@click.option("--dry-run", is_flag=True, help="Print the decisions without changing the weights.")
@click.option("--prometheus", "prometheus_url", default=None, metavar="URL",
              help="Read the counts from this Prometheus server instead of the fleet registry.")
@click.option("--decisions-file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Append each decision to this file as a JSON line.")
@click.option("--store", "store_url", envvar="STATEFLEET_STORE", default="sqlite:///.statefleet/state.db",
              show_default=True, callback=_store, help="State store URL (the fleet's, where the weights are).")
@click.pass_context
def run(ctx: click.Context, baseline: str, candidate: str, steps: tuple[int, ...], interval: float,
        max_error_ratio: float, max_p99_ratio: float, max_ttft_ratio: float, min_turns: int, error_floor: float,
        latency_floor: float, max_waits: int, dry_run: bool, prometheus_url: str | None, decisions_file: str | None,
        store_url: str) -> None:
    """Step --candidate's share of new conversations up while it is as healthy as --baseline's; else roll back.

    Exit code: 0 promoted, 1 rolled back, 3 inconclusive (2 bad options, 4 could not run).
    """
    try:
        plan = CanaryPlan(baseline, candidate, steps, interval, max_error_ratio=max_error_ratio,
                          max_p99_ratio=max_p99_ratio, max_ttft_ratio=max_ttft_ratio, min_turns=min_turns,
                          error_floor=error_floor, latency_floor=latency_floor, max_waits=max_waits, dry_run=dry_run)
    except ConfigError as exc:
        raise click.UsageError(str(exc), ctx) from None
    decisions: IO[str] | None = None
    if decisions_file is not None:
        try:
            decisions = open(decisions_file, "a", encoding="utf-8")  # closed in the finally below
        except OSError as exc:
            raise click.BadParameter(f"cannot append to {decisions_file!r}: {exc.strerror or exc}",
                                     param_hint="--decisions-file") from None
    try:
        code = asyncio.run(_run(plan, store_url, prometheus_url, decisions))
    except ConfigError as exc:
        click.echo(f"statefleet canary: {exc}", err=True)
        code = 2
    except StatefleetError as exc:
        click.echo(f"statefleet canary: {exc}", err=True)
        code = EXIT_FAILED
    except KeyboardInterrupt:
        click.echo("statefleet canary: interrupted; the weights stay as the last decision set them", err=True)
        code = 130
    finally:
        if decisions is not None:
            decisions.close()
    ctx.exit(code)


async def _run(plan: CanaryPlan, store_url: str, prometheus_url: str | None, decisions: IO[str] | None) -> int:
    from .control import StoreWeightsControl

    def report(decision: Decision) -> None:
        click.echo(str(decision))
        if decisions is not None:
            decisions.write(decision.to_json() + "\n")
            decisions.flush()

    store = await open_store(store_url)
    try:
        source: MetricsSource = PrometheusSource(prometheus_url) if prometheus_url else RegistrySource(store)
        control = StoreWeightsControl(store, actor=_actor())
        result = await run_canary(plan, source, control, on_decision=report)
    finally:
        await store.close()
    click.echo(_summary(plan, result))
    return result.exit_code


def _summary(plan: CanaryPlan, result: CanaryResult) -> str:
    last = result.decisions[-1]
    weights = "unchanged (dry run)" if plan.dry_run else f"{plan.candidate} at {last.weight_after}%"
    return (f"canary {plan.candidate}: {result.outcome.replace('_', ' ')} after {len(result.decisions)} decisions; "
            f"weights {weights}; exit code {result.exit_code}")
