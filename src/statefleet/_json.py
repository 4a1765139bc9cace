"""Compact JSON for what statefleet itself writes (wire, store): orjson on the hot path, the standard library
for the few values orjson refuses (strings with lone surrogates), so anything a client sent still encodes.

Values from users (state, reply data, metadata) are validated with the standard library first, strictly
(no NaN), so both encoders see only plain JSON.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
_fallback = json.JSONEncoder(separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return _fallback(value).encode()


def dumps_str(value: Any) -> str:
    """Compact JSON as text."""
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _fallback(value)


def loads(data: bytes | str) -> Any:
    """Parse JSON written by :func:`dumps` (the standard library takes what orjson refuses)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
