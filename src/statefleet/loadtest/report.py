"""The HTML report: one self-contained file (inline SVG plots, inline CSS, no script, no network).

Plots: latency over time (p50, p99, max per second) with the injected failures marked, throughput and
errors per second, the latency percentile distribution (HDR, log scale to p99.999), and errors by kind.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter

from .result import continuity_percent

_COLORS = {"kill": "#d62728", "sigterm": "#ff7f0e", "pause": "#9467bd", "redis-restart": "#8c564b"}
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:24px;
color:#1d1d1f;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:22px}.card span{color:#666;font-size:13px}
.ok{color:#137333}.bad{color:#b3261e}table{border-collapse:collapse;margin:8px 0}
td,th{border-bottom:1px solid #eee;padding:4px 10px;text-align:left;font-variant-numeric:tabular-nums}
figure{margin:8px 0}svg{max-width:100%;height:auto}code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
"""


def _svg(fig: Figure, salt: str) -> str:
    buffer = io.StringIO()
    with plt.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _mark_events(ax: Any, timeline: list[dict[str, Any]]) -> None:
    for i, event in enumerate(timeline):
        color = _COLORS.get(event["action"], "#333")
        ax.axvline(event["t"], color=color, linestyle="--", linewidth=1.2,
                   label=event["action"] if event["action"] not in [e["action"] for e in timeline[:i]] else None)
        if event.get("recovery_s"):
            ax.axvspan(event["t"], event["t"] + event["recovery_s"], color=color, alpha=0.08)


def latency_plot(result: dict[str, Any]) -> str:
    s = result["series"]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(s["t"], s["max_ms"], color="#bbbbbb", linewidth=1, label="max")
    ax.plot(s["t"], s["p99_ms"], color="#1f77b4", linewidth=1.6, label="p99")
    ax.plot(s["t"], s["p50_ms"], color="#2ca02c", linewidth=1.6, label="p50")
    _mark_events(ax, result["timeline"])
    if any(v > 0 for v in s["max_ms"]):
        ax.set_yscale("log")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency over time (per second) — dashed lines: injected failures, shaded: until recovered")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    return _svg(fig, "latency")


def throughput_plot(result: dict[str, Any]) -> str:
    s = result["series"]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(s["t"], s["turns"], color="#1f77b4", linewidth=1.6, label="turns/s")
    ax.bar(s["t"], s["errors"], color="#d62728", alpha=0.6, label="errors/s", width=0.9)
    ax.bar(s["t"], s["retries"], color="#ff7f0e", alpha=0.4, label="retried turns/s", width=0.9)
    _mark_events(ax, result["timeline"])
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("per second")
    ax.set_title("Throughput and errors")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    return _svg(fig, "throughput")


def distribution_plot(result: dict[str, Any]) -> str:
    points = result["distribution_ms"]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if points:
        xs = [1 / max(1e-6, 1 - p / 100) for p, _ in points]
        ax.plot(xs, [v for _, v in points], color="#1f77b4", linewidth=1.8)
        ax.set_xscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000, 100000]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        names = {1: "0%", 2: "50%", 10: "90%", 100: "99%", 1000: "99.9%", 10000: "99.99%", 100000: "99.999%"}
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: names.get(round(x), "")))
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency percentile distribution (HDR histogram of every turn)")
    ax.grid(alpha=0.3, which="both")
    return _svg(fig, "distribution")


def errors_plot(result: dict[str, Any]) -> str:
    errors = result["errors_by_kind"]
    fig, ax = plt.subplots(figsize=(10, max(1.6, 0.35 * len(errors) + 0.8)))
    if errors:
        kinds = list(errors)[::-1]
        ax.barh(kinds, [errors[k] for k in kinds], color="#d62728", alpha=0.7)
        for i, kind in enumerate(kinds):
            ax.text(errors[kind], i, f" {errors[kind]:,}", va="center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no errors", ha="center", va="center", transform=ax.transAxes, fontsize=12)
        ax.set_yticks([])
    ax.set_xlabel("requests")
    ax.set_title("Errors by kind (each failed attempt, retried or not)")
    return _svg(fig, "errors")


def _card(label: str, value: str, good: bool | None = None) -> str:
    cls = "" if good is None else (' class="ok"' if good else ' class="bad"')
    return f'<div class="card"><b{cls}>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'


def render(result: dict[str, Any]) -> str:
    """The report as one HTML string."""
    t, lat, ttft, c = result["totals"], result["latency_ms"], result["ttft_ms"], result["continuity"]
    continuity = continuity_percent(result)
    cards = [
        _card("turns per second", f"{t['turns_per_s']:,.0f}"),
        _card("turns", f"{t['turns']:,}"),
        _card("latency p50", f"{lat['p50']:.1f} ms"),
        _card("latency p99", f"{lat['p99']:.1f} ms"),
        _card("latency p99.9", f"{lat['p99.9']:.1f} ms"),
        _card("continuity", f"{continuity:.2f}%", continuity == 100),
        _card("failed turns", f"{t['failed_turns']:,}", t["failed_turns"] == 0),
        _card("retries", f"{t['retries']:,}"),
    ]
    if ttft["count"]:
        cards.insert(5, _card("time to first token p99", f"{ttft['p99']:.1f} ms"))
    slo = result.get("slo")
    if slo:
        cards.append(_card("SLO", "passed" if slo["passed"] else "FAILED", slo["passed"]))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{lat[name]:.2f}</td><td>{ttft[name]:.2f}</td></tr>"
        for name in ("p50", "p90", "p99", "p99.9", "max"))
    timeline = "".join(
        f"<tr><td>{e['t']:.1f} s</td><td>{html.escape(e['action'])}</td><td>{html.escape(str(e['target']))}</td>"
        f"<td>{e['pid'] or ''}</td><td>{html.escape(e['detail'])}</td>"
        f"<td>{'' if e.get('recovery_s') is None else format(e['recovery_s'], '.2f') + ' s'}</td></tr>"
        for e in result["timeline"]) or '<tr><td colspan="6">no failures were injected</td></tr>'
    kinds = "".join(f"<tr><td>{k}</td><td>{c[k]:,}</td></tr>" for k in ("lost", "duplicated", "reordered", "stale"))
    examples = "".join(f"<li><code>{html.escape(x)}</code></li>" for x in c["examples"])
    slo_rows = "".join(
        f"<tr><td><code>{html.escape(ch['objective'])}</code></td><td>{ch['actual']:.4g}</td>"
        f"<td class=\"{'ok' if ch['passed'] else 'bad'}\">{'met' if ch['passed'] else 'missed'}</td></tr>"
        for ch in (slo or {}).get("checks", []))
    cfg = result["config"]
    tester = result["tester"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>statefleet load test — {t['turns']:,} turns, p99 {lat['p99']:.1f} ms</title><style>{_CSS}</style></head>
<body>
<h1>statefleet load test</h1>
<p class="sub">{html.escape(result['started_at'])} · {cfg['duration_s']:g} s · {cfg['model']} model,
level {cfg['level']:g} · {cfg['turns_per_conversation']} turns per conversation · stream ratio
{cfg['stream_ratio']:g} · targets {html.escape(', '.join(cfg['targets']))}</p>
<div class="cards">{''.join(cards)}</div>
<h2>Latency over time</h2><figure>{latency_plot(result)}</figure>
<h2>Throughput and errors</h2><figure>{throughput_plot(result)}</figure>
<h2>Latency distribution</h2><figure>{distribution_plot(result)}</figure>
<table><tr><th>percentile</th><th>latency (ms)</th><th>time to first token (ms)</th></tr>{rows}</table>
<h2>Injected failures and recovery</h2>
<table><tr><th>at</th><th>action</th><th>target</th><th>pid</th><th>what happened</th><th>recovered in</th></tr>
{timeline}</table>
<h2>Continuity</h2>
<p>Every user checked every reply, and the server's view of its conversation, against its own record.</p>
<table>{kinds}</table>{f'<ul>{examples}</ul>' if examples else ''}
<h2>Errors</h2><figure>{errors_plot(result)}</figure>
{f'<h2>Objectives</h2><table><tr><th>objective</th><th>actual</th><th></th></tr>{slo_rows}</table>' if slo else ''}
<h2>The tester</h2>
<p>{tester['processes']} process(es), CPU {', '.join(f'{x:.0f}%' for x in tester['cpu_percent'])} —
{html.escape(tester['note'])}.</p>
<details><summary>Configuration (JSON)</summary><pre>{html.escape(json.dumps(cfg, indent=2))}</pre></details>
</body></html>
"""


def write_report(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result), encoding="utf-8")
    return path
