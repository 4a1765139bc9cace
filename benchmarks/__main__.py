"""Run the benchmarks: ``python -m benchmarks [engine|http|asgi|observability|overload|recovery|forwarding|soak|all]
[--quick]``.

``soak`` (the fault suite for 10 minutes; ``python -m benchmarks.soak`` takes more options) is not part of
``all``. ``engine --against REF`` measures the engine's throughput on this checkout against commit REF instead
(alternately, in the same run; ``benchmarks/against.py``). ``recovery [--conversations N]`` kills -9 an
instance holding N leases and times the two survivors' takeover (``benchmarks/recovery.py``, ~15 s; part of
``all``). ``forwarding`` times a turn sent to an instance of another version, which forwards it, against the
same turn sent directly (``benchmarks/forwarding.py``; part of ``all``). Results go to benchmarks/results/."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

from ._machine import machine

RESULTS = Path(__file__).with_name("results")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("which", nargs="?", default="all",
                        choices=["engine", "http", "asgi", "observability", "overload", "recovery", "failover",
                                 "forwarding", "soak", "all"])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke check, not for figures)")
    parser.add_argument("--against", metavar="REF",
                        help="engine only: measure this checkout's engine throughput against git commit REF")
    parser.add_argument("--conversations", type=int, default=None, metavar="N",
                        help="recovery only: leases the killed instance holds (default 10,000; 1,000 with --quick)")
    args = parser.parse_args()
    if args.against is not None and args.which != "engine":
        parser.error("--against goes with engine only")
    if args.conversations is not None and args.which != "recovery":
        parser.error("--conversations goes with recovery only")
    RESULTS.mkdir(exist_ok=True)
    quick = args.quick
    meta = {"quick": quick, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": __import__("os").cpu_count(), **machine()}
    if args.which == "engine" and args.against is not None:
        from . import against

        result = against.run(args.against, seconds=1.0 if quick else 5.0, rounds=2 if quick else 10,
                             warmup=0.5 if quick else 1.0)
        report(f"engine-against-{args.against.replace('/', '_')}" + ("-quick" if quick else ""), {**meta, **result})
    elif args.which in ("engine", "all"):
        from . import engine

        result = asyncio.run(engine.run(seconds=1.0 if args.quick else 3.0, rounds=1 if args.quick else 3,
                                        big=20_000 if args.quick else 1_000_000))
        report("engine" + ("-quick" if quick else ""), {**meta, **result})
    if args.which in ("http", "all"):
        from . import http

        report("http" + ("-quick" if quick else ""), {**meta, **http.run(quick=args.quick)})
    if args.which in ("asgi", "all"):
        from . import asgi_servers

        report("asgi_servers" + ("-quick" if quick else ""), {**meta, **asgi_servers.run(quick=args.quick)})
    if args.which in ("observability", "all"):
        from . import observability

        report("observability" + ("-quick" if quick else ""), {**meta, **observability.run(quick=args.quick)})
    if args.which in ("overload", "all"):
        from . import overload

        report("overload" + ("-quick" if quick else ""), {**meta, **overload.run(quick=args.quick)})
    if args.which in ("recovery", "all"):
        from . import recovery

        conversations = args.conversations or (1_000 if quick else 10_000)
        result = asyncio.run(recovery.run(conversations=conversations))
        report("recovery" + ("-quick" if quick else ""), {**meta, **result})
    if args.which in ("forwarding", "all"):
        from . import forwarding

        report("forwarding" + ("-quick" if quick else ""), {**meta, **forwarding.run(quick=quick)})
    if args.which == "failover":
        from . import failover

        report("failover" + ("-quick" if quick else ""), {**meta, **failover.run(quick=quick)})
    if args.which == "soak":
        from . import soak

        result = asyncio.run(soak.run(seconds=60.0 if quick else 600.0, seed=1, backends=["redis", "sqlite"]))
        report("soak" + ("-quick" if quick else ""), {**meta, **result})


def report(name: str, result: dict[str, object]) -> None:
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"== {name} ({path})")
    for key, value in result.items():
        print(f"  {key:40} {value}")


if __name__ == "__main__":
    main()
