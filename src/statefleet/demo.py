"""``statefleet demo``: the support agent on two instances sharing the embedded SQLite store.

Scripted users talk to the agent with their messages alternating between the two instances; each exchange
shows which instance answered, and that the second knew what the first was told. Then one instance is killed
(SIGKILL) in the middle of a turn, and the conversation carries on on the other one: the message it had
accepted is taken over and answered, exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from .errors import ConfigError
from .testing import ServeProcess

SCRIPTS: list[tuple[str, list[str]]] = [
    ("alice", ["Hi, my name is Alice", "What's the status of order 12345?", "Do you remember my name?",
               "And where is it now?", "Thanks!"]),
    ("bob", ["Hello, I'm Bob", "Where is my order #23456?", "What is my name?", "Status please", "Thank you"]),
    ("carol", ["This is Carol", "Order 34567 status?", "Do you know my name?", "where is my order?", "thanks"]),
    ("dave", ["I am Dave", "Status of 45678?", "my name?", "order status again", "Thanks a lot"]),
]
NAMES = {"alice": "Alice", "bob": "Bob", "carol": "Carol", "dave": "Dave"}


def example_agent_path() -> Path:
    here = Path(__file__).resolve()
    for root in (Path.cwd(), *here.parents):
        candidate = root / "examples" / "support_agent.py"
        if candidate.is_file():
            return candidate
    raise ConfigError("examples/support_agent.py not found; run the demo from the statefleet repository")


class Instance(ServeProcess):
    """One ``statefleet serve`` process of the support agent, labelled A or B."""

    def __init__(self, label: str, agent: Path, store: str, logdir: Path, port: int | None = None) -> None:
        super().__init__(f"{agent}:agent", store, "--lease-ttl", "2", "--log-level", "warning",
                         log=logdir / f"instance-{label}.log", port=port)
        self.label = label

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            super().wait_ready(timeout)
        except RuntimeError:
            raise ConfigError(f"instance {self.label} did not start; see its log {self.log_path}") from None


def say(client: httpx.Client, instance: Instance, user: str, text: str, key: str | None = None) -> dict[str, object]:
    headers = {"Idempotency-Key": key} if key else {}
    response = client.post(f"{instance.url}/v1/conversations/{user}/messages", json={"text": text},
                           headers=headers, timeout=30)
    response.raise_for_status()
    return dict(response.json())


#: Seconds of load in the demo's load phase, and when instance A is killed in it.
LOAD_SECONDS = 20.0
KILL_AT = 7.0


def load_phase(a: Instance, b: Instance, workdir: Path) -> list[str]:
    """~20 s of conversation-aware load on both instances, A killed (SIGKILL) and restarted mid-run."""
    from .loadtest import processes
    from .loadtest.chaos import ChaosSpec
    from .loadtest.report import write_report
    from .loadtest.result import build_result, continuity_percent
    from .loadtest.runner import LoadTest, RunOptions
    from .loadtest.workload import Profile, Think, Workload

    print(f"\nLoad: 30 users, 8-turn conversations over both instances for {LOAD_SECONDS:.0f} s; "
          f"instance A is killed (SIGKILL) at {KILL_AT:.0f} s and started again…")
    workload = Workload(targets=(a.url, b.url), duration=LOAD_SECONDS, turns=8, think=Think(0.2),
                        profile=Profile.constant(30), stream_ratio=0.3, run_id=f"demo{uuid.uuid4().hex[:6]}")
    chaos = (ChaosSpec.parse(f"kill:port={a.port}@after={KILL_AT}s,restart=0.2s,times=1"),)
    try:
        outcome = LoadTest(workload, RunOptions(chaos=chaos, quiet=True, logdir=workdir, grace=10)).run()
    finally:
        # The chaos restarted A as a child of this process; stop it with the others.
        for pid in processes.find_listening(a.port):
            if pid != a.proc.pid:
                os.kill(pid, signal.SIGTERM)
    result = build_result(workload, outcome, [c.text for c in chaos])
    report = write_report(result, Path(tempfile.gettempdir()) / f"statefleet-demo-{workload.run_id}.html")
    totals, latency = result["totals"], result["latency_ms"]
    continuity = continuity_percent(result)
    recoveries = [e["recovery_s"] for e in result["timeline"] if e["ok"]]
    print(f"  {totals['turns']:,} turns, {totals['turns_per_s']:,.0f} turns/s, p99 {latency['p99']:.0f} ms, "
          f"continuity {continuity:.2f}% (lost {totals['lost']}, duplicated {totals['duplicated']}, "
          f"reordered {totals['reordered']}), failed turns {totals['failed_turns']}, retries {totals['retries']}")
    for event in result["timeline"]:
        recovery = event["recovery_s"]
        print(f"  t={event['t']:.1f} s {event['action']} pid {event['pid']}: "
              + (f"recovered in {recovery:.1f} s" if recovery is not None else f"not recovered ({event['detail']})"))
    print(f"  report: {report}")
    problems = []
    if continuity < 100:
        problems.append(f"load phase: continuity {continuity:.2f}%: {result['continuity']['examples'][:3]}")
    if totals["failed_turns"]:
        problems.append(f"load phase: {totals['failed_turns']} turns failed: {result['errors_by_kind']}")
    if not recoveries or None in recoveries:
        problems.append(f"load phase: the kill was not injected or not recovered from: {result['timeline']}")
    return problems


def run_demo(users: int = 3, keep: bool = False) -> int:
    agent = example_agent_path()
    workdir = Path(tempfile.mkdtemp(prefix="statefleet-demo-"))
    store = f"sqlite:///{workdir / 'state.db'}"
    print(f"statefleet demo — support agent ({agent.name}), store {store}\n")
    a = Instance("A", agent, store, workdir)
    b = Instance("B", agent, store, workdir)
    problems: list[str] = []
    run = uuid.uuid4().hex[:6]
    try:
        a.wait_ready()
        b.wait_ready()
        print(f"instance A on {a.url}, instance B on {b.url}\n")
        scripts = SCRIPTS[: max(1, min(users, len(SCRIPTS)))]
        with httpx.Client() as client:
            rounds = len(scripts[0][1])
            for r in range(rounds - 1):
                for u, (user, lines) in enumerate(scripts):
                    instance = (a, b)[(r + u) % 2]
                    result = say(client, instance, f"{user}-{run}", lines[r])
                    reply = result["reply"]["text"]  # type: ignore[index]
                    print(f"  [{instance.label}] {user:>5}: {lines[r]}")
                    print(f"  [{instance.label}] agent: {reply}   (turn {result['turn']})")
                    if r >= 2 and NAMES[user] not in str(reply):
                        problems.append(f"{user}: instance {instance.label} did not know the name: {reply!r}")
                print()
            # Kill A in the middle of a turn; B takes the conversation over.
            user, lines = scripts[0]
            conv = f"{user}-{run}"
            key = f"demo-{run}-last"
            print(f"Killing instance A (SIGKILL) while it answers {user}'s last message…")
            with httpx.Client() as victim:
                try:
                    victim.post(f"{a.url}/v1/conversations/{conv}/messages?wait=false", json={"text": lines[-1]},
                                headers={"Idempotency-Key": key}, timeout=5)
                except httpx.HTTPError as exc:
                    problems.append(f"instance A did not accept the message: {exc}")
            a.stop(signal.SIGKILL)
            started = time.monotonic()
            result = say(client, b, conv, lines[-1], key=key)  # same key: B answers the accepted message
            waited = time.monotonic() - started
            how = "A's lease expired and B took the accepted message over" if waited > 0.5 else "A had finished it"
            print(f"  [B] agent: {result['reply']['text']}   (turn {result['turn']}, "  # type: ignore[index]
                  f"answered {waited:.1f} s after the kill: {how})")
            final = client.get(f"{b.url}/v1/conversations/{conv}", timeout=10).json()
            print(f"\n{user}'s conversation on B: {final['turns']} turns, state {final['state']}")
            if final["turns"] != rounds:
                problems.append(f"{user} has {final['turns']} turns, expected {rounds}")
        # A comes back (same port), then both carry load while A is killed once more mid-run.
        a = Instance("A", agent, store, workdir, port=a.port)
        a.wait_ready()
        problems += load_phase(a, b, workdir)
    finally:
        a.stop()
        b.stop()
        if keep:
            print(f"\nstate and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if problems:
        print("\nPROBLEMS:\n  " + "\n  ".join(problems))
        return 1
    print("\nEvery instance knew what the other was told, and nothing was lost when A died.")
    return 0
