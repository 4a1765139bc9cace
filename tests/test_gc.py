"""The load tester's garbage-collection policy: what is alive is frozen; frozen cycles wait for a full
collection, which a burst of errors brings forward."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from statefleet._gc import FrozenHeap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_frozen_cycles_wait_for_the_full_collection_that_errors_bring_forward() -> None:
    heap = FrozenHeap(full_every=3600, full_after_errors=10)
    # Given a cycle alive at a tick, which dies afterwards
    node = Node()
    dead = weakref.ref(node)
    heap.tick(errors=0)
    assert gc.get_freeze_count() > 0
    del node
    # When the collector runs, the frozen cycle is not among what it scans
    gc.collect()
    assert dead() is not None and heap.full_collections == 0
    # And fewer errors than the budget change nothing
    heap.tick(errors=9)
    assert dead() is not None
    # Then once the errors reach the budget, a full collection frees it
    heap.tick(errors=10)
    assert dead() is None and heap.full_collections == 1


def test_a_full_collection_comes_when_it_is_due_even_without_errors() -> None:
    heap = FrozenHeap(full_every=0.0, full_after_errors=10**9)
    node = Node()
    dead = weakref.ref(node)
    heap.tick(errors=0)  # due at once: collects (the node is alive), then freezes it
    del node
    assert dead() is not None
    heap.tick(errors=0)
    assert dead() is None and heap.full_collections == 2


def test_a_full_collection_comes_when_the_process_grew_enough() -> None:
    heap = FrozenHeap(full_every=3600, full_after_growth=8 * 2**20, full_after_errors=10**9)
    node = Node()
    dead = weakref.ref(node)
    heap.tick()
    del node
    assert dead() is not None and heap.full_collections == 0
    grown = b"x" * (16 * 2**20)  # 16 MiB the process now holds
    heap.tick()
    assert dead() is None and heap.full_collections == 1 and len(grown) == 16 * 2**20
