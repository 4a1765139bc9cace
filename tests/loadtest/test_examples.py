"""The Locust file compiles (Locust itself is an optional extra the suite does not install)."""

from __future__ import annotations

import py_compile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_locustfile_compiles() -> None:
    py_compile.compile(str(EXAMPLES / "locustfile.py"), doraise=True)
