"""Parsing of durations, rates and percentages as people write them on a command line."""

from __future__ import annotations

import re

from ..errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """``"250ms"`` → 0.25, ``"2s"`` / ``"2"`` → 2.0, ``"1.5m"`` → 90.0, ``"1h"`` → 3600.0 (seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"{what} {text!r} is not a duration; write it like 250ms, 2s, 1.5m or 1h")
    return float(match.group(1)) * _SCALE[match.group(2)]


def parse_number(text: str, what: str) -> float:
    """A plain non-negative number, with a message that names ``what`` when it is not one."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a number") from None
    if value < 0 or value != value or value == float("inf"):
        raise ConfigError(f"{what} {text!r} must be a finite number ≥ 0")
    return value
