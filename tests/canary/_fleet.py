"""What the canary-run tests drive a real fleet with: a load that keeps starting new conversations on random
instances (so the routing weights pick each one's version), and the ``statefleet canary`` commands as child
processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

#: The agent's error when its process fails a turn on purpose (tests/canary/agents.py), as the API quotes it.
_FAILED_ON_PURPOSE = re.compile(r"RuntimeError\('(\S+) fails every \d+th turn'\)")
_REPLY = re.compile(r"^(\S+) answers (\S+)$")


@dataclass(frozen=True)
class Answer:
    """One message of the load and what came back."""

    #: Seconds on the event loop's clock when the message was sent.
    sent_at: float
    #: The instance it was sent to.
    url: str
    #: HTTP status: 200, or 500 when the agent failed the turn on purpose.
    status: int
    #: The version whose code ran the turn: named by the reply text, or by the error the handler raised.
    ran_by: str
    #: The version the answer says the conversation is pinned to (``version`` of a 200; None for an error).
    pinned: str | None


@dataclass
class NewConversationLoad:
    """``workers`` loops, each starting conversation after conversation (1 or 2 messages, each to an instance
    picked at random) until ``stop()``; every answer is kept per conversation, anything unexpected in
    ``unexpected`` (the test fails on it)."""

    urls: Sequence[str]
    prefix: str
    workers: int = 24
    seed: int = 14
    conversations: dict[str, list[Answer]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopping = asyncio.Event()
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, timeout: float = 60.0) -> None:
        """Let every worker finish the conversation it is in, then return (cancel them after ``timeout``)."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            raise

    async def wait_for_answers(self, count: int, timeout: float = 30.0) -> None:
        """Return once ``count`` messages were answered (the load is flowing)."""
        async with asyncio.timeout(timeout):
            while sum(len(answers) for answers in self.conversations.values()) < count:
                if self._task is not None and self._task.done():
                    self._task.result()  # a worker crashed: say why
                    raise AssertionError("the load stopped before it was asked to")
                await asyncio.sleep(0.05)

    def answers(self) -> list[Answer]:
        return [answer for answers in self.conversations.values() for answer in answers]

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.workers * 2, max_keepalive_connections=self.workers * 2)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, random.Random(self.seed * 1000 + n))
                                   for n in range(self.workers)))

    async def _worker(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            conversation = f"{self.prefix}-{next(self._ids)}"
            answers = self.conversations.setdefault(conversation, [])
            for n in range(rng.choice((1, 2))):
                url = rng.choice(self.urls)
                sent_at = loop.time()
                try:
                    response = await client.post(f"{url}/v1/conversations/{conversation}/messages",
                                                 json={"text": f"m{n}"},
                                                 headers={"idempotency-key": f"{conversation}-{n}"})
                except httpx.HTTPError as exc:
                    self.unexpected.append(f"{conversation} message {n} to {url}: {exc!r}")
                    break
                answer = self._answer(conversation, n, url, sent_at, response)
                if answer is None:
                    break
                answers.append(answer)

    def _answer(self, conversation: str, n: int, url: str, sent_at: float,
                response: httpx.Response) -> Answer | None:
        body: Any = response.json() if response.headers.get("content-type") == "application/json" else None
        if response.status_code == 200 and isinstance(body, dict):
            match = _REPLY.match(str(body.get("reply", {}).get("text")))
            header = response.headers.get("x-statefleet-version")
            if match is not None and match.group(2) == f"m{n}" and header == body.get("version"):
                return Answer(sent_at, url, 200, match.group(1), body["version"])
        elif response.status_code == 500 and isinstance(body, dict):
            match = _FAILED_ON_PURPOSE.search(str(body.get("error", {}).get("message")))
            if match is not None and body["error"].get("code") == "turn_failed":
                return Answer(sent_at, url, 500, match.group(1), None)
        self.unexpected.append(f"{conversation} message {n} to {url}: HTTP {response.status_code} "
                               f"{dict(response.headers)} {response.text[:500]}")
        return None


def statefleet(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m statefleet *args``, its output captured; ``TimeoutExpired`` after ``timeout`` seconds."""
    return subprocess.run([sys.executable, "-m", "statefleet", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@dataclass(frozen=True)
class Finished:
    """A child process that exited: its code and output."""

    returncode: int
    stdout: str
    stderr: str


async def run_statefleet(*args: str, timeout: float) -> Finished:
    """``python -m statefleet *args`` without blocking the event loop (the load keeps running); killed and
    ``TimeoutError`` if it has not exited within ``timeout`` seconds."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "statefleet", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Finished(proc.returncode, stdout.decode(), stderr.decode())


def release_status(store_url: str) -> dict[str, Any]:
    """``statefleet canary status --json``: the weights, the versions and the audit log (newest first)."""
    shown = statefleet("canary", "status", "--json", "--log", "20", "--store", store_url)
    assert shown.returncode == 0, shown.stderr
    status: dict[str, Any] = json.loads(shown.stdout)
    return status
