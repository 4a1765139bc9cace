"""Garbage-collector settings for long-running statefleet processes (servers, the load tester, the mock LLM).

Measured with 5,000 concurrent streaming conversations on one instance (docs/performance.md): with CPython's
defaults, full collections over the large heap of live conversations paused the event loop for long enough
to push time-to-first-token p99 from ~150 ms to ~410 ms. Freezing what exists at startup (modules, the app)
keeps it out of every later collection, and a larger first threshold makes young collections rarer; cycles
are still collected. What is left is the young collection itself, whose pause grows with the objects of the
turns in flight (~25 ms with 300 streams in flight on the memory store): with collection switched off for a
measurement, that run's TTFT p99 fell from ~140 ms to ~114 ms.
"""

from __future__ import annotations

import gc

#: (young, middle, old) thresholds; CPython's defaults are (700, 10, 10).
THRESHOLDS = (50_000, 10, 1_000)


def tune_for_serving() -> None:
    """Freeze the objects alive now and raise the collection thresholds. Call once, after startup imports."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
