"""PromQL helpers for the tests that check alerts, dashboards and autoscaler queries against the metrics."""

from __future__ import annotations

from typing import Any

import promql_parser


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (parsed with promql-parser)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        for child in ("expr", "lhs", "rhs", "param", "vector_selector"):
            value = getattr(node, child, None)
            if isinstance(value, promql_parser.Expr):
                visit(value)
        for arg in getattr(node, "args", None) or []:
            visit(arg)

    visit(promql_parser.parse(expr))
    return names
