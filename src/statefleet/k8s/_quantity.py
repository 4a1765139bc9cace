"""Kubernetes resource quantities (``500m``, ``1.5``, ``512Mi``, ``10G``): checked and compared as numbers."""

from __future__ import annotations

import re
from decimal import Decimal

_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> Decimal:
    """The quantity's value (``"500m"`` → 0.5, ``"1Ki"`` → 1024); ValueError naming the accepted forms."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 10Gi)")
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))


def check_cpu(text: str) -> str:
    """A positive CPU quantity (cores, or millicores with ``m``)."""
    if parse_quantity(text) <= 0:
        raise ValueError(f"{text!r} must be more than 0 CPU")
    return text


def check_bytes(text: str) -> str:
    """A positive whole number of bytes; ``m`` (milli) is refused, since ``512m`` of memory is half a byte."""
    value = parse_quantity(text)
    if text.endswith("m"):
        raise ValueError(f"{text!r} is {value} bytes (m is milli); did you mean {text[:-1]}Mi?")
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1 byte")
    return text
