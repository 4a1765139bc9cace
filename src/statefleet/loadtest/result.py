"""The machine-readable result of a run (``--json``), built from the merged measurements."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from .continuity import KINDS
from .runner import Outcome
from .stats import FINE, recovery_times
from .workload import Workload

#: Above this CPU use the tester itself limits the load: its figures are a floor, not the server's.
SATURATED_PERCENT = 90.0


def build_result(workload: Workload, outcome: Outcome, chaos_texts: list[str]) -> dict[str, Any]:
    rec = outcome.recorder
    measured = min(outcome.duration, workload.duration)
    events = [asdict(e) for e in outcome.events]
    recoveries = recovery_times(rec, [e["t"] for e in events if e["ok"]], outcome.duration)
    for event, recovery in zip((e for e in events if e["ok"]), recoveries, strict=True):
        event["recovery_s"] = None if recovery is None else round(recovery, 3)
    # The series covers the run itself; turns finishing in the grace period after it count in the totals.
    last = min(max(rec.seconds, default=-1), max(0, int(workload.duration + 0.999) - 1))
    series: dict[str, list[float]] = {"t": [], "turns": [], "errors": [], "retries": [], "p50_ms": [], "p99_ms": [],
                                      "max_ms": []}
    for second in range(last + 1):
        bucket = rec.seconds.get(second)
        series["t"].append(second)
        series["turns"].append(bucket.turns if bucket else 0)
        series["errors"].append(bucket.errors if bucket else 0)
        series["retries"].append(bucket.retries if bucket else 0)
        series["p50_ms"].append(round(bucket.latency.percentile(50) * 1000, 3) if bucket else 0)
        series["p99_ms"].append(round(bucket.latency.percentile(99) * 1000, 3) if bucket else 0)
        per = int(1 / FINE)
        fine = [rec.fine[k].max_latency for k in range(second * per, (second + 1) * per) if k in rec.fine]
        series["max_ms"].append(round(max(fine, default=0.0) * 1000, 3))
    cpu = outcome.cpu_percent_per_process
    totals: dict[str, Any] = {
        "turns": rec.turns,
        "turns_per_s": round(rec.turns / measured, 1) if measured > 0 else 0.0,
        "json_turns": rec.json_turns,
        "stream_turns": rec.stream_turns,
        "failed_turns": rec.failed_turns,
        "retries": rec.retries,
        "errors": sum(rec.errors.values()),
        "conversations_started": rec.conversations_started,
        "conversations_completed": rec.conversations_completed,
    }
    for kind in KINDS:
        totals[kind] = rec.continuity.get(kind, 0)
    return {
        "tool": "statefleet loadtest",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - outcome.duration)),
        "config": {
            "targets": list(workload.targets),
            "duration_s": workload.duration,
            "model": "open" if workload.open_loop else "closed",
            "level": workload.profile.base,
            "profile": [asdict(p) for p in workload.profile.phases],
            "turns_per_conversation": workload.turns,
            "think": {"mean_s": workload.think.mean, "fixed": workload.think.fixed},
            "stream_ratio": workload.stream_ratio,
            "verify_every": workload.verify_every,
            "processes": outcome.processes,
            "chaos": chaos_texts,
        },
        "totals": totals,
        "latency_ms": rec.latency.summary_ms(),
        "ttft_ms": rec.ttft.summary_ms(),
        "errors_by_kind": dict(sorted(rec.errors.items(), key=lambda kv: -kv[1])),
        "continuity": {
            "ok": not any(rec.continuity.values()),
            **{kind: rec.continuity.get(kind, 0) for kind in KINDS},
            "examples": rec.violation_examples,
        },
        "timeline": events,
        "series": series,
        "distribution_ms": [[round(p, 4), round(v * 1000, 3)] for p, v in rec.latency.distribution(120)],
        "tester": {
            "processes": outcome.processes,
            "cpu_percent": [round(c, 1) for c in cpu],
            "saturated": any(c >= SATURATED_PERCENT for c in cpu),
            "note": ("the tester used ≥ 90 % of a core: add --processes, its figures are a floor"
                     if any(c >= SATURATED_PERCENT for c in cpu) else "the tester had CPU to spare"),
        },
    }


def continuity_percent(result: dict[str, Any]) -> float:
    """Share of turns with no continuity violation (lost, duplicated, reordered or stale), in %."""
    c = result["continuity"]
    bad = int(c["lost"] + c["duplicated"] + c["reordered"] + c["stale"])
    return 100 * (1 - bad / max(1, int(result["totals"]["turns"])))


def headline(result: dict[str, Any]) -> str:
    """One paragraph a person reads at the end of a run."""
    t = result["totals"]
    lat = result["latency_ms"]
    lines = [
        f"turns {t['turns']:,} ({t['turns_per_s']:,.0f}/s), failed {t['failed_turns']}, retries {t['retries']}, "
        f"errors {t['errors']}",
        f"latency p50 {lat['p50']:.1f} ms  p90 {lat['p90']:.1f} ms  p99 {lat['p99']:.1f} ms  "
        f"p99.9 {lat['p99.9']:.1f} ms  max {lat['max']:.1f} ms",
    ]
    if result["ttft_ms"]["count"]:
        ttft = result["ttft_ms"]
        lines.append(f"time to first token p50 {ttft['p50']:.1f} ms  p99 {ttft['p99']:.1f} ms")
    c = result["continuity"]
    lines.append(f"continuity {continuity_percent(result):.2f}%: lost {c['lost']}, duplicated {c['duplicated']}, "
                 f"reordered {c['reordered']}, stale {c['stale']}")
    for event in result["timeline"]:
        rec = event.get("recovery_s")
        lines.append(f"  t={event['t']:.1f}s {event['action']} pid {event['pid']}: "
                     + ("recovered in " + f"{rec:.1f} s" if rec is not None else "not recovered")
                     if event["ok"] else f"  t={event['t']:.1f}s {event['action']}: {event['detail']}")
    lines.append(f"tester cpu {', '.join(f'{c:.0f}%' for c in result['tester']['cpu_percent'])}: "
                 f"{result['tester']['note']}")
    return "\n".join(lines)
