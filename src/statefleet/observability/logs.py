"""Logging setup for the CLI: one JSON object per line, or human-readable lines on a terminal.

Library code only gets loggers (``logging.getLogger(__name__)``); this module is called by the CLI alone.
Every line logged while a turn runs (by statefleet or by the agent's handler) carries the turn's
``conversation_id``, ``tenant``, ``message_id``, ``turn``, ``attempt``, ``version`` and ``instance``, and
with tracing on the ``trace_id`` (``TurnContextFilter``). Fields passed with ``extra={...}`` become keys of
the JSON object too, and win over the turn's.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .context import current_turn

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
#: Fields the human-readable format appends, in this order, when a record has them.
_CONTEXT = ("conversation_id", "message_id", "turn", "attempt", "version", "instance", "previous_owner",
            "trace_id")


class TurnContextFilter(logging.Filter):
    """Adds the running turn's ids (and the current trace id, with tracing on) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = current_turn.get()
        fields = vars(record)
        if scope is not None:
            turn = scope.turn
            for name, value in (("conversation_id", turn.conversation_id), ("tenant", turn.tenant),
                                ("message_id", turn.message_id), ("turn", turn.turn), ("attempt", turn.attempt),
                                ("version", turn.version), ("instance", scope.instance)):
                fields.setdefault(name, value)
        if "trace_id" not in fields:
            trace_id = _current_trace_id()
            if trace_id is not None:
                fields["trace_id"] = trace_id
        return True


def _current_trace_id() -> str | None:
    otel = sys.modules.get("opentelemetry.trace")  # tracing off: never imported, nothing to look up
    if otel is None:
        return None
    context = otel.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TerminalFormatter(logging.Formatter):
    """``time level logger: message [conversation_id=… turn=…]`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = vars(record)
        context = " ".join(f"{name}={fields[name]}" for name in _CONTEXT if fields.get(name) is not None)
        if not context:
            return line
        head, newline, tail = line.partition("\n")  # keep a traceback below the context
        return f"{head} [{context}]{newline}{tail}"


def configure_logging(level: str = "info", *, json_lines: bool | None = None) -> None:
    """Send the process's logs to stderr: JSON lines unless stderr is a terminal. The CLI calls it; the library
    never does."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if json_lines else TerminalFormatter())
    handler.addFilter(TurnContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
