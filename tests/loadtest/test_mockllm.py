"""The mock LLM speaks the OpenAI protocol (the official client reads it), and the example LLM agent streams
its tokens through statefleet to a load-tested client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from statefleet.testing import free_port

from ._support import Instance, run_loadtest

pytestmark = pytest.mark.timeout(120)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def start_mock(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "statefleet", "mock-llm", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("mock-llm did not start")


async def test_openai_client_streams_and_not_from_the_mock() -> None:
    proc, url = start_mock("--ttft", "100ms", "--tokens-per-s", "100", "--reply-tokens", "10")
    try:
        client = AsyncOpenAI(base_url=url + "/v1", api_key="mock", max_retries=0)
        started = time.monotonic()
        stream = await client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
        arrivals: list[float] = []
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)
                text += chunk.choices[0].delta.content
        assert len(arrivals) == 10 and text.endswith(".")
        # Lower bounds only: the mock never streams early, and a busy shared machine can only make it later
        # (its speed is the benchmarks' business). The first call also pays the SDK's own warm-up.
        assert arrivals[0] >= 0.1  # time to first token
        assert arrivals[-1] >= 0.1 + 0.09 - 0.005  # then 9 more at 100 tokens/s, paced from the request's start
        # The mock reports the time to first token it delivered itself: the baseline of load tests.
        async with httpx.AsyncClient() as http:
            health = (await http.get(url + "/healthz", timeout=5)).json()
        own = health["ttft_ms"]
        assert own["count"] == 1 and 100 <= own["p99"] <= arrivals[0] * 1000
        # On uvloop (uvicorn[standard] brings it): a plain asyncio loop costs the mock about twice the CPU, which a
        # load test sharing the machine with it would measure.
        assert health["loop"] == "uvloop.Loop"
        whole = await client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
        assert whole.choices[0].message.content == text
        await client.close()
    finally:
        proc.kill()
        proc.wait()


def test_mock_llm_rejects_bad_options() -> None:
    done = subprocess.run([sys.executable, "-m", "statefleet", "mock-llm", "--error-rate", "2"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--error-rate must be between 0 and 1" in done.stderr


def test_llm_agent_streams_through_statefleet(tmp_path: Path) -> None:
    mock, url = start_mock("--ttft", "100ms", "--tokens-per-s", "300", "--reply-tokens", "30")
    os.environ["OPENAI_BASE_URL"] = url + "/v1"
    instance = Instance("memory://", tmp_path, f"{EXAMPLES / 'llm_agent.py'}:agent")
    try:
        instance.wait_ready()
        code, result, output = run_loadtest(
            [instance.url, "--conversations", "20", "--turns", "3", "--think", "100ms", "--stream-ratio", "1",
             "--duration", "4s", "--slo", "errors=0%,continuity=100%"], tmp_path)
        assert code == 0, output
        ttft = result["ttft_ms"]
        assert result["totals"]["stream_turns"] == result["totals"]["turns"] > 50
        # The first token reaches the user about when the model sends it.
        assert 100 <= ttft["p50"] < 200, ttft
    finally:
        del os.environ["OPENAI_BASE_URL"]
        instance.stop()
        mock.kill()
        mock.wait()
