"""``statefleet loadtest``: options → :class:`Workload` and :class:`RunOptions` → run → JSON, HTML, exit code.

Exit codes: 0 done (and every ``--slo`` objective met), 1 an objective missed, 2 bad options.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import click

from ..errors import ConfigError


@click.command("loadtest")
@click.argument("targets", nargs=-1, required=True)
@click.option("--conversations", type=click.IntRange(1), default=None,
              help="Concurrent users (closed model); default 10 unless --rate is given.")
@click.option("--rate", default=None, help="Open model: new conversations per second (Poisson arrivals).")
@click.option("--turns", type=click.IntRange(1), default=10, show_default=True, help="Turns per conversation.")
@click.option("--think", default="0s", show_default=True,
              help="Think time between a user's turns: 2s (exponential, mean 2 s) or fixed:2s.")
@click.option("--profile", default=None,
              help="Level over time, e.g. ramp:0..2000/60s,hold:120s,spike:x3/10s or diurnal:10..100/60s.")
@click.option("--duration", default="60s", show_default=True, help="How long to generate load.")
@click.option("--stream-ratio", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of turns sent as SSE streams (the rest as JSON).")
@click.option("--verify-every", type=click.IntRange(0), default=1, show_default=True,
              help="Read the conversation back and check its history every N turns (0: only at the end).")
@click.option("--retry-budget", default="30s", show_default=True,
              help="How long one message is retried (same Idempotency-Key) before the turn counts as failed.")
@click.option("--timeout", "request_timeout", default="30s", show_default=True, help="Per-request timeout.")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Load generator processes (when one saturates a core).")
@click.option("--chaos", multiple=True,
              help="Inject failures: kill|sigterm|pause|redis-restart:PID|port=N|CMD[@every=15s,restart=1s,...].")
@click.option("--slo", default=None, help="Objectives for the exit code, e.g. p99<200ms,errors<0.1%,continuity=100%.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the machine-readable result here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the self-contained HTML report here.")
@click.option("--tenant", default=None, help="X-Tenant header of every request.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the random choices.")
@click.option("--quiet", is_flag=True, help="No progress line.")
def loadtest(targets: tuple[str, ...], conversations: int | None, rate: str | None, turns: int, think: str,
             profile: str | None, duration: str, stream_ratio: float, verify_every: int, retry_budget: str,
             request_timeout: str, processes: int, chaos: tuple[str, ...], slo: str | None, json_path: Path | None,
             report_path: Path | None, tenant: str | None, seed: int, quiet: bool) -> None:
    """Conversation-aware load against the statefleet instances at TARGETS (base URLs), with failure injection.

    Each simulated user holds conversations and checks that the server's view of each matches what it sent
    (no lost, duplicated, reordered or stale turns); messages are retried with the same Idempotency-Key.
    """
    from ..observability.logs import configure_logging

    configure_logging("warning")
    try:
        code = run_cli(targets, conversations, rate, turns, think, profile, duration, stream_ratio, verify_every,
                       retry_budget, request_timeout, processes, chaos, slo, json_path, report_path, tenant, seed,
                       quiet)
    except ConfigError as exc:
        click.echo(f"statefleet loadtest: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)


def run_cli(targets: tuple[str, ...], conversations: int | None, rate: str | None, turns: int, think: str,
            profile: str | None, duration: str, stream_ratio: float, verify_every: int, retry_budget: str,
            request_timeout: str, processes: int, chaos: tuple[str, ...], slo: str | None,
            json_path: Path | None, report_path: Path | None, tenant: str | None, seed: int, quiet: bool) -> int:
    from .chaos import ChaosSpec
    from .slo import evaluate, parse_slo
    from .units import parse_duration, parse_number
    from .workload import Profile, Think, Workload

    if rate is not None and conversations is not None:
        raise ConfigError("give --conversations (closed model) or --rate (open model), not both")
    open_loop = rate is not None
    base = parse_number(rate, "--rate") if rate is not None else float(conversations or 10)
    workload = Workload(
        targets=tuple(t.rstrip("/") for t in targets),
        duration=parse_duration(duration, "--duration"),
        turns=turns,
        think=Think.parse(think),
        open_loop=open_loop,
        profile=Profile.parse(profile, base) if profile else Profile.constant(base),
        stream_ratio=stream_ratio,
        verify_every=verify_every,
        retry_budget=parse_duration(retry_budget, "--retry-budget"),
        request_timeout=parse_duration(request_timeout, "--timeout"),
        processes=processes,
        seed=seed,
        run_id=f"lt{uuid.uuid4().hex[:8]}",
        tenant=tenant,
    )
    specs = tuple(ChaosSpec.parse(text) for text in chaos)
    objectives = parse_slo(slo) if slo else []
    if workload.profile.seconds > workload.duration + 1e-9:
        click.echo(f"note: --profile lasts {workload.profile.seconds:g} s, longer than --duration "
                   f"{workload.duration:g} s; the run stops at --duration", err=True)

    # Output of processes the chaos restarts, beside nothing of the user's.
    import tempfile

    from .report import write_report
    from .result import build_result, headline
    from .runner import LoadTest, RunOptions

    logdir = Path(tempfile.mkdtemp(prefix=f"statefleet-{workload.run_id}-")) if specs else None
    click.echo(f"statefleet loadtest: {len(workload.targets)} target(s), {workload.duration:g} s, "
               f"{'open' if open_loop else 'closed'} model at level {base:g}, {turns} turns per conversation"
               + (f", chaos: {'; '.join(chaos)}" if chaos else ""), err=True)
    started = time.monotonic()
    outcome = LoadTest(workload, RunOptions(chaos=specs, quiet=quiet, logdir=logdir)).run()
    result = build_result(workload, outcome, list(chaos))
    if objectives:
        result["slo"] = {"spec": slo, **evaluate(objectives, result)}
    result["wall_s"] = round(time.monotonic() - started, 3)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    if report_path is not None:
        write_report(result, report_path)
    click.echo(headline(result))
    if json_path is not None:
        click.echo(f"result: {json_path}")
    if report_path is not None:
        click.echo(f"report: {report_path}")
    if objectives:
        for check in result["slo"]["checks"]:
            click.echo(f"SLO {check['objective']}: {'met' if check['passed'] else 'MISSED'} "
                       f"(actual {check['actual']:.4g})")
        return 0 if result["slo"]["passed"] else 1
    return 0
