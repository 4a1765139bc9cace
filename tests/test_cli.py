"""The ``statefleet`` command: bad configuration exits 2 with a clear message, startup failure exits 3."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SUPPORT = "examples/support_agent.py:agent"


def statefleet(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statefleet", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "nope.py:agent"], "does not exist"),
        (["serve", "examples/support_agent.py"], "module:attribute"),
        (["serve", "examples/support_agent.py:ORDERS"], "not a statefleet Agent"),
        (["serve", "no_such_module:agent"], "cannot import module"),
        (["serve", SUPPORT, "--store", "bogus://x"], "unknown store scheme 'bogus'"),
        (["serve", SUPPORT, "--store", "no-scheme"], "has no scheme"),
        (["serve", SUPPORT, "--port", "70000"], "70000"),
        (["serve", SUPPORT, "--workers", "0"], "0"),
        (["serve", SUPPORT, "--log-level", "loud"], "loud"),
        (["serve", SUPPORT, "--max-in-flight", "0"], "0 would refuse every message"),
        (["serve", SUPPORT, "--max-in-flight", "abc"], "'abc' is not a valid integer"),
        (["serve", SUPPORT, "--handler-threads", "0"], "--handler-threads"),
    ],
)
def test_bad_configuration_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    done = statefleet(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_unreachable_store_exits_3() -> None:
    done = statefleet("serve", SUPPORT, "--store", "redis://127.0.0.1:1/0", "--port", "0")
    assert done.returncode == 3, done.stderr
    assert "cannot reach the Redis store" in done.stderr


@pytest.mark.parametrize(("value", "message"), [("0", "0 would refuse every message"), ("abc", "not a valid integer")])
def test_a_bad_in_flight_limit_from_the_environment_exits_2_naming_it(value: str, message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "statefleet", "serve", SUPPORT], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "STATEFLEET_MAX_IN_FLIGHT": value})
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "max-in-flight" in done.stderr


def test_environment_variables_configure_serve() -> None:
    done = subprocess.run([sys.executable, "-m", "statefleet", "serve", SUPPORT], capture_output=True, text=True,
                          timeout=60, check=False, env={**__import__("os").environ, "STATEFLEET_STORE": "bogus://"})
    assert done.returncode == 2 and "bogus" in done.stderr
