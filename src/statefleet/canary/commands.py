"""``statefleet canary``: the routing weights (``set``), the state of a release (``status``), and ``run``.

Every command talks to the fleet's store (``--store`` / ``STATEFLEET_STORE``), as the instances do: it needs no
instance to be up.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from ..errors import ConfigError, StatefleetError
from ..routing import apply_weight_specs, set_weights
from ..store import open_store
from ..store.base import JSONObject, Store
from .cli import _actor, _store, run

#: Changes of the weights ``status`` shows by default.
LOG_SHOWN = 10


@click.group()
def canary() -> None:
    """Canary releases: routing weights for new conversations, their audit log, and automated analysis
    (docs/canary.md)."""


_STORE = click.option("--store", "store_url", envvar="STATEFLEET_STORE", default="sqlite:///.statefleet/state.db",
                      show_default=True, callback=_store, help="The fleet's state store URL (as given to serve).")


@canary.command("set")
@click.argument("specs", nargs=-1, required=True, metavar="VERSION=PERCENT...")
@click.option("--reason", default="", help="Why (kept in the audit log).")
@_STORE
def set_command(specs: tuple[str, ...], reason: str, store_url: str) -> None:
    """Set the share of new conversations each version gets, e.g. `canary set v2=10` (the other version gets 90;
    name every version when there are more than two). Conversations already started keep their version."""

    async def change(store: Store) -> int:
        current = await store.routing()
        try:
            weights = apply_weight_specs(current.weights, specs)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        routing = await set_weights(store, weights, actor=_actor("set"), reason=reason,
                                    expected_revision=current.revision)
        click.echo(f"routing weights, revision {routing.revision}: {_show(current.weights)} -> "
                   f"{_show(routing.weights)}")
        live = {str(info.get("version")) for info in await store.instances()}
        for version, weight in routing.weights.items():
            if weight > 0 and version not in live:
                click.echo(f"warning: no live instance serves {version}; its new conversations wait (503) until "
                           "one does", err=True)
        return 0

    _with_store(store_url, change)


@canary.command("status")
@click.option("--log", "log_entries", type=click.IntRange(0, 200), default=LOG_SHOWN, show_default=True,
              help="Changes of the weights to show, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@_STORE
def status_command(log_entries: int, as_json: bool, store_url: str) -> None:
    """The routing weights, the live instances and conversations of each version (a version at weight 0 drains
    as its conversations end), and the last changes of the weights."""

    async def show(store: Store) -> int:
        report = await release_status(store, log_entries)
        if as_json:
            click.echo(json.dumps(report, indent=2, sort_keys=True))
        else:
            click.echo(_text(report))
        return 0

    _with_store(store_url, show)


canary.add_command(run)


async def release_status(store: Store, log_entries: int = LOG_SHOWN) -> JSONObject:
    """What ``canary status`` shows, as JSON."""
    routing, instances, pinned, log = await asyncio.gather(
        store.routing(), store.instances(), store.pinned_conversations(), store.routing_log(log_entries))
    versions = sorted(set(routing.weights) | set(pinned) | {str(i.get("version")) for i in instances})
    backlog = await asyncio.gather(*[store.backlog(version) for version in versions])
    rows: list[JSONObject] = []
    for version, pending in zip(versions, backlog, strict=True):
        live = [i for i in instances if i.get("version") == version]
        weight = routing.weights.get(version)
        rows.append({
            "version": version,
            "weight": weight,
            "instances": len(live),
            "draining_instances": sum(1 for i in live if i.get("draining")),
            "conversations": pinned.get(version, 0),
            "backlog": pending,
            "state": _state(weight, pinned.get(version, 0), len(live)),
        })
    return {"revision": routing.revision, "weights": routing.weights, "versions": rows, "log": log}


def _state(weight: int | None, conversations: int, instances: int) -> str:
    """serving (gets new conversations), draining (weight 0, conversations left), drained, or no live instance."""
    if (weight or weight is None) and instances:
        return "serving"
    if weight == 0:
        return "draining" if conversations else "drained"
    return "no live instance" if conversations or weight else "idle"


def _text(report: JSONObject) -> str:
    lines = [f"routing weights (revision {report['revision']}): {_show(report['weights']) or 'none set'}"]
    lines.append(f"{'VERSION':<16}{'WEIGHT':>7}{'INSTANCES':>11}{'CONVERSATIONS':>15}{'BACKLOG':>9}  STATE")
    for row in report["versions"]:
        weight = "-" if row["weight"] is None else f"{row['weight']}%"
        lines.append(f"{row['version']:<16}{weight:>7}{row['instances']:>11}{row['conversations']:>15}"
                     f"{row['backlog']:>9}  {row['state']}")
    if report["log"]:
        lines.append("changes (newest first):")
        for entry in report["log"]:
            lines.append(f"  #{entry.get('revision')} {_when(entry.get('at'))} {entry.get('actor', '?')}: "
                         f"{_show(entry.get('old') or {}) or 'none'} -> {_show(entry.get('new') or {})}"
                         + (f"  ({entry['reason']})" if entry.get("reason") else ""))
    return "\n".join(lines)


def _when(at: Any) -> str:
    import datetime

    if not isinstance(at, int | float):
        return "?"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _show(weights: dict[str, int]) -> str:
    return " ".join(f"{version}={weight}" for version, weight in sorted(weights.items()))


def _with_store(store_url: str, action: Callable[[Store], Awaitable[int]]) -> None:
    async def main() -> int:
        store = await open_store(store_url)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        code = asyncio.run(main())
    except ConfigError as exc:
        click.echo(f"statefleet: {exc}", err=True)
        sys.exit(2)
    except StatefleetError as exc:
        click.echo(f"statefleet: {exc}", err=True)
        sys.exit(3)
    sys.exit(code)
